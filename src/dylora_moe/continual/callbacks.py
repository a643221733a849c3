"""The trainer callback of one continual phase: freeze other experts, log the skill event, mark maturity,
and write the skill library into every checkpoint (through the trainer's `extra_savers` hook)."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from dylora_moe.continual.library import SkillLibrary


def freeze_other_experts(model, active: int) -> int:
    """`requires_grad_(False)` on every expert except `active`; returns how many experts were frozen."""
    for e in range(model.num_experts):
        for param in model.expert_parameters(e):
            param.requires_grad_(e == active)
    return model.num_experts - 1


class ContinualPhase(TrainerCallback):
    """Runs inside `training.run.train` for one phase (seeding or consolidation) of one skill."""

    def __init__(self, *, skill: str, expert: int, novel: bool, phase: str, library: SkillLibrary,
                 freeze: bool, mark_mature_at_end: bool, log=print):
        self.skill, self.expert, self.novel, self.phase = skill, expert, novel, phase
        self.library = library
        self.freeze = freeze
        self.mark_mature_at_end = mark_mature_at_end
        self.log = log
        self.lrs: list[float] = []  # learning rate of every optimizer step (read back by tests)
        self.sparse_at_step: dict[int, bool] = {}

    def checkpoint_files(self, directory: Path) -> None:
        """Called by the trainer while a checkpoint is being written (before its manifest)."""
        self.library.save(directory)

    def on_init_end(self, args, state, control, model=None, **kwargs):
        # before the optimizer exists, so frozen experts never enter it
        if self.freeze and model is not None:
            frozen = freeze_other_experts(model, self.expert)
            self.log(f"[continual] {self.skill} ({self.phase}): training expert {self.expert}, {frozen} frozen")

    def on_train_begin(self, args, state, control, **kwargs):
        seen = any(e.get("event") == "skill" and e.get("skill") == self.skill and e.get("phase") == self.phase
                   for e in state.log_history)
        if not seen:  # a resumed phase already has it in the restored history
            state.log_history.append({"step": state.global_step, "event": "skill", "skill": self.skill,
                                      "expert": self.expert, "novel": self.novel, "phase": self.phase})

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if optimizer is not None:
            self.lrs.append(float(optimizer.param_groups[0]["lr"]))
        if model is not None:
            if self.mark_mature_at_end and state.global_step >= state.max_steps and not bool(model.maturity[self.expert]):
                # before this step's save, so the final checkpoint already holds the mature expert
                model.mark_mature(self.expert)
                maturity = [bool(x) for x in model.maturity.tolist()]
                state.log_history.append({"step": state.global_step, "epoch": state.epoch, "event": "maturity",
                                          "expert": self.expert, "maturity": maturity})
                self.log(f"[continual] {self.skill}: expert {self.expert} mature "
                         f"({'sparse' if model.is_sparse else 'dense'} routing from now on)")
            self.sparse_at_step[state.global_step] = bool(model.is_sparse)  # routing from the next step on
