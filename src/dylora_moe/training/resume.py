"""Resumption as one component: which checkpoint a run continues from, and what it takes from it.

The one place where the checkpoint meets the new command. `Resumption.prepare(cfg)` picks the source
(`latest`, `auto`, a path or any store URI; fetched and verified by `checkpoint/resolve.py`), reads the saved
model config, merges it into the command's (three rules, applied once), checks that the two fit and that a
full resume has every file it needs, and loads the DyLoRA training state, all before anything expensive.
`load_adapters(model)` loads the experts once, before the trainer builds its optimizer, and grows the pool for
`--grow_experts`; `plan_run(layout)` says where in the data the run continues. The trainer only reads from it.

Training arguments, datasets and hardware always come from the new command; the checkpoint supplies model
state, optimizer, schedule, step/epoch, best metric, early-stopping counter, data position and RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import json

from dylora_moe.checkpoint.manifest import RUN_CONFIG_NAME, find_latest_checkpoint, read_manifest
from dylora_moe.checkpoint.resolve import fetch_checkpoint, newest_in_store
from dylora_moe.errors import UserError
from dylora_moe.model.adapter_io import check_compatible, load_adapter
from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.quantization import describe as describe_quantization
from dylora_moe.model.quantization import quantization_change_line
from dylora_moe.processes import log_main
from dylora_moe.training.config import TrainConfig
from dylora_moe.training.resume_plan import DataLayout, DataPosition, ResumePlan, plan_resume
from dylora_moe.training.state import DyLoRATrainingState

FULL_RESUME_FILES = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "dylora_state.json")

Log = Callable[[str], object]


@dataclass
class Resumption:
    """Where this run starts, decided once; a fresh run is a Resumption with no `path`."""

    cfg: TrainConfig
    model_config: DyLoRAConfig  # the command's model config, merged with the saved one: what the model is built as
    path: Path | None = None  # verified local checkpoint directory
    label: str | None = None  # what the user named (path or URI), for logs and the resume event
    saved_config: DyLoRAConfig | None = None
    state: DyLoRATrainingState = field(default_factory=DyLoRATrainingState)
    plan: ResumePlan | None = None  # set by `plan_run()` on a full resume
    continuity: dict | None = None  # the continuity probe's losses, set once checked (training/continuity.py)

    @classmethod
    def prepare(cls, cfg: TrainConfig, log: Log = log_main) -> "Resumption":
        """Resolve and verify the source and check the command against it; reads JSON only, loads no model."""
        path, label = choose_source(cfg, log)
        if path is None:
            return cls(cfg, command_model_config(cfg))
        saved = DyLoRAConfig.load(path)
        merged = merge_model_config(command_model_config(cfg), saved, cfg)
        check_compatible(saved, merged, str(path))
        if not cfg.weights_only_resume:
            _check_full_resume_files(path)
        resumption = cls(cfg, merged, path, label, saved)
        if resumption.full:
            resumption.state = DyLoRATrainingState.load(path)
            if cfg.grow_experts:
                resumption.state.early_stopping.counter = 0
        return resumption

    @property
    def full(self) -> bool:
        """Optimizer, schedule, step and data position continue (False: fresh start or weights-only resume)."""
        return self.path is not None and not self.cfg.weights_only_resume

    @property
    def checkpoint(self) -> str | None:
        """What `Trainer.train(resume_from_checkpoint=...)` gets: the directory on a full resume, else None."""
        return str(self.path) if self.full else None

    def groups_by_length(self, log: Log = log_main) -> bool:
        """Whether the training order groups examples by length: `--group_by_length` / `--no_group_by_length`
        when given; else, on a full resume, the order the checkpoint was trained in (a checkpoint from before
        grouping existed: random), so the continuation stays exact; else on (the fastest order here, see
        docs/training.md) unless --packing already removes the padding."""
        if self.cfg.group_by_length is not None:
            self._check_legacy_groups(self.cfg.group_by_length, log)
            return self.cfg.group_by_length
        if self.full:
            saved = self.path / RUN_CONFIG_NAME
            grouped = saved.is_file() and bool(json.loads(saved.read_text()).get("group_by_length"))
            log(f"[data] {'batches grouped by length' if grouped else 'random order'}, as the checkpoint was "
                f"trained ({'--no_group_by_length' if grouped else '--group_by_length'} changes it; the "
                "continuation is then no longer exact)")
            self._check_legacy_groups(grouped, log)
            return grouped
        if self.cfg.packing:
            return False  # packed rows hold no padding to save
        log("[data] batches grouped by length (the default for a new run; --no_group_by_length for random order)")
        return True

    def _check_legacy_groups(self, grouped: bool, log: Log) -> None:
        """A checkpoint that records no accumulation was written when length groups were cut to the per-device
        batch, not the global one; where the two differ, the rest of its epoch is grouped otherwise: say so, and
        the resume is not exact (a new epoch starts in the new order anyway)."""
        if not (grouped and self.full and self.plan is not None and self.plan.steps_in_epoch > 0):
            return
        saved = DataPosition.from_dict(self.state.data_position)
        if saved.grad_accum or (saved.world_size == 1 and saved.global_batch == self.cfg.train_batch_size):
            return
        self.plan = replace(self.plan, exact=False)
        log(f"[data] checkpoint from an earlier version, whose length groups were cut to the per-device batch (now "
            f"the global batch, {saved.global_batch}): the rest of epoch {self.plan.epochs_trained} may revisit "
            "some samples and skip others; the continuation is not exact (the next epoch is)")

    def load_adapters(self, model, log: Log = log_main) -> None:
        """Load the saved experts into `model` (the one load of a resume), then grow the pool for --grow_experts.

        Called before the trainer exists, so the optimizer is built over the grown pool; the trainer's own
        checkpoint loading then leaves the weights alone."""
        if self.path is None:
            return
        load_adapter(model, self.path)
        saved_quantization = read_manifest(self.path)["metadata"].get("base_quantization")
        change = quantization_change_line(saved_quantization, describe_quantization(model.base_model))
        if change:
            log(f"[train] {change}")
        grow, source = self.cfg.grow_experts, self.cfg.grow_experts_from
        if not grow:
            return
        new_ids = model.add_experts(grow)
        if source is not None:
            if not 0 <= source < new_ids[0]:
                raise UserError(f"--grow_experts_from {source} is not an existing expert; "
                                f"the checkpoint has experts 0..{new_ids[0] - 1}")
            for new_id in new_ids:
                model.copy_expert(source, new_id)
            log(f"[train] new experts {new_ids} start as copies of expert {source}")
        log(f"[train] grew the expert pool by {grow}: new immature experts {new_ids}")

    def best_checkpoint(self, step: int, metric: float | None, log: Log = log_main) -> Path | None:
        """The resumed run's best checkpoint (at `step`) when the directory it recorded is not on this machine:
        the resumed checkpoint itself when it is the best, else the store's `best` when --checkpoint_store is
        given and that version is the same step and metric; None, said in one line, when neither."""
        score = "n/a" if metric is None else f"{metric:.4f}"
        what = f"the best checkpoint (step {step}, eval_loss {score})"
        if read_manifest(self.path)["metadata"].get("global_step") == step:
            return self.path
        store = self.cfg.checkpoint_store
        why = "no --checkpoint_store to fetch it from"
        if store:
            try:
                path = fetch_checkpoint(f"{store}:best", log=log)
            except UserError as exc:  # CheckpointError included: no `best` alias, or it does not verify
                why = f"{store}:best cannot be fetched ({exc})"
            else:
                saved = read_manifest(path)["metadata"]
                if saved.get("global_step") == step and saved.get("best_metric") == metric:
                    log(f"[train] {what} is not here; fetched {store}:best for --load_best_model_at_end")
                    return path
                why = f"{store}:best is step {saved.get('global_step')}, another checkpoint"
        log(f"[train] {what} is not available here ({why}): unless a later evaluation beats it, "
            "--load_best_model_at_end ends with the last weights")
        return None

    def plan_run(self, layout: DataLayout, log: Log = log_main) -> int:
        """Plan where in the data the run continues (`self.plan` on a full resume); returns the total steps."""
        cfg = self.cfg
        if not self.full:
            if self.path is not None:
                log(f"[train] weights-only resume from {self.label}: optimizer and LR schedule start fresh at step 0")
            return cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * layout.steps_per_epoch)
        saved = DataPosition.from_dict(self.state.data_position)
        self.plan = plan_resume(saved, layout, num_epochs=cfg.num_epochs, max_steps=cfg.max_steps)
        log(f"[train] {self.plan.message}")
        if cfg.grow_experts:
            log("[train] --grow_experts: the optimizer keeps the state of existing parameters; new experts start fresh")
        return self.plan.max_steps


def apply_learning_rate(optimizer, scheduler, learning_rate: float) -> float | None:
    """Give a resumed optimizer and schedule the command's peak learning rate; returns the checkpoint's peak
    when it differed (None: unchanged, nothing touched, so the resume stays bit for bit).

    Training arguments come from the command, but the loaded state carries the old peak in the scheduler's
    `base_lrs` and the groups' `initial_lr`/`lr`. The schedule keeps its shape: from the resume step on each
    group's LR is the schedule's multiplier at that step times the new peak."""
    base_lrs = getattr(scheduler, "base_lrs", None)
    if not base_lrs or base_lrs[0] == learning_rate:
        return None
    saved = base_lrs[0]
    multipliers = getattr(scheduler, "lr_lambdas", None) or [None] * len(base_lrs)
    scheduler.base_lrs = [learning_rate] * len(base_lrs)
    for group, multiplier in zip(optimizer.param_groups, multipliers):
        group["initial_lr"] = learning_rate
        # the (re-planned) schedule's multiplier where it has one, else the current one
        current = multiplier(scheduler.last_epoch) if multiplier else (group["lr"] / saved if saved else 1.0)
        group["lr"] = learning_rate * current
    return saved


def command_model_config(cfg: TrainConfig) -> DyLoRAConfig:
    """The model config the command asks for, before any checkpoint is consulted."""
    targets = [t.strip() for t in cfg.target_modules.split(",") if t.strip()] if cfg.target_modules else None
    return DyLoRAConfig(
        num_experts=cfg.num_experts, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=targets, top_k=cfg.top_k, router_temperature=cfg.router_temperature,
        router_input=cfg.router_input or "token", balance_coefficient=cfg.balance_coefficient, base_model=cfg.model_name,
    )


def merge_model_config(new: DyLoRAConfig, saved: DyLoRAConfig, cfg: TrainConfig) -> DyLoRAConfig:
    """What a resumed command leaves open comes from the checkpoint: unset target modules and router input, and
    the pool size under --grow_experts (the pool grows after loading). Mutates and returns `new`."""
    if not new.target_modules:
        new.target_modules = saved.target_modules
    if cfg.grow_experts:
        new.num_experts = saved.num_experts
    if cfg.router_input is None:
        new.router_input = saved.router_input
    return new


def _check_full_resume_files(path: Path) -> None:
    missing = [n for n in FULL_RESUME_FILES if not (path / n).is_file()]
    if missing:
        raise UserError(
            f"checkpoint {path} has no {', '.join(missing)}: it cannot continue the run exactly; "
            "pass --weights_only_resume to load only the experts and start optimizer and schedule fresh"
        )


# ---------------------------------------------------------------------------------------------- the source
def choose_source(cfg: TrainConfig, log: Log = log_main) -> tuple[Path | None, str | None]:
    """(verified local dir, label) from --resume_from_checkpoint / --wandb_checkpoint_artifact /
    WANDB_CHECKPOINT_ARTIFACT; (None, None) for a fresh start."""
    source = cfg.resume_from_checkpoint
    artifact = cfg.resume_artifact()
    if source is None and artifact:
        source = artifact
    if source is None:
        return None, None
    if source == "latest":
        found = find_latest_checkpoint(cfg.output_dir, log=log)
        if found is None:
            raise UserError(
                f"--resume_from_checkpoint without a value continues the newest complete checkpoint in "
                f"--output_dir {cfg.output_dir}, but there is none; give a checkpoint path or URI, or use 'auto'"
            )
        return found, str(found)
    if source == "auto":
        return _auto(cfg, artifact, log)
    return fetch_checkpoint(source, log=log), source


def _auto(cfg: TrainConfig, artifact: str | None, log: Log) -> tuple[Path | None, str | None]:
    """Newest verifying checkpoint of this run, locally or in the store; fresh start (said) when none exists."""
    local = find_latest_checkpoint(cfg.output_dir, log=log) if Path(cfg.output_dir).is_dir() else None
    local_step = _step_of(local) if local else -1
    remote = newest_in_store(cfg.checkpoint_store, cfg.run_name, log) if cfg.checkpoint_store else None
    if remote is not None and remote[0] > local_step:
        step, path, label = remote
        log(f"[resume] auto: newest checkpoint is {label} (step {step}) in the store")
        return path, label
    if local is not None:
        log(f"[resume] auto: newest complete checkpoint is {local} (step {local_step})")
        return local, str(local)
    if artifact:
        log(f"[resume] auto: no checkpoint of this run yet; starting from {artifact}")
        return fetch_checkpoint(artifact, log=log), artifact
    log(f"[resume] auto: no checkpoint found in {cfg.output_dir}"
        + (f" or {cfg.checkpoint_store}" if cfg.checkpoint_store else "") + "; starting fresh")
    return None, None


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])
