"""`continual_state.json`: where a continual sequence stands, so a restart continues at the right skill and phase.

Written atomically (temp file + rename) at every transition: skill decided, phase finished, skill finished.
Model weights, maturity and the library live in the phase checkpoints; this file only points at them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dylora_moe.files import atomic_write_text

CONTINUAL_STATE_NAME = "continual_state.json"


@dataclass
class SkillRecord:
    name: str
    expert: int
    novel: bool
    similarity: float | None
    nearest: str | None
    nearest_expert: int | None = None  # expert of the most similar known skill (a novel skill's expert starts from it)
    phases_done: list[str] = field(default_factory=list)
    checkpoint: str | None = None  # final checkpoint of the last finished phase
    step_offset: int = 0  # global steps of the whole sequence before this skill


@dataclass
class ContinualState:
    skills: list[str]
    current: int = 0  # index of the skill being learned (== len(skills) when done)
    records: list[SkillRecord] = field(default_factory=list)
    num_experts: int = 0  # size of the pool in the newest finished checkpoint
    last_checkpoint: str | None = None  # newest finished phase checkpoint
    total_steps: int = 0  # optimizer steps of all finished phases

    @property
    def done(self) -> bool:
        return self.current >= len(self.skills)

    def save(self, directory: str | Path) -> Path:
        return atomic_write_text(Path(directory) / CONTINUAL_STATE_NAME, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "ContinualState":
        data = json.loads((Path(directory) / CONTINUAL_STATE_NAME).read_text())
        records = [SkillRecord(**r) for r in data.pop("records", [])]
        return cls(**data, records=records)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / CONTINUAL_STATE_NAME).is_file()
