"""Training data: dataset registry, local files, the embedded stdlib miner, formatting, splits and mixing.

Public API (imported lazily so `import dylora_moe.data.config` stays light):
`DataConfig`, `build_datasets`, `PreparedData`, `CausalLMCollator`, `format_prompt`, `mine_stdlib`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataConfig": "dylora_moe.data.config",
    "build_datasets": "dylora_moe.data.pipeline",
    "PreparedData": "dylora_moe.data.pipeline",
    "CausalLMCollator": "dylora_moe.data.collator",
    "format_prompt": "dylora_moe.data.prompting",
    "mine_stdlib": "dylora_moe.data.stdlib_mining",
    "STDLIB_SKILLS": "dylora_moe.data.stdlib_mining",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dylora_moe.data' has no attribute '{name}'")
