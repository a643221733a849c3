"""The real wandb SDK behind the `WandbBackend` seam: publish, list and download artifact versions.

Why these choices:
- Versions land where the store URI says. `run.log_artifact` files an artifact under the run's own
  entity/project, so the training run is used only when it logs to the store's project; otherwise one
  upload run per target project is opened (once, not per upload) and finished when the store closes.
  It gets a fresh id, so WANDB_RUN_ID / WANDB_RESUME of the training job are not picked up.
- No extra copies online: files are added `immutable` (the SDK reads our snapshot instead of copying it
  into its staging dir) and without the SDK cache; downloads skip the cache too (ours keeps one verified
  copy). Offline the SDK must keep its staged copy, because our snapshot is gone before `wandb sync`.
- `wait()` is bounded: a stalled upload becomes an error the uploader retries and reports.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

from dylora_moe.checkpoint.stores.base import VersionInfo
from dylora_moe.checkpoint.stores.wandb_auth import wandb_is_offline

ARTIFACT_TYPE = "dylora-moe-checkpoint"
OFFLINE_VERSION = "offline"  # version label of an artifact staged for `wandb sync`
DEFAULT_WAIT_TIMEOUT_S = 1800.0


class CollectionNotFound(Exception):
    """The collection (or its project/entity) does not exist: no versions yet."""


def wait_timeout_s() -> float:
    """Seconds one upload may take before it counts as failed ($DYLORA_MOE_WANDB_UPLOAD_TIMEOUT, default 30 min)."""
    return float(os.environ.get("DYLORA_MOE_WANDB_UPLOAD_TIMEOUT") or DEFAULT_WAIT_TIMEOUT_S)


def transfer_settings():
    """SDK settings that bound each file transfer (and so `run.finish()`) by the upload timeout."""
    import wandb

    return wandb.Settings(x_file_transfer_timeout_seconds=wait_timeout_s(), x_file_transfer_retry_max=1)


def _run_is_offline(run) -> bool:
    settings = getattr(run, "settings", None)
    return wandb_is_offline() or bool(getattr(run, "offline", False)) or bool(getattr(settings, "_offline", False))


class SdkBackend:
    """Talks to W&B through the SDK; holds the upload runs it opened (see the module docstring)."""

    copy_online = False  # True: the SDK's default (staging copy + cache copy); kept for the disk benchmark

    def __init__(self):
        self._upload_runs: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ publish
    def log_checkpoint(self, path: str, local_dir: Path, files: list[str], aliases: list[str], metadata: dict) -> str:
        import wandb

        entity, project, name = path.split("/")
        run = self._run_for(entity, project)
        offline = _run_is_offline(run)
        artifact = wandb.Artifact(name, type=ARTIFACT_TYPE, metadata=metadata)
        copy = offline or self.copy_online
        for rel in files:  # the manifest's files by name (checked by the store: no links, nothing else)
            artifact.add_file(str(local_dir / rel), name=rel, skip_cache=not self.copy_online,
                              policy="mutable" if copy else "immutable")
        logged = run.log_artifact(artifact, aliases=list(aliases))
        if offline:
            return OFFLINE_VERSION
        logged.wait(timeout=wait_timeout_s())
        return logged.version

    def _run_for(self, entity: str, project: str):
        """The training run when it logs to entity/project, else this store's own upload run there."""
        import wandb

        active = wandb.run
        if active is not None and _logs_to(active, entity, project):
            return active
        with self._lock:
            run = self._upload_runs.get((entity, project))
            if run is None:
                run = wandb.init(entity=entity, project=project, job_type="checkpoint-upload",
                                 id=uuid.uuid4().hex[:12], resume="never", reinit="create_new",
                                 settings=transfer_settings())
                self._upload_runs[(entity, project)] = run
            return run

    def close(self) -> None:
        """Finish the upload runs this backend opened (the training run is closed by its owner)."""
        with self._lock:
            runs, self._upload_runs = list(self._upload_runs.values()), {}
        for run in runs:
            run.finish()

    # ------------------------------------------------------------------ read
    def list_versions(self, path: str) -> list[VersionInfo]:
        import wandb

        api = wandb.Api()
        try:
            artifacts = list(api.artifacts(ARTIFACT_TYPE, path))
        except ValueError as exc:  # the SDK's lazy listing cannot parse the null answer for a missing collection
            if _collection_exists(api, path) is False:
                raise CollectionNotFound(path) from None
            raise exc
        return sorted((_version_info(artifact) for artifact in artifacts), key=lambda v: v.index)

    def version_info(self, path: str, ref: str) -> VersionInfo | None:
        """`path:ref` (a version or an alias such as `latest`) in one query, without listing the collection;
        None when the SDK cannot answer it (the caller then lists, and names what exists)."""
        import wandb

        try:
            return _version_info(wandb.Api().artifact(f"{path}:{ref}", type=ARTIFACT_TYPE))
        except Exception:  # noqa: BLE001 - not found, wrong type, network: the listing reports it properly
            return None

    def download(self, path: str, version: str, dest: Path) -> None:
        import wandb

        artifact = wandb.Api().artifact(f"{path}:{version}", type=ARTIFACT_TYPE)
        artifact.download(root=str(dest), skip_cache=True)

    def record_use(self, path: str, version: str) -> None:
        """Mark `path:version` as an input of the active run, so W&B shows where the run resumed from."""
        import sys

        if "wandb" not in sys.modules:  # never imported: no run can be active (and the import costs a second)
            return
        import wandb

        run = wandb.run
        if run is not None and not _run_is_offline(run):
            run.use_artifact(f"{path}:{version}", type=ARTIFACT_TYPE)


def _version_info(artifact) -> VersionInfo:
    return VersionInfo(
        version=artifact.version,
        aliases=list(artifact.aliases),
        metadata=dict(artifact.metadata or {}),
        size=int(artifact.size or 0),
        digest=(artifact.metadata or {}).get("manifest_sha256", ""),
        created=str(artifact.created_at or ""),
    )


def _collection_exists(api, path: str) -> bool | None:
    """True/False as the SDK answers it; None when this SDK cannot tell."""
    exists = getattr(api, "artifact_collection_exists", None)
    if exists is None:
        return None
    try:
        return bool(exists(path, ARTIFACT_TYPE))
    except Exception:  # noqa: BLE001 - an unreachable server: the listing error is the one to report
        return None


def _logs_to(run, entity: str, project: str) -> bool:
    """Whether `run` files artifacts under entity/project. An offline run knows no entity (the server assigns
    it at `wandb sync`), so there the project decides."""
    return run.project == project and (run.entity or entity) == entity
