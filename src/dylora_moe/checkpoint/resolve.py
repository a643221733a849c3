"""Any path or store URI → one local, verified checkpoint directory.

Why one function: `--resume_from_checkpoint`, `--wandb_checkpoint_artifact` (or WANDB_CHECKPOINT_ARTIFACT),
`eval --model`, `generate --model` and `report` accept the same URIs, and nothing may load a checkpoint that
was not verified against its manifest. *Which* checkpoint a run continues from is decided in
`training/resume.py`; this module only fetches and verifies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dylora_moe.checkpoint.manifest import (
    MANIFEST_NAME,
    CheckpointError,
    find_latest_checkpoint,
    list_checkpoints,
    verify_named_checkpoint,
)
from dylora_moe.checkpoint.stores.fsspec_store import INDEX_NAME
from dylora_moe.checkpoint.stores.uri import is_wandb_uri, open_store, split_ref
from dylora_moe.errors import UserError


def fetch_checkpoint(
    uri_or_path: str | Path,
    log: Callable[[str], object] = print,
    dest: str | Path | None = None,
    storage_options: dict | None = None,
) -> Path:
    """Return a verified local checkpoint dir for a checkpoint dir, an output dir or any store URI.

    - a checkpoint directory (has manifest.json): verified in place (by its manifest alone when it lacks the
      COMPLETE marker, as a download by `wandb artifact get` does);
    - a training output directory: its newest complete checkpoint that verifies;
    - a store (local store dir, file://, gs://, s3://, wandb://, entity/project/name:alias):
      downloaded (cached) and verified.
    """
    text = str(uri_or_path).strip()
    if is_wandb_uri(text):
        from dylora_moe.checkpoint.stores.wandb_store import check_wandb_download_preconditions

        check_wandb_download_preconditions(text)
    local = Path(text[len("file://"):] if text.startswith("file://") else text)
    if "://" not in text or text.startswith("file://"):
        if local.is_dir() and (local / MANIFEST_NAME).is_file():
            verify_named_checkpoint(local, log=log)
            return local
        if local.is_dir() and list_checkpoints(local) and not (local / INDEX_NAME).exists():
            found = find_latest_checkpoint(local, log=log)
            if found is None:
                raise CheckpointError(
                    f"no complete, verified checkpoint in {local}; every checkpoint-* there is partial or corrupt"
                )
            return found
        base, _ref = split_ref(text)
        base_path = Path(base[len("file://"):] if base.startswith("file://") else base)
        if not is_wandb_uri(text) and not (base_path / INDEX_NAME).is_file():
            raise CheckpointError(
                f"{text} is not a checkpoint, an output directory with checkpoint-* dirs, or a checkpoint store "
                f"(no {MANIFEST_NAME} or {INDEX_NAME}); check the path"
            )
    store, ref = open_store(text, storage_options)
    return store.download(ref, dest, log=log)


def newest_in_store(uri: str, run_name: str | None, log: Callable[[str], object] = print) -> tuple[int, Path, str] | None:
    """(step, verified local dir, label) of the newest version of `run_name` in the store that verifies.

    A store that cannot be listed, or versions that fail verification, are said and skipped: `auto` then
    falls back to the one before, or to the local output directory.
    """
    try:
        store, _ = open_store(uri)
        versions = sorted(store.list_versions(), key=lambda v: v.index, reverse=True)
    except (CheckpointError, UserError) as exc:
        log(f"[resume] auto: cannot list {uri} ({exc}); looking only at the local output directory")
        return None
    for info in versions:
        if run_name and info.metadata.get("run_name") not in (None, run_name):
            continue
        try:
            path = store.download(info.version, log=log)
        except (CheckpointError, UserError) as exc:
            log(f"[resume] auto: {uri}:{info.version} failed verification ({exc}); falling back to the one before")
            continue
        step = info.metadata.get("global_step")
        known = isinstance(step, int) and not isinstance(step, bool)  # a store's metadata is untrusted
        return (step if known else -1), path, f"{uri}:{info.version}"
    return None
