"""Callbacks that record where training is: data position, resume and dataset events, the final save."""

from __future__ import annotations

from transformers import TrainerCallback

from dylora_moe.training.resume_plan import DataLayout, DataPosition, ResumePlan


class DataPositionTracker(TrainerCallback):
    """Counts optimizer steps within the epoch so a checkpoint can say which sample comes next."""

    def __init__(self, layout: DataLayout, plan: ResumePlan | None = None):
        self.layout = layout
        self.epoch = plan.epochs_trained if plan else 0
        self.steps_in_epoch = plan.steps_in_epoch if plan else 0
        self.global_step = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_in_epoch += 1
        self.global_step = state.global_step

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch += 1
        self.steps_in_epoch = 0

    def position(self) -> dict:
        layout = self.layout
        return DataPosition(
            global_step=self.global_step, epoch=self.epoch,
            samples_in_epoch=self.steps_in_epoch * layout.global_batch, global_batch=layout.global_batch,
            steps_per_epoch=layout.steps_per_epoch, num_examples=layout.num_examples,
            dataset_fingerprint=layout.dataset_fingerprint, world_size=layout.world_size,
            grad_accum=layout.grad_accum,
        ).__dict__.copy()


class FinalStepSave(TrainerCallback):
    """Always save at the last planned step, so every finished run leaves a checkpoint of its end state."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_save = True


class RunEvents(TrainerCallback):
    """Puts resume and dataset-change events into the log history (reports mark them on the time axis)."""

    def __init__(self, resumption, log=print):
        self.resumption = resumption  # training.resume.Resumption: its label and (on a full resume) its plan
        self.log = log

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        plan = self.resumption.plan
        if plan is None:
            return
        if lr_scheduler is not None and hasattr(lr_scheduler, "lr_lambdas"):
            before = lr_scheduler.get_last_lr()[0]
            after = lr_scheduler.base_lrs[0] * lr_scheduler.lr_lambdas[0](lr_scheduler.last_epoch)
            self.log(f"[train] LR schedule re-planned for {state.max_steps} steps: learning rate at step "
                     f"{state.global_step} was {before:.3e}, continues at {after:.3e}")
        state.log_history.append({
            "step": state.global_step, "epoch": state.epoch, "event": "resume",
            "resumed_from": self.resumption.label, "exact": plan.exact, **(self.resumption.continuity or {}),
        })
        if plan.dataset_changed:
            state.log_history.append({"step": state.global_step, "epoch": state.epoch, "event": "dataset_changed"})
