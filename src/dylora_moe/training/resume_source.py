"""Which checkpoint does this run continue from? `latest`, `auto`, a path, or any store URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dylora_moe.checkpoint.manifest import CheckpointError, find_latest_checkpoint
from dylora_moe.errors import UserError


@dataclass
class ResumeSource:
    path: Path | None  # verified local checkpoint directory, None = fresh start
    label: str | None = None  # what the user named (path or URI), for logs and the resume event


def resolve_resume(cfg, log=print) -> ResumeSource:
    """Turn --resume_from_checkpoint / --wandb_checkpoint_artifact / WANDB_CHECKPOINT_ARTIFACT into a local dir."""
    from dylora_moe.checkpoint.resolve import resolve_resume_source

    source = cfg.resume_from_checkpoint
    artifact = cfg.resume_artifact()
    if source is None and artifact:
        source = artifact
    if source is None:
        return ResumeSource(None)
    if source == "latest":
        found = find_latest_checkpoint(cfg.output_dir, log=log)
        if found is None:
            raise UserError(
                f"--resume_from_checkpoint without a value continues the newest complete checkpoint in "
                f"--output_dir {cfg.output_dir}, but there is none; give a checkpoint path or URI, or use 'auto'"
            )
        return ResumeSource(found, str(found))
    if source == "auto":
        return _auto(cfg, artifact, log)
    return ResumeSource(resolve_resume_source(source, log=log), source)


def _auto(cfg, artifact: str | None, log) -> ResumeSource:
    """Newest verifying checkpoint of this run, locally or in the store; fresh start (said) when none exists."""
    local = find_latest_checkpoint(cfg.output_dir, log=log) if Path(cfg.output_dir).is_dir() else None
    local_step = _step_of(local) if local else -1
    remote = _newest_in_store(cfg.checkpoint_store, cfg.run_name, log) if cfg.checkpoint_store else None
    if remote is not None and remote[0] > local_step:
        step, path, label = remote
        log(f"[resume] auto: newest checkpoint is {label} (step {step}) in the store")
        return ResumeSource(path, label)
    if local is not None:
        log(f"[resume] auto: newest complete checkpoint is {local} (step {local_step})")
        return ResumeSource(local, str(local))
    if artifact:
        log(f"[resume] auto: no checkpoint of this run yet; starting from {artifact}")
        from dylora_moe.checkpoint.resolve import resolve_resume_source

        return ResumeSource(resolve_resume_source(artifact, log=log), artifact)
    log(f"[resume] auto: no checkpoint found in {cfg.output_dir}"
        + (f" or {cfg.checkpoint_store}" if cfg.checkpoint_store else "") + "; starting fresh")
    return ResumeSource(None)


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])


def _newest_in_store(uri: str, run_name: str | None, log) -> tuple[int, Path, str] | None:
    from dylora_moe.checkpoint.stores.uri import open_store

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
        return int(info.metadata.get("global_step", -1)), path, f"{uri}:{info.version}"
    return None
