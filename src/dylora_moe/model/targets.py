"""Which projections get experts, and which of them share one router.

Projections that read the same tensor (q/k/v of an attention block, gate/up of a gated MLP) share one gate:
the routing decision is made once per token and input, not once per projection.
"""

from __future__ import annotations

import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from dylora_moe.model.quantization import quantized_shape

DEFAULT_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "gpt_bigcode": ["c_attn"],
}
FALLBACK_TARGETS = ["q_proj", "v_proj"]

# leaf name -> shared-input group name (same parent module + same group = same input tensor)
SHARED_INPUT_GROUPS: dict[str, str] = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
}


def default_targets(model_type: str) -> list[str]:
    return list(DEFAULT_TARGETS.get(model_type, FALLBACK_TARGETS))


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a Linear, a GPT-2 style Conv1D or a bitsandbytes 4/8-bit Linear, None for
    anything else."""
    quantized = quantized_shape(module)
    if quantized is not None:
        return quantized
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        in_features, out_features = module.weight.shape  # Conv1D stores weight as (in, out)
        return in_features, out_features
    return None


def find_targets(model: nn.Module, target_modules: list[str]) -> list[tuple[str, nn.Module]]:
    """All (qualified name, module) whose leaf name is in target_modules and that are Linear/Conv1D/quantized."""
    wanted = set(target_modules)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in wanted and linear_shape(module) is not None
    ]
    return found


def gate_key(qualified_name: str) -> str:
    """Name of the router a projection uses: its parent module plus its shared-input group."""
    parent, _, leaf = qualified_name.rpartition(".")
    group = SHARED_INPUT_GROUPS.get(leaf, leaf)
    return f"{parent}.{group}" if parent else group
