"""Checkpoint store backed by Weights & Biases artifacts.

Why a backend object: everything that talks to the W&B server goes through `WandbBackend` (log an
artifact, list a collection's versions, download one); `wandb_sdk.SdkBackend` is the real SDK, and
fast unit tests may install a fake at `BACKEND`. Every failure of a backend call becomes one line that
names the artifact (the SDK raises CommError, ValueError, WaitTimeoutError, HTTP errors, …).
The API key is read only by the SDK; nothing here prints, logs or stores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from dylora_moe.checkpoint.json_safe import json_safe
from dylora_moe.checkpoint.manifest import MANIFEST_NAME, CheckpointError, publish_files, verify_checkpoint
from dylora_moe.checkpoint.names import safe_name
from dylora_moe.checkpoint.stores.base import (
    CheckpointStore,
    VersionInfo,
    check_aliases,
    checked_versions,
    checkpoint_size,
    describe_versions,
    manifest_digest,
)
from dylora_moe.checkpoint.stores.wandb_auth import (  # noqa: F401 - re-exported for callers
    check_wandb_download_preconditions,
    wandb_api_key,
    wandb_has_credentials,
    wandb_is_offline,
    wandb_mode,
)
from dylora_moe.checkpoint.stores.wandb_sdk import ARTIFACT_TYPE, OFFLINE_VERSION, CollectionNotFound, SdkBackend  # noqa: F401
from dylora_moe.errors import UserError


class WandbBackend(Protocol):
    """The narrow seam to the W&B server."""

    def log_checkpoint(self, path: str, local_dir: Path, files: list[str], aliases: list[str], metadata: dict) -> str:
        """Log `files` (paths relative to local_dir, nothing else) as a version of artifact `path`
        (entity/project/name); return its version label."""

    def list_versions(self, path: str) -> list[VersionInfo]:
        """Versions of collection `path`, oldest first; raise CollectionNotFound when it does not exist."""

    def download(self, path: str, version: str, dest: Path) -> None:
        """Write the files of `path:version` into dest."""


BACKEND: WandbBackend | None = None  # process-wide override (fast unit tests install a fake here)


class WandbStore(CheckpointStore):
    """W&B artifact collection entity/project/name as a checkpoint store."""

    def __init__(self, entity: str, project: str, name: str, backend: WandbBackend | None = None):
        self.entity, self.project, self.name = entity, project, name
        self.path = f"{entity}/{project}/{name}"
        self.uri = f"wandb://{self.path}"
        for part, what in ((entity, "W&B entity"), (project, "W&B project"), (name, "W&B artifact name")):
            safe_name(part, what, self.uri)
        self.backend = backend or BACKEND or SdkBackend()

    def publish(self, local_dir, aliases=(), metadata=None) -> VersionInfo:
        local_dir = Path(local_dir)
        manifest = verify_checkpoint(local_dir)
        files = publish_files(local_dir, manifest)  # by name: never a file outside the manifest, never a link
        check_aliases(aliases, f"cannot publish to {self.uri}")
        metadata = json_safe(dict(manifest["metadata"] if metadata is None else metadata))
        digest = manifest_digest(local_dir)
        metadata["manifest_sha256"] = digest  # lets a download be matched to its cached copy
        version = self._call(
            lambda: self.backend.log_checkpoint(self.path, local_dir, files, list(aliases), metadata), "upload"
        )
        return VersionInfo(
            version=version,
            aliases=list(dict.fromkeys(["latest", *aliases])),  # the callback passes `latest` too
            metadata=metadata,
            size=checkpoint_size(local_dir),
            digest=digest,
        )

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            self._call(close, "finish the upload run of")

    def list_versions(self) -> list[VersionInfo]:
        """All versions, oldest first; [] when the collection does not exist yet (nothing was uploaded)."""
        if wandb_is_offline():
            raise UserError(
                f"cannot list W&B artifact {self.path}: needs online mode but WANDB_MODE="
                f"{wandb_mode()}; unset WANDB_MODE"
            )
        try:
            versions = self._call(lambda: self.backend.list_versions(self.path), "list")
        except CollectionNotFound:
            return []
        return checked_versions(versions, self.uri)

    def resolve(self, ref: str | None = None) -> VersionInfo:
        """A named version or alias in one query where the backend can (`:latest` of a long collection needs no
        listing); otherwise, or when that finds nothing, the listing, which also names what exists."""
        one = getattr(self.backend, "version_info", None)
        if ref is not None and one is not None and not wandb_is_offline():
            info = one(self.path, ref)
            if info is not None and (info.version == ref or ref in info.aliases):
                return checked_versions([info], self.uri)[0]
        versions = self.list_versions()
        if not versions:
            raise CheckpointError(
                f"Failed to download W&B artifact {self.path}:{ref or 'latest'}: artifact {self.path} not found "
                f"(no versions of type {ARTIFACT_TYPE}); check entity, project and name"
            )
        try:
            return self.pick(versions, ref)
        except CheckpointError:
            raise CheckpointError(
                f"Failed to download W&B artifact {self.path}:{ref}: version or alias {ref!r} not found; "
                f"existing versions: {describe_versions(versions)}"
            ) from None

    def download(self, ref=None, dest=None, log=print) -> Path:
        """Download and verify (base class; a version in the cache is not even resolved), then record the version
        as an input of the active W&B run."""
        path, version = self.cached_version(ref, dest, log), ref
        if path is None:
            info = self.resolve(ref)
            path, version = self.download_version(info, dest, log=log), info.version
        record_use = getattr(self.backend, "record_use", None)
        if record_use is not None:
            try:
                record_use(self.path, version)
            except Exception as exc:  # noqa: BLE001 - lineage is informative; the resume itself succeeded
                log(f"could not record {self.uri}:{version} as an input of the W&B run: {_first_line(exc)}")
        return path

    def _fetch(self, info: VersionInfo, dest: Path) -> None:
        self._call(lambda: self.backend.download(self.path, info.version, dest), "download")
        if not (dest / MANIFEST_NAME).is_file():
            raise CheckpointError(f"{self.uri}:{info.version} is not a dylora-moe checkpoint (no {MANIFEST_NAME})")

    def _call(self, func, action: str = "access"):
        """Run a backend call; any SDK/network failure becomes one CheckpointError line (never echoing the key)."""
        try:
            return func()
        except (CheckpointError, UserError, CollectionNotFound):
            raise
        except TypeError:  # what the SDK raises for server calls in offline mode
            if wandb_is_offline():
                raise UserError(
                    f"Failed to {action} W&B artifact {self.path}: resuming from W&B needs online mode; "
                    "unset WANDB_MODE=offline"
                ) from None
            raise
        except Exception as exc:  # noqa: BLE001 - CommError, ValueError, WaitTimeoutError, HTTP errors, …
            raise CheckpointError(
                f"Failed to {action} W&B artifact {self.path}: {_first_line(exc)} (check entity, project and "
                f"name, WANDB_BASE_URL, and that your API key can read it)"
            ) from None


def _first_line(exc: BaseException) -> str:
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    key = wandb_api_key()
    return message.replace(key, "***") if key else message
