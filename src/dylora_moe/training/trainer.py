"""`DyLoRATrainer`: HF `Trainer` with complete, atomic, adapter-only checkpoints and exact resumption.

What it changes, and why:
- checkpoints hold experts, gates and maturity (safetensors), optimizer, scheduler, scaler, trainer state,
  per-process RNG (tensors only), data position and extra state, plus a sha256 manifest; written into a
  temporary directory and published atomically with a COMPLETE marker last; never any base-model weight;
- resume reads everything from a `Resumption` (see `resume.py`): adapters were loaded by it once before the
  trainer existed; the data position is re-planned in samples and the LR schedule for the new total;
- the loss is composed by `model/loss.py::combine_loss` from the parts the model returns (next-token loss with
  label smoothing on shifted labels, the balance loss, and any term a callback weighted in), scaled for
  gradient accumulation and several processes; every log line carries LM loss, balance loss, per-expert usage
  and routing entropy.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Trainer

from dylora_moe.checkpoint.manifest import find_latest_checkpoint, list_checkpoints, publish_atomically, write_manifest
from dylora_moe.errors import UserError
from dylora_moe.model.adapter_io import load_adapter, save_adapter
from dylora_moe.model.loss import combine_loss
from dylora_moe.training.resume import Resumption, apply_learning_rate
from dylora_moe.training.rng import load_rng_state, save_rng_state
from dylora_moe.training.optimizer_growth import (optimizer_param_names, remap_optimizer_state,
                                                  save_optimizer_param_names, saved_param_names)
from dylora_moe.checkpoint.manifest import write_run_config
from dylora_moe.writable import disk_full, disk_reason, is_disk_error

TRAINER_STATE_NAME = "trainer_state.json"


class MoEStatsAccumulator:
    """Running sums of the MoE statistics between two log lines (kept on device, synced only when logged)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, outputs) -> None:
        values = {
            "lm_loss": outputs.lm_loss_per_token,
            "balance_loss": outputs.balance_loss,
            "routing_entropy": outputs.routing_entropy,
            "expert_usage": outputs.expert_usage,
            **outputs.aux_losses(),  # and any further auxiliary loss (e.g. continual mode's routing terms)
        }
        for key, value in values.items():
            if value is None:
                continue
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.count += 1

    def averages(self, prefix: str = "") -> dict[str, float]:
        if not self.count:
            return {}
        logs: dict[str, float] = {}
        for key, total in self.sums.items():
            mean = total / self.count
            if key == "expert_usage":
                for i, v in enumerate(mean.tolist()):
                    logs[f"{prefix}expert_usage_{i}"] = round(v, 5)
            else:
                logs[f"{prefix}{key}"] = round(mean.item(), 6)
        return logs


class DyLoRATrainer(Trainer):
    """Built by `dylora_moe.training.run.train`; everything beyond HF's arguments comes in the constructor."""

    def __init__(self, *args, resumption: Resumption, run_config: dict, metadata_fn: Callable[[], dict],
                 position_fn: Callable[[], dict] | None = None, train_sampler=None,
                 save_total_limit: int | None = None, log=print, **kwargs):
        super().__init__(*args, **kwargs)
        self.resumption = resumption  # where this run starts; the resume overrides below only read from it
        self.run_config = run_config
        self.metadata_fn = metadata_fn  # () -> dict for the checkpoint manifest
        self.position_fn = position_fn  # () -> dict, the data position at save time
        self.train_sampler = train_sampler  # when set (e.g. length grouping), the training order instead of HF's
        # ours, not HF's `args.save_total_limit`: with a limit of 1 HF deletes the last checkpoint at the end of
        # training when it is not the best one, which would lose the point to resume from
        self.save_total_limit = save_total_limit
        self.last_saved_checkpoint: Path | None = None  # this run's newest save (the summary names it)
        self.train_stats = MoEStatsAccumulator()
        self.eval_stats = MoEStatsAccumulator()
        self.log_fn = log
        # (directory) -> None, called while a checkpoint is written (before its manifest); callbacks with a
        # `checkpoint_files(directory)` method are registered automatically (e.g. the continual skill library)
        self.extra_savers = [cb.checkpoint_files for cb in self.callback_handler.callbacks
                             if callable(getattr(cb, "checkpoint_files", None))]
        # callbacks with a `wrap_collator(collator)` method may add inputs to every batch (e.g. the continual
        # phase's per-sequence expert ids for skill-supervised routing)
        for cb in self.callback_handler.callbacks:
            if callable(getattr(cb, "wrap_collator", None)):
                self.data_collator = cb.wrap_collator(self.data_collator)
        # callbacks with a `count_batch(inputs)` method see every training micro-batch (e.g. the progress
        # lines' tokens per second)
        self.batch_counters = [cb.count_batch for cb in self.callback_handler.callbacks
                               if callable(getattr(cb, "count_batch", None))]

    @property
    def moe_model(self):
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ loss & logging
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            for count in self.batch_counters:
                count(inputs)
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch)
        # With average_tokens_across_devices, num_items_in_batch counts the tokens of *all* processes (in training
        # and in evaluation), so lm_loss is this process's share; HF averages over processes, hence the
        # pre-multiplication (without it a 2-process eval_loss came out halved).
        scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        # lm_loss is then already normalised over the whole accumulated batch and HF will not divide by the
        # accumulation steps, so in training the per-micro-batch auxiliary terms must be.
        steps = 1
        if num_items_in_batch is None:
            scale = 1
        elif model.training:
            steps = self.current_gradient_accumulation_steps
        loss = combine_loss(*self.moe_model.loss_parts(outputs), lm_scale=scale, aux_divisor=steps)
        (self.train_stats if model.training else self.eval_stats).add(outputs)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.train_stats.averages())
            self.train_stats.reset()
        if "eval_loss" in logs:
            logs.update(self.eval_stats.averages(prefix="eval_"))
            self.eval_stats.reset()
        super().log(logs, start_time)

    def _get_train_sampler(self, train_dataset=None):
        return self.train_sampler if self.train_sampler is not None else super()._get_train_sampler(train_dataset)

    # ------------------------------------------------------------------ checkpoints: save
    def _save_checkpoint(self, model, trial):
        """Write the checkpoint; a full or read-only disk ends the run in one line, the previous one intact."""
        try:
            self._write_checkpoint(model, trial)
        except Exception as exc:
            run_dir = Path(self._get_output_dir(trial=trial))
            full = disk_full(run_dir)  # measured before the partial save is removed
            if not full and not is_disk_error(exc):
                raise
            step = self.state.global_step
            shutil.rmtree(run_dir / f".tmp-checkpoint-{step}-0", ignore_errors=True)  # give the space back
            previous = find_latest_checkpoint(run_dir, verify=False, log=lambda *_: None)
            kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            reason = "No space left on device" if full else disk_reason(exc)
            raise UserError(f"cannot write checkpoint-{step} into {run_dir}: {reason}; {kept}; free "
                            "some space (or choose a writable --output_dir), then resume with "
                            "--resume_from_checkpoint auto") from None

    def _write_checkpoint(self, model, trial):
        step = self.state.global_step
        run_dir = Path(self._get_output_dir(trial=trial))
        final = run_dir / f"checkpoint-{step}"
        tmp = run_dir / f".tmp-checkpoint-{step}-0"  # same name on every rank; stale ones are removed at start
        main = self.args.should_save
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.store_flos()
        if self.state.best_global_step:
            best_dir = run_dir / f"checkpoint-{self.state.best_global_step}"
            if best_dir.exists() or self.state.best_global_step == step:
                self.state.best_model_checkpoint = str(best_dir)
        if main:
            save_adapter(self.moe_model, tmp)
        self._save_optimizer_and_scheduler(str(tmp))
        if main and self.optimizer is not None:
            save_optimizer_param_names(self.optimizer, self.moe_model, tmp)
        self._save_scaler(str(tmp))
        save_rng_state(tmp, self.args.process_index)
        if main:
            if self.position_fn is not None:
                self.resumption.state.data_position = self.position_fn()
            self.resumption.state.save(tmp)
            for saver in self.extra_savers:
                saver(tmp)
            self.state.save_to_json(str(tmp / TRAINER_STATE_NAME))
            write_run_config(tmp, self.run_config)
        self.accelerator.wait_for_everyone()
        if main:
            write_manifest(tmp, self.metadata_fn())
            publish_atomically(tmp, final)
            self.last_saved_checkpoint = final
            self._rotate_checkpoints_keeping_best(run_dir)
        self.accelerator.wait_for_everyone()

    def _rotate_checkpoints_keeping_best(self, run_dir: Path) -> None:
        limit = self.save_total_limit
        if not limit or limit <= 0:
            return
        checkpoints = [path for _, path in list_checkpoints(run_dir)]
        best = Path(self.state.best_model_checkpoint).resolve() if self.state.best_model_checkpoint else None
        keep = set(checkpoints[-limit:])
        if best is not None:
            keep |= {p for p in checkpoints if p.resolve() == best}
        for path in checkpoints:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ checkpoints: load
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Nothing to load: the resumption loaded the adapters once (and grew the pool) before this trainer was
        built, so the optimizer covers the final parameters. HF's loader would look for full model weights."""

    def _load_optimizer_and_scheduler(self, checkpoint):
        """The checkpoint's optimizer and schedule, then the command's peak learning rate (which may differ)."""
        self._load_saved_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.lr_scheduler is None:
            return
        saved_lr = apply_learning_rate(self.optimizer, self.lr_scheduler, self.args.learning_rate)
        if saved_lr is not None:
            self.log_fn(f"[train] learning rate {self.args.learning_rate:.1e} from the command (checkpoint trained "
                        f"with {saved_lr:.1e}): continues at {self.optimizer.param_groups[0]['lr']:.1e} at step "
                        f"{self.state.global_step}")

    def _load_saved_optimizer_and_scheduler(self, checkpoint):
        """HF's loader, unless the parameters changed since the save (grown pool): then re-map by name."""
        names = saved_param_names(checkpoint) if checkpoint else None
        if names is None or names == optimizer_param_names(self.optimizer, self.moe_model):
            return super()._load_optimizer_and_scheduler(checkpoint)
        saved = torch.load(Path(checkpoint) / "optimizer.pt", map_location="cpu", weights_only=True)
        state, kept, fresh = remap_optimizer_state(saved, names, self.optimizer, self.moe_model)
        self.optimizer.load_state_dict(state)
        self.lr_scheduler.load_state_dict(torch.load(Path(checkpoint) / "scheduler.pt", weights_only=True))
        self.log_fn(f"[train] optimizer state re-mapped onto the grown model: {kept} parameters keep their "
                    f"state, {fresh} start fresh")

    def _load_rng_state(self, checkpoint):
        if checkpoint is None:
            return
        if not load_rng_state(checkpoint, self.args.process_index):
            self.log_fn(
                f"[train] no RNG state for process {self.args.process_index} in {checkpoint} "
                "(saved with another world size): random streams start fresh"
            )

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial):
        super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        self.control.should_training_stop = False  # a run that early-stopped continues when resumed
        plan = self.resumption.plan
        if resume_from_checkpoint is None or plan is None:
            return 0, 0
        state = self.state
        if self.args.load_best_model_at_end and state.best_global_step and state.best_model_checkpoint is None:
            # HF forgets a recorded best directory that is not here (resumed on another machine or output dir)
            with self.args.main_process_first(desc="fetch the best checkpoint"):
                best = self.resumption.best_checkpoint(state.best_global_step, state.best_metric, log=self.log_fn)
            state.best_model_checkpoint = str(best) if best is not None else None
        return plan.epochs_trained, plan.batches_to_skip

    def _load_best_model(self):
        best = self.state.best_model_checkpoint
        if best and Path(best).is_dir():
            self.log_fn(f"[train] loading the best checkpoint {best} (eval_loss {self.state.best_metric:.4f})")
            load_adapter(self.moe_model, best)

