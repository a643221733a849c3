"""Checkpoint store backed by Weights & Biases artifacts (real `wandb` SDK).

Why a backend object: everything that talks to the W&B server goes through `WandbBackend`
(log an artifact, list a collection's versions, download one). `SdkBackend` is the real SDK;
tests substitute a fake that follows W&B's rules (versions increment, `latest` moves, identical
content makes no new version, a missing collection/version raises `wandb.errors.CommError`).
The API key is read only by the SDK; nothing here prints, logs or stores it.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from dylora_moe.checkpoint.manifest import COMPLETE_MARKER, MANIFEST_NAME, CheckpointError, verify_checkpoint
from dylora_moe.checkpoint.stores.base import (
    CheckpointStore,
    VersionInfo,
    checkpoint_size,
    describe_versions,
    manifest_digest,
)
from dylora_moe.checkpoint.stores.uri import WANDB_FORM, parse_wandb_uri
from dylora_moe.errors import UserError

ARTIFACT_TYPE = "dylora-moe-checkpoint"
OFFLINE_VERSION = "offline"  # version label of an artifact staged for `wandb sync`


def wandb_is_offline() -> bool:
    """WANDB_MODE offline/dryrun/disabled: no server, so nothing can be downloaded."""
    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled")


def wandb_has_credentials() -> bool:
    """An API key in the environment or a `wandb login` entry in ~/.netrc (the key itself is never read out)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        return bool(netrc.netrc(path).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False


def check_wandb_download_preconditions(ref: str) -> tuple[str, str, str, str | None]:
    """Fail fast, before training, with the one-line errors of issue 5; returns the parsed path."""
    try:
        entity, project, name, alias = parse_wandb_uri(ref)
    except UserError:
        raise UserError(f"Failed to download W&B artifact {ref!r}: malformed path; expected {WANDB_FORM}") from None
    shown = f"{entity}/{project}/{name}:{alias or 'latest'}"
    if wandb_is_offline():
        raise UserError(
            f"Failed to download W&B artifact {shown}: resuming from W&B needs online mode but "
            f"WANDB_MODE={os.environ.get('WANDB_MODE')}; unset WANDB_MODE (or set WANDB_MODE=online)"
        )
    if not wandb_has_credentials():
        raise UserError(
            f"Failed to download W&B artifact {shown}: WANDB_API_KEY is not set; "
            "export WANDB_API_KEY=<key from https://wandb.ai/authorize> or run `wandb login`"
        )
    return entity, project, name, alias


class WandbBackend(Protocol):
    """The narrow seam to the W&B server."""

    def log_checkpoint(self, path: str, local_dir: Path, aliases: list[str], metadata: dict) -> str:
        """Log local_dir as a version of artifact `path` (entity/project/name); return its version label."""

    def list_versions(self, path: str) -> list[VersionInfo]:
        """Versions of collection `path`, oldest first; raise wandb.errors.CommError when it does not exist."""

    def download(self, path: str, version: str, dest: Path) -> None:
        """Write the files of `path:version` into dest."""


class SdkBackend:
    """The real wandb SDK: log via the active run (or a short upload run), read via wandb.Api()."""

    def log_checkpoint(self, path: str, local_dir: Path, aliases: list[str], metadata: dict) -> str:
        import wandb

        entity, project, name = path.split("/")
        artifact = wandb.Artifact(name, type=ARTIFACT_TYPE, metadata=metadata)
        for child in sorted(local_dir.rglob("*")):
            if child.is_file() and child.relative_to(local_dir).as_posix() != COMPLETE_MARKER:
                artifact.add_file(str(child), name=child.relative_to(local_dir).as_posix())
        run = wandb.run
        own_run = run is None
        if own_run:
            run = wandb.init(entity=entity, project=project, job_type="checkpoint-upload")
        try:
            logged = run.log_artifact(artifact, aliases=list(aliases))
            if wandb_is_offline() or getattr(run, "offline", False) or getattr(run.settings, "_offline", False):
                return OFFLINE_VERSION
            logged.wait()
            return logged.version
        finally:
            if own_run:
                run.finish()

    def list_versions(self, path: str) -> list[VersionInfo]:
        import wandb

        api = wandb.Api()
        found = []
        for artifact in api.artifacts(ARTIFACT_TYPE, path):
            found.append(
                VersionInfo(
                    version=artifact.version,
                    aliases=[a for a in artifact.aliases],
                    metadata=dict(artifact.metadata or {}),
                    size=int(artifact.size or 0),
                    digest=(artifact.metadata or {}).get("manifest_sha256", ""),
                    created=str(artifact.created_at or ""),
                )
            )
        return sorted(found, key=lambda v: v.index)

    def download(self, path: str, version: str, dest: Path) -> None:
        import wandb

        wandb.Api().artifact(f"{path}:{version}", type=ARTIFACT_TYPE).download(root=str(dest))


BACKEND: WandbBackend | None = None  # process-wide override (tests install a fake W&B server side here)


class WandbStore(CheckpointStore):
    """W&B artifact collection entity/project/name as a checkpoint store."""

    def __init__(self, entity: str, project: str, name: str, backend: WandbBackend | None = None):
        self.entity, self.project, self.name = entity, project, name
        self.path = f"{entity}/{project}/{name}"
        self.uri = f"wandb://{self.path}"
        self.backend = backend or BACKEND or SdkBackend()

    def publish(self, local_dir, aliases=(), metadata=None) -> VersionInfo:
        local_dir = Path(local_dir)
        manifest = verify_checkpoint(local_dir)
        metadata = dict(manifest["metadata"] if metadata is None else metadata)
        digest = manifest_digest(local_dir)
        metadata["manifest_sha256"] = digest  # lets a download be matched to its cached copy
        version = self._call(
            lambda: self.backend.log_checkpoint(self.path, local_dir, list(aliases), metadata), "upload"
        )
        return VersionInfo(
            version=version,
            aliases=list(dict.fromkeys(["latest", *aliases])),  # the callback passes `latest` too
            metadata=metadata,
            size=checkpoint_size(local_dir),
            digest=digest,
        )

    def list_versions(self) -> list[VersionInfo]:
        if wandb_is_offline():
            raise UserError(
                f"cannot list W&B artifact {self.path}: needs online mode but WANDB_MODE="
                f"{os.environ.get('WANDB_MODE')}; unset WANDB_MODE"
            )
        return self._call(lambda: self.backend.list_versions(self.path), "list")

    def resolve(self, ref: str | None = None) -> VersionInfo:
        versions = self.list_versions()
        if not versions:
            raise CheckpointError(
                f"Failed to download W&B artifact {self.path}:{ref or 'latest'}: artifact {self.path} not found "
                f"(no versions of type {ARTIFACT_TYPE}); check entity, project and name"
            )
        try:
            return super().resolve(ref)
        except CheckpointError:
            raise CheckpointError(
                f"Failed to download W&B artifact {self.path}:{ref}: version or alias {ref!r} not found; "
                f"existing versions: {describe_versions(versions)}"
            ) from None

    def _fetch(self, info: VersionInfo, dest: Path) -> None:
        self._call(lambda: self.backend.download(self.path, info.version, dest), "download")
        if not (dest / MANIFEST_NAME).is_file():
            raise CheckpointError(f"{self.uri}:{info.version} is not a dylora-moe checkpoint (no {MANIFEST_NAME})")

    def _call(self, func, action: str = "access"):
        """Run a backend call; turn W&B's CommError into a one-line UserError (never echoing the key)."""
        from wandb.errors import CommError

        try:
            return func()
        except CommError as exc:
            message = (str(exc).splitlines() or [type(exc).__name__])[0]
            key = os.environ.get("WANDB_API_KEY")
            if key:
                message = message.replace(key, "***")
            raise CheckpointError(
                f"Failed to {action} W&B artifact {self.path}: {message} (check entity, project and name, "
                "and that your API key can read it)"
            ) from None
        except TypeError:  # what the SDK raises for server calls in offline mode
            if wandb_is_offline():
                raise UserError(
                    f"Failed to {action} W&B artifact {self.path}: resuming from W&B needs online mode; "
                    "unset WANDB_MODE=offline"
                ) from None
            raise
