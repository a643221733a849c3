"""Turn a user's checkpoint URI into a store and an optional version/alias reference.

Accepted forms:
    wandb://entity/project/name[:alias]     W&B artifact collection
    entity/project/name:alias               the seed's bare form (--wandb_checkpoint_artifact)
    gs://bucket/prefix[:alias]  s3://bucket/prefix[:alias]
    /local/store[:alias]  file:///local/store[:alias]
"""

from __future__ import annotations

import re
from pathlib import Path

from dylora_moe.checkpoint.stores.base import CheckpointStore
from dylora_moe.errors import UserError

_NAME = r"[A-Za-z0-9_.\-]+"
WANDB_BARE_RE = re.compile(rf"^({_NAME})/({_NAME})/({_NAME}):({_NAME})$")
WANDB_URI_RE = re.compile(rf"^wandb://({_NAME})/({_NAME})/({_NAME})(?::({_NAME}))?/?$")
_REF_RE = re.compile(rf"^(.*[^:/]):({_NAME})$")
WANDB_FORM = "entity/project/name:version (for example user/project/best-dylora-model-full:v0 or :latest)"


def is_wandb_uri(uri: str) -> bool:
    """True for wandb:// URIs and the bare entity/project/name:alias form that is not an existing path."""
    if uri.startswith("wandb://"):
        return True
    return bool(WANDB_BARE_RE.match(uri)) and not Path(uri).exists()


def parse_wandb_uri(uri: str) -> tuple[str, str, str, str | None]:
    """(entity, project, name, alias-or-None); a malformed path is a UserError showing the expected form."""
    match = WANDB_URI_RE.match(uri) or WANDB_BARE_RE.match(uri)
    if not match:
        raise UserError(f"malformed W&B artifact path {uri!r}: expected {WANDB_FORM}")
    entity, project, name, alias = match.groups()
    return entity, project, name, alias


def split_ref(uri: str) -> tuple[str, str | None]:
    """'gs://b/p:best' → ('gs://b/p', 'best'); only the last path segment may carry ':ref'."""
    match = _REF_RE.match(uri)
    if not match or "/" in match.group(2):
        return uri, None
    base = match.group(1)
    if re.fullmatch(r"[A-Za-z0-9+.\-]+", base):  # 'gs' of 'gs:bucket' or a drive letter: not a ref
        return uri, None
    if Path(uri).exists():  # a real local path that happens to contain ':'
        return uri, None
    return base, match.group(2)


def open_store(uri: str, storage_options: dict | None = None) -> tuple[CheckpointStore, str | None]:
    """(store, ref) for any supported URI; ref None means 'latest'."""
    uri = uri.strip()
    if not uri:
        raise UserError("empty checkpoint store URI; expected a path, gs://, s3:// or wandb:// URI")
    if is_wandb_uri(uri):
        from dylora_moe.checkpoint.stores.wandb_store import WandbStore

        entity, project, name, alias = parse_wandb_uri(uri)
        return WandbStore(entity, project, name), alias
    base, ref = split_ref(uri)
    scheme = base.split("://", 1)[0] if "://" in base else "file"
    if scheme not in ("file", "gs", "gcs", "s3", "memory"):
        raise UserError(
            f"unsupported checkpoint store URI {uri!r}: expected a local path, file://, gs://, s3:// or "
            f"wandb://{WANDB_FORM}"
        )
    from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore

    try:
        return FsspecStore(base, storage_options), ref
    except ImportError as exc:
        extra = {"gs": "gcs", "gcs": "gcs", "s3": "s3"}.get(scheme, "all")
        raise UserError(f"{scheme}:// stores need an extra package: pip install 'dylora-moe[{extra}]' ({exc})") from exc


def local_store_path(uri: str) -> Path | None:
    """The directory of a local store URI (plain path or file://), None for remote and W&B stores."""
    uri = uri.strip()
    if is_wandb_uri(uri):
        return None
    base, _ref = split_ref(uri)
    if base.startswith("file://"):
        return Path(base[len("file://"):])
    return None if "://" in base else Path(base)


def check_local_store(uri: str, flag: str, must_exist: bool) -> None:
    """A local store that is a regular file (or, to read from, missing) fails now, not after upload retries."""
    path = local_store_path(uri)
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {uri} is a file, not a checkpoint store directory; give a directory "
                        "(new or holding index.json) or a gs://, s3://, wandb:// URI")
    if must_exist and not path.exists():
        raise UserError(f"{flag} {uri} does not exist; give an existing store directory or a gs://, s3://, "
                        "wandb:// URI")
