"""The trainer-side state that HF's `TrainerState` does not carry, saved as `dylora_state.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

DYLORA_STATE_NAME = "dylora_state.json"


@dataclass
class EarlyStoppingState:
    best_metric: float | None = None
    counter: int = 0  # evaluations without improvement since the best
    stopped: bool = False


@dataclass
class DyLoRATrainingState:
    data_position: dict = field(default_factory=dict)  # resume_plan.DataPosition as a dict
    early_stopping: EarlyStoppingState = field(default_factory=EarlyStoppingState)
    maturity_step: int | None = None  # step at which all experts are marked mature
    extra: dict = field(default_factory=dict)  # room for continual learning etc.

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / DYLORA_STATE_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "DyLoRATrainingState":
        data = json.loads((Path(directory) / DYLORA_STATE_NAME).read_text())
        return cls(
            data_position=data.get("data_position", {}),
            early_stopping=EarlyStoppingState(**data.get("early_stopping", {})),
            maturity_step=data.get("maturity_step"),
            extra=data.get("extra", {}),
        )
