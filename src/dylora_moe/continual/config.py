"""`ContinualConfig`: the options of `dylora-moe train --mode continual` beyond the ordinary training flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dylora_moe.errors import UserError

DEFAULT_THRESHOLD = 0.75
DEFAULT_ALPHA = 0.01


@dataclass
class ContinualConfig:
    skills: str = ""  # comma-separated dataset specs, one per skill; '+' joins several datasets into one skill
    novelty_alpha: float = DEFAULT_ALPHA  # novel when every known skill's same-skill test has p below this
    novelty_threshold: float | None = None  # set: a fixed cosine threshold decides instead of the test
    seed_steps: int = 0  # optional seeding phase per skill (0 = none), at seed_learning_rate
    seed_learning_rate: float | None = None  # default: 10 x --learning_rate
    freeze_experts: bool = True  # freeze every other expert while a skill is learned
    embedding_samples: int = 32  # examples per skill for the routing prototypes
    novelty_samples: int = 64  # examples per skill for its embedding and the same-skill test
    replay: float = 0.0  # share of each later skill's training examples drawn from the earlier skills
    routing_supervision: float = 1.0  # weight of the router CE toward each example's skill expert on its answer tokens (0: off)
    prototype_routing: float = 1.0  # weight of the loss keeping earlier skills' gate inputs on their experts (0: off)
    new_expert_init: str = "nearest"  # a novel skill's expert starts as a copy of the nearest skill's ('fresh': random)
    reference: str = "stdlib"  # dataset spec whose mean hidden state centres the embeddings ('none': no centring)

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
