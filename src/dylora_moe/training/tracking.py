"""Experiment tracking and checkpoint uploads for one training run.

W&B is used when asked (`--report_to wandb`) or, with `--report_to auto`, when a project is named
(`--wandb_project` or WANDB_PROJECT) and the SDK is installed. HF's own W&B callback logs every metric line
(ours carry LM/balance loss, per-expert usage and routing entropy); we only open the run first so its id
goes into checkpoint metadata. The API key is read by the SDK from the environment and never touched here.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from dylora_moe.errors import UserError

DEFAULT_WANDB_ARTIFACT = "dylora-model-full"
SECRET_KEYS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def sanitized_config(config: dict) -> dict:
    """The run config without anything that looks like a secret (defence in depth: keys are never flags)."""
    return {k: v for k, v in config.items() if not any(s.lower() in k.lower() for s in ("api_key", "token", "secret"))}


@dataclass
class Tracking:
    report_to: list[str] = field(default_factory=list)
    run_id: str | None = None
    store_uri: str | None = None
    wandb_run: object | None = None

    def make_uploader(self, is_main: bool):
        if not self.store_uri:
            return None
        from dylora_moe.checkpoint.stores.uri import open_store
        from dylora_moe.checkpoint.uploader import BackgroundUploader

        store, _ = open_store(self.store_uri)
        return BackgroundUploader(store, is_main_process=is_main, log=lambda m: print(f"[upload] {m}", flush=True))

    def finish(self, uploader) -> list:
        failures = uploader.close() if uploader is not None else []
        if self.wandb_run is not None:
            self.wandb_run.finish()
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
    named = cfg.wandb_project or os.environ.get("WANDB_PROJECT")
    return bool(named) and importlib.util.find_spec("wandb") is not None


def setup_tracking(cfg, log=print) -> Tracking:
    tracking = Tracking(store_uri=cfg.checkpoint_store)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if not _wandb_wanted(cfg):
        return tracking
    tracking.report_to = ["wandb"]
    if not is_main:
        return tracking
    import wandb

    project = cfg.wandb_project or os.environ.get("WANDB_PROJECT") or "dylora-moe"
    entity = cfg.wandb_entity or os.environ.get("WANDB_ENTITY")
    os.environ["WANDB_PROJECT"] = project  # HF's callback reads these
    if entity:
        os.environ["WANDB_ENTITY"] = entity
    run = wandb.init(project=project, entity=entity, name=cfg.run_name, config=sanitized_config(cfg.to_dict()))
    tracking.wandb_run = run
    tracking.run_id = run.id
    if not tracking.store_uri:
        run_entity = entity or getattr(run, "entity", "") or "local"
        tracking.store_uri = f"wandb://{run_entity}/{project}/{DEFAULT_WANDB_ARTIFACT}"
    log(f"[wandb] run {run.id} ({os.environ.get('WANDB_MODE', 'online')}); checkpoints -> {tracking.store_uri}")
    return tracking
