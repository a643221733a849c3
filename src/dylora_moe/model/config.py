"""The adapter's configuration: everything needed to rebuild the experts on a freshly loaded base."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

ADAPTER_CONFIG_NAME = "dylora_config.json"


@dataclass
class DyLoRAConfig:
    """Hyper-parameters of the LoRA experts and their router.

    `target_modules=None` picks the architecture's default (see `targets.py`). `init_lora_b_std` is not zero
    (unlike PEFT's LoRA) so that every expert and every gate receive a gradient from the first step: with all
    B = 0 the router's gradient is exactly zero and experts other than the first can stay untrained.
    """

    num_experts: int = 4
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None
    top_k: int = 1
    router_temperature: float = 1.0
    router_input: str = "token"  # "token" or "context" (causal running mean of the sequence; see router.py)
    balance_coefficient: float = 0.01
    init_lora_b_std: float = 1e-3
    init_gate_std: float = 0.02
    base_model: str = ""
    base_model_revision: str | None = None
    base_fingerprint: dict = field(default_factory=dict)  # of the weights it was trained on (base_fingerprint.py)
    model_type: str = ""
    format_version: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.lora_r

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DyLoRAConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / ADAPTER_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "DyLoRAConfig":
        return cls.from_dict(json.loads((Path(directory) / ADAPTER_CONFIG_NAME).read_text()))
