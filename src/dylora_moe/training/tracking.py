"""Experiment tracking and checkpoint uploads for one training run.

W&B is used when asked (`--report_to wandb`) or, with `--report_to auto`, when a project is named
(`--wandb_project` or WANDB_PROJECT) and the SDK is installed. HF's own W&B callback logs every metric line
(ours carry LM/balance loss, per-expert usage, routing entropy and the learning rate); we only open the run
first so its id goes into checkpoint metadata and the default store is the run's project.
The API key is read by the SDK from the environment and never touched here.

Uploads are built by `checkpoint.upload_setup` (the one place for that); this module decides the store
(`--checkpoint_store`, else W&B when a W&B run is active) and closes everything in the right order:
pending uploads first (they may log into the W&B run), then the run.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field

from dylora_moe.errors import UserError
from dylora_moe.processes import is_main_process

SECRET_NAME_RE = re.compile(r"(^|_)(api_key|key|token|secret|password|credentials?)($|_)")


def sanitized_config(config: dict) -> dict:
    """The run config without anything named like a secret (defence in depth: keys are never flags).

    Whole words of the name count (`hf_token`, `wandb_api_key`), so `eval_max_new_tokens` stays in.
    """
    return {k: sanitized_config(v) if isinstance(v, dict) else v for k, v in config.items()
            if not SECRET_NAME_RE.search(k.lower())}


@dataclass
class Tracking:
    report_to: list[str] = field(default_factory=list)
    run_id: str | None = None
    store_uri: str | None = None
    wandb_run: object | None = None

    def upload_callback(self, is_main: bool, log=print):
        """The background-upload callback for `store_uri` (None when uploads are off); no-op off the main process."""
        from dylora_moe.checkpoint.upload_setup import build_upload_callback

        return build_upload_callback(self.store_uri, is_main_process=is_main, log=lambda m: log(f"[upload] {m}"))

    def finish(self, callback, log=print, failed: bool = False) -> list:
        """Wait for pending uploads (reporting failures), then close the W&B run; returns the failures."""
        from dylora_moe.checkpoint.upload_setup import finish_uploads

        try:
            failures = finish_uploads(callback, log=lambda m: log(f"[upload] {m}"))
        finally:
            if self.wandb_run is not None:
                import wandb

                self.wandb_run.finish(exit_code=1 if failed else 0)
                self.wandb_run = None
                # finish() returns before the service has written the run (offline: the staged artifacts);
                # teardown waits for it, so everything is on disk before a (possibly preempted) worker exits
                wandb.teardown()
        return failures


def _wandb_wanted(cfg) -> bool:
    if cfg.report_to == "wandb":
        if importlib.util.find_spec("wandb") is None:
            raise UserError("--report_to wandb but the wandb package is not installed; pip install 'dylora-moe[wandb]'")
        return True
    if cfg.report_to in ("none", ""):
        return False
    if cfg.report_to != "auto":
        raise UserError(f"--report_to must be auto, wandb or none, got {cfg.report_to!r}")
    return bool(cfg.wandb_project_name()) and importlib.util.find_spec("wandb") is not None


def check_resume_artifact(cfg) -> None:
    """A W&B resume source fails here (path form, mode, key) before a W&B run is opened or anything is built.

    `--wandb_checkpoint_artifact` / WANDB_CHECKPOINT_ARTIFACT values that are neither an existing path nor a
    URI with a scheme are W&B paths, so a malformed one gets the expected-form error rather than "no such path".
    """
    from pathlib import Path

    from dylora_moe.checkpoint.stores.uri import is_wandb_uri
    from dylora_moe.checkpoint.stores.wandb_store import check_wandb_download_preconditions

    artifact = cfg.resume_artifact()
    source = cfg.resume_from_checkpoint
    if source in ("latest", "auto"):
        return  # auto falls back to the artifact only when no checkpoint of this run exists
    if source is None:
        source = artifact
        if source and "://" not in source and not Path(source).exists():
            check_wandb_download_preconditions(source)
            return
    if source and is_wandb_uri(source):
        check_wandb_download_preconditions(source)


def setup_tracking(cfg, log=print) -> Tracking:
    """Check the resume artifact and upload store, open the W&B run if wanted, pick the default store."""
    from dylora_moe.checkpoint.upload_setup import check_store_uri, default_checkpoint_store_uri

    check_resume_artifact(cfg)
    if cfg.checkpoint_store:
        check_store_uri(cfg.checkpoint_store)
    tracking = Tracking(store_uri=cfg.checkpoint_store)
    is_main = is_main_process()
    if not _wandb_wanted(cfg):
        return tracking
    tracking.report_to = ["wandb"]
    if not is_main:
        return tracking
    import wandb

    project = cfg.wandb_project_name() or "dylora-moe"
    entity = cfg.wandb_entity_name()
    # the run is opened here, so HF's W&B callback reuses it; nothing is written into os.environ (a notebook's
    # next run must not find WANDB_PROJECT set and turn W&B on by itself)
    from dylora_moe.checkpoint.stores.wandb_auth import wandb_mode
    from dylora_moe.checkpoint.stores.wandb_sdk import transfer_settings

    run = wandb.init(project=project, entity=entity, name=cfg.run_name, config=sanitized_config(cfg.to_dict()),
                     settings=transfer_settings())  # a stalled upload cannot keep the run from finishing
    tracking.wandb_run = run
    tracking.run_id = run.id
    if not tracking.store_uri:
        tracking.store_uri = default_checkpoint_store_uri(run, entity=entity)
    log(f"[wandb] run {run.id} ({wandb_mode() or 'online'}); checkpoints -> {tracking.store_uri}")
    return tracking
