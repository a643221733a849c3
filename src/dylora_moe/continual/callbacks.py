"""The trainer callback of one continual phase: freeze other experts, log the skill event, mark maturity,
and write the skill library into every checkpoint (through the trainer's `extra_savers` hook)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from dylora_moe.continual.library import SkillLibrary
from dylora_moe.continual.prototypes import set_routing_prototypes


def freeze_other_experts(model, active: int) -> int:
    """`requires_grad_(False)` on every expert except `active`; returns how many experts were frozen."""
    for e in range(model.num_experts):
        for param in model.expert_parameters(e):
            param.requires_grad_(e == active)
    return model.num_experts - 1


class SkillRoutingCollator:
    """Adds `expert_ids` (batch,) to each batch: the expert of the skill each training example belongs to, looked
    up by its token ids (-1 when unknown, e.g. eval rows), for the skill-supervised routing loss."""

    def __init__(self, collator, targets: dict[tuple, int]):
        self.collator, self.targets = collator, targets

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        ids = [tuple(f["input_ids"].tolist() if hasattr(f["input_ids"], "tolist") else f["input_ids"]) for f in features]
        batch["expert_ids"] = torch.tensor([self.targets.get(i, -1) for i in ids], dtype=torch.long)
        return batch


def routing_targets(train_rows, row_sources: list[str], expert_of_source: dict[str, int]) -> dict[tuple, int]:
    """Token ids of each training row -> its skill's expert; a sequence found under two experts maps to -1."""
    targets: dict[tuple, int] = {}
    for ids, source in zip(train_rows, row_sources):
        key, expert = tuple(ids), expert_of_source[source]
        targets[key] = expert if targets.get(key, expert) == expert else -1
    return targets


def target_weights(targets: dict[tuple, int], num_experts: int) -> torch.Tensor:
    """Each expert's inverse share of the phase's training tokens, normalised so the token-weighted mean is 1
    (experts without tokens get 0): every skill pulls on the router equally, however small its replay share."""
    tokens = torch.zeros(num_experts)
    for ids, expert in targets.items():
        if 0 <= expert < num_experts:
            tokens[expert] += len(ids)
    present = tokens > 0
    weights = torch.zeros(num_experts)
    weights[present] = tokens.sum() / (present.sum() * tokens[present])
    return weights


class ContinualPhase(TrainerCallback):
    """Runs inside `training.run.train` for one phase (seeding or consolidation) of one skill."""

    def __init__(self, *, skill: str, expert: int, novel: bool, phase: str, library: SkillLibrary,
                 freeze: bool, mark_mature_at_end: bool, log=print, routing_supervision: float = 0.0,
                 routing_targets: dict[tuple, int] | None = None, prototype_routing: float = 0.0):
        self.skill, self.expert, self.novel, self.phase = skill, expert, novel, phase
        self.library = library
        self.freeze = freeze
        self.mark_mature_at_end = mark_mature_at_end
        self.log = log
        self.routing_supervision = routing_supervision
        self.routing_targets = routing_targets
        self.prototype_routing = prototype_routing
        self.lrs: list[float] = []  # learning rate of every optimizer step (read back by tests)
        self.sparse_at_step: dict[int, bool] = {}

    def checkpoint_files(self, directory: Path) -> None:
        """Called by the trainer while a checkpoint is being written (before its manifest)."""
        self.library.save(directory)

    def wrap_collator(self, collator):
        """Called by the trainer at construction: with supervision on, batches carry each example's expert."""
        if self.routing_supervision > 0 and self.routing_targets:
            return SkillRoutingCollator(collator, self.routing_targets)
        return collator

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            supervision = self.routing_supervision if self.routing_targets else 0.0
            model.weight_loss_term("routing_supervision_loss", supervision)
            # supervised routing: the gates learn which skill a token belongs to from the labels (and the
            # balance loss), not from the LM loss, which would teach them to prefer the expert being trained
            model.set_routing_defaults(
                detach_weights=bool(supervision),
                target_weights=target_weights(self.routing_targets, model.num_experts) if supervision else None)
        if model is not None and self.prototype_routing > 0:
            earlier = [(self.library.expert_of(name), by_router) for name, by_router in self.library.prototypes.items()
                       if name != self.skill]
            count = set_routing_prototypes(model, earlier, self.prototype_routing)
            if count:
                self.log(f"[continual] {self.skill} ({self.phase}): {count} routing prototypes per router from "
                         f"{len(earlier)} earlier skill(s), weight {self.prototype_routing:g}")
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
