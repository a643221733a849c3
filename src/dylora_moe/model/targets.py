"""Which projections get experts, and which of them share one router.

By default the experts sit on the attention's input projections, read from the model itself: the Linear
children of its first attention module, either its fused qkv projection or its query and value projections.
`KNOWN_TARGETS` is the fallback for an architecture whose attention module this cannot read.

Projections that read the same tensor (q/k/v of an attention block, gate/up of a gated MLP) share one gate:
the routing decision is made once per token and input, not once per projection.
"""

from __future__ import annotations

import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from dylora_moe.errors import UserError
from dylora_moe.model.quantization import quantized_shape

# what each architecture's attention calls its input projections (first name present wins)
FUSED_QKV_NAMES = ("qkv_proj", "c_attn", "query_key_value", "Wqkv", "W_pack")
# MLA (DeepSeek-V2/V3): q_a_proj is the query's down-projection when q_lora_rank is set (else q_proj), and
# kv_a_proj_with_mqa the joint key/value down-projection; both read the hidden state, like q_proj and v_proj
QUERY_NAMES = ("q_proj", "query", "q", "wq", "q_a_proj")
VALUE_NAMES = ("v_proj", "value", "v", "wv", "kv_a_proj_with_mqa")

# model type -> targets, for attention modules `attention_targets` cannot read (it finds these for all of them)
KNOWN_TARGETS: dict[str, list[str]] = {
    **{t: ["q_proj", "v_proj"] for t in ("llama", "mistral", "mixtral", "gemma", "gemma2", "gemma3_text", "qwen2",
                                         "qwen3", "qwen2_moe", "qwen3_moe", "starcoder2")},
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "falcon": ["query_key_value"],
    "deepseek_v2": ["q_proj", "q_a_proj", "kv_a_proj_with_mqa"],  # q_proj or q_a_proj, whichever exists
    "deepseek_v3": ["q_proj", "q_a_proj", "kv_a_proj_with_mqa"],
}
LISTED_LAYER_NAMES = 20  # at most this many Linear layer names in an error line

# leaf name -> shared-input group name (same parent module + same group = same input tensor)
SHARED_INPUT_GROUPS: dict[str, str] = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "q_a_proj": "attn_in",
    "kv_a_proj_with_mqa": "attn_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
}


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


def _linear_children(module: nn.Module) -> dict[str, nn.Module]:
    return {name: child for name, child in module.named_children() if linear_shape(child) is not None}


def first_attention_module(model: nn.Module) -> nn.Module | None:
    """The first module named like an attention block (LlamaAttention, GPT2Attention, ...) with Linear children."""
    return next((module for _, module in model.named_modules()
                 if "attention" in type(module).__name__.lower() and _linear_children(module)), None)


def attention_targets(model: nn.Module) -> list[str] | None:
    """The input projections of the model's first attention module: its fused qkv projection, else its query
    and value projections when both read the same input; None when it has neither."""
    attention = first_attention_module(model)
    if attention is None:
        return None
    children = _linear_children(attention)
    fused = next((name for name in FUSED_QKV_NAMES if name in children), None)
    if fused is not None:
        return [fused]
    query = next((name for name in QUERY_NAMES if name in children), None)
    value = next((name for name in VALUE_NAMES if name in children), None)
    if query is None or value is None or linear_shape(children[query])[0] != linear_shape(children[value])[0]:
        return None
    return [query, value]


def default_targets(model: nn.Module, model_type: str) -> list[str]:
    """The projections to adapt when none are given: read from the model's attention, else `KNOWN_TARGETS`."""
    found = attention_targets(model)
    if found is None and find_targets(model, KNOWN_TARGETS.get(model_type, [])):
        found = list(KNOWN_TARGETS[model_type])
    if found is None:
        raise UserError(f"found no query/value or fused qkv projection in this {model_type or 'model'}'s attention "
                        f"to adapt by default; pass --target_modules with some of its Linear layers: "
                        f"{linear_layer_names(model)}")
    return found


def linear_layer_names(model: nn.Module, limit: int = LISTED_LAYER_NAMES) -> str:
    """The model's Linear layer leaf names, deduplicated in model order, at most `limit` of them."""
    names = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                               if name and linear_shape(module) is not None))
    listed = ",".join(names[:limit])
    return listed + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


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
