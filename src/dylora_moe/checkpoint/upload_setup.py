"""Wire checkpoint uploads into a training run: pick the store, build uploader + callback, wait at exit.

Why here: the trainer should need two calls — `build_upload_callback(...)` before training and
`finish_uploads(callback)` before exit — and nothing about stores, threads or aliases. This is the only
place that builds uploaders for training (`training/tracking.py` calls it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dylora_moe.checkpoint.stores.uri import open_store
from dylora_moe.checkpoint.stores.wandb_auth import wandb_mode
from dylora_moe.checkpoint.upload_callback import CheckpointUploadCallback
from dylora_moe.checkpoint.uploader import BackgroundUploader, UploadFailure
from dylora_moe.errors import UserError

DEFAULT_ARTIFACT_NAME = "best-dylora-model-full"  # the seed's name: resume with entity/project/best-dylora-model-full:best
EXIT_UPLOAD_FAILED = 3  # training finished, but at least one checkpoint upload failed after all retries


def default_checkpoint_store_uri(
    wandb_run=None, artifact_name: str = DEFAULT_ARTIFACT_NAME, entity: str | None = None
) -> str | None:
    """--checkpoint_store default: the active W&B run's project (offline runs stage for `wandb sync`), else None."""
    if wandb_run is None:
        return None
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", artifact_name)
    entity = entity or getattr(wandb_run, "entity", None) or "local"
    return f"wandb://{entity}/{wandb_run.project}/{name}"


def check_store_uri(store_uri: str) -> None:
    """A store for uploads must be a whole store, not one version of it; raises UserError otherwise."""
    _store, ref = open_store(store_uri)
    if ref is not None:
        raise UserError(
            f"--checkpoint_store {store_uri!r} names a version/alias ({ref!r}); give the store only, "
            "e.g. gs://bucket/run or wandb://entity/project/name"
        )


def build_upload_callback(
    store_uri: str | None,
    is_main_process: bool = True,
    log: Callable[[str], object] = print,
    max_attempts: int = 4,
    backoff_s: float = 2.0,
) -> CheckpointUploadCallback | None:
    """A Trainer callback that uploads each save to `store_uri` in the background (None: uploads off).

    On processes other than the main one the uploader is a no-op: only the main process uploads.
    """
    if not store_uri:
        return None
    check_store_uri(store_uri)
    store, _ = open_store(store_uri)
    if store_uri.startswith("wandb://") and wandb_mode() == "disabled":
        if is_main_process:
            log(f"W&B is disabled (WANDB_MODE=disabled): checkpoints are not uploaded to {store_uri}; "
                "they stay in --output_dir")
        return None
    uploader = BackgroundUploader(store, is_main_process, max_attempts=max_attempts, backoff_s=backoff_s, log=log)
    return CheckpointUploadCallback(uploader, log=log)


def finish_uploads(callback: CheckpointUploadCallback | None, log: Callable[[str], object] = print) -> list[UploadFailure]:
    """Wait for pending uploads before the process exits; log and return the ones that failed."""
    if callback is None:
        return []
    failures = callback.uploader.close()
    for failure in failures:
        log(f"checkpoint upload FAILED: {failure.local_dir} ({', '.join(failure.aliases)}) after "
            f"{failure.attempts} attempts: {failure.error}")
    return failures
