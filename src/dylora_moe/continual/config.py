"""`ContinualConfig`: the options of `dylora-moe train --mode continual` beyond the ordinary training flags.

The fields' `metadata` gives their flags (flags.py); `check()` holds every rule on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dylora_moe.errors import UserError

DEFAULT_THRESHOLD = 0.75
DEFAULT_ALPHA = 0.01


@dataclass
class ContinualConfig:
    skills: str = field(default="", metadata={"help": (
        "comma-separated dataset specs, one per skill, in order (e.g. stdlib:text,stdlib:math,code_alpaca=FILE,"
        "mbpp=FILE); join datasets inside one skill with '+'")})
    novelty_alpha: float = field(default=DEFAULT_ALPHA, metadata={"help": (
        "a skill is novel (new expert) when a permutation test tells its sample apart from every known skill's at "
        "this level (the rate at which a known skill is wrongly called novel)")})
    novelty_threshold: float | None = field(default=None, metadata={"help": (
        "decide novelty by this fixed cosine similarity instead of the test (novel below it); the default holds "
        "only on the base it was tuned for")})
    seed_steps: int = field(default=0, metadata={"help": (
        "steps of the high-LR seeding phase per skill (0: consolidation only)")})
    seed_learning_rate: float | None = field(default=None, metadata={"help": (
        "learning rate of the seeding phase (default: 10 x --learning_rate)")})
    freeze_experts: bool = field(default=True, metadata={"help": (
        "do not freeze earlier experts while a skill is learned"), "flag": "train_all_experts"})
    embedding_samples: int = field(default=32, metadata={"help": "examples per skill for the routing prototypes"})
    novelty_samples: int = field(default=64, metadata={"help": (
        "examples per skill for its embedding and the same-skill test (more: more power)")})
    replay: float = field(default=0.0, metadata={"help": (
        "share of each later skill's training examples replayed from the earlier skills (0: none)")})
    routing_supervision: float = field(default=1.0, metadata={"help": (
        "weight of a router loss toward each training example's skill expert (cross entropy of every router's "
        "softmax over the example's answer tokens); the gates then learn from these labels, not from the LM loss "
        "(0: off, the LM loss trains the gates)")})
    prototype_routing: float = field(default=1.0, metadata={"help": (
        "weight of a router loss that keeps each finished skill's recorded gate inputs routed to its expert while "
        "later skills train (no data replay; 0: off)")})
    new_expert_init: str = field(default="nearest", metadata={"help": (
        "a novel skill's expert starts as a copy of the most similar known skill's expert (nearest) or from "
        "scratch (fresh)"), "choices": ("nearest", "fresh")})
    reference: str = field(default="stdlib", metadata={"help": (
        "dataset spec whose mean hidden state centres skill embeddings, or 'none'"), "flag": "novelty_reference"})

    def skill_specs(self) -> list[str]:
        specs = [s.strip() for s in self.skills.split(",") if s.strip()]
        if not specs:
            raise UserError("--mode continual needs --skills, e.g. --skills stdlib:text,stdlib:math")
        return [s.replace("+", ",") for s in specs]

    def check(self) -> None:
        if self.seed_steps < 0:
            raise UserError(f"--seed_steps must be 0 or more, got {self.seed_steps}")
        if not 0.0 <= self.replay < 1.0:
            raise UserError(f"--replay is a share of the training examples in [0, 1), got {self.replay}")
        if self.routing_supervision < 0:
            raise UserError(f"--routing_supervision is a loss weight, 0 or more, got {self.routing_supervision}")
        if self.prototype_routing < 0:
            raise UserError(f"--prototype_routing is a loss weight, 0 or more, got {self.prototype_routing}")
        if self.new_expert_init not in ("nearest", "fresh"):
            raise UserError(f"--new_expert_init must be 'nearest' or 'fresh', got {self.new_expert_init!r}")
        if self.novelty_samples < 2:
            raise UserError(f"--novelty_samples must be at least 2, got {self.novelty_samples}")
        if self.embedding_samples < 1:
            raise UserError(f"--embedding_samples must be at least 1, got {self.embedding_samples}")
        if not 0.0 < self.novelty_alpha < 1.0:
            raise UserError(f"--novelty_alpha is a significance level in (0, 1), got {self.novelty_alpha}")
        if self.novelty_threshold is not None and not -1.0 <= self.novelty_threshold <= 1.0:
            raise UserError(f"--novelty_threshold is a cosine similarity in [-1, 1], got {self.novelty_threshold}")
        self.skill_specs()

    def to_dict(self) -> dict:
        return asdict(self)
