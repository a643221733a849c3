"""A fingerprint of the frozen base's weights, saved with every adapter and checked when one is loaded.

The adapter is only meaningful on the weights it was trained on. The base's *name* is not enough: a local
directory can be rebuilt with other weights under the same name, and a hub id can move to new weights (the
embedded `tiny` base is shipped and sha256-checked, so it is the same everywhere). The fingerprint is a hash of the parameter names and shapes plus, for eight groups of
weight matrices, a fixed random-sign sum of a sample of the values and that sample's norm. Two different weight
sets give sums that differ by about the norm (|N(0, 2)| in units of it); the same weights rounded to bf16/fp16
differ by well under 1% of it, so the check tolerates 5% of the norm: the same base in another dtype matches,
other weights do not.

A quantized base is fingerprinted on its dequantized weights (in the unquantized layout), so a checkpoint moves
between the same base quantized and not. 8-bit rounding moves the sums by under 2% of the norm, like bf16;
NF4 moves them by up to ~30% (measured, see QUANTIZED_TOLERANCE), so a comparison where either side is
4-bit tolerates more; other weights still differ by about the norm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from dylora_moe.model.quantization import dequantized_weight, describe, is_quantized_linear, weight_shape

SAMPLES_PER_TENSOR = 256
GROUPS = 8
TOLERANCE = 0.05  # of the sample's norm
# NF4's rounding error is ~9% of a weight's scale, so each group's signed sum moves by about |N(0, 0.09^2)| of its
# norm. Measured (max over the 8 groups, fp32 vs 4-bit): up to 0.27 on 20 random micro Llamas, 0.30 on the
# trained tiny base; two different random bases: at least 0.89 (190 pairs). 0.5 sits between the two with room
# on both sides (other weights pass all 8 groups with probability P(|N(0,2)| < 0.5)^8 ~ 3e-5); 8-bit moved the
# sums by at most 0.018 and keeps the 5% tolerance.
QUANTIZED_TOLERANCE = {"bnb-4bit": 0.5}

Entry = tuple[str, tuple[int, ...], Callable[[], torch.Tensor]]


def _original_name(name: str) -> str:
    return name.replace(".base.weight", ".weight").replace(".base.bias", ".bias")


def _base_parameters(model: torch.nn.Module) -> list[Entry]:
    """The base's own parameters under their original names, whether or not experts are injected (an adapted
    projection keeps the original Linear as `.base`; its lora_A/lora_B are not the base's), as (name, shape,
    values); a quantized layer's weight is given dequantized, in its original shape."""
    quantized = {f"{name}.weight": module for name, module in model.named_modules() if is_quantized_linear(module)}
    params: list[Entry] = []
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        module = quantized.get(name)
        if module is not None:
            params.append((_original_name(name), weight_shape(module), lambda m=module: dequantized_weight(m)))
        else:
            params.append((_original_name(name), tuple(param.shape), lambda p=param: p.detach()))
    return sorted(params, key=lambda item: item[0])


@torch.no_grad()
def base_fingerprint(model: torch.nn.Module) -> dict:
    """{"shapes": hash of names and shapes, "values": GROUPS signed sums, "norms": their samples' norms}, plus
    "quantization" (e.g. "bnb-4bit") for a quantized base."""
    params = _base_parameters(model)
    shapes = hashlib.sha256("\n".join(f"{n}:{shape}" for n, shape, _ in params).encode()).hexdigest()[:16]
    sums, squares = [0.0] * GROUPS, [0.0] * GROUPS
    signs = torch.randint(0, 2, (SAMPLES_PER_TENSOR,), generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0
    matrices = [values for _, shape, values in params if len(shape) >= 2]  # norms' gains (~1) would only add noise
    for i, values in enumerate(matrices):
        flat = values().reshape(-1)
        sample = flat[:: max(flat.numel() // SAMPLES_PER_TENSOR, 1)][:SAMPLES_PER_TENSOR].float().cpu()
        sums[i % GROUPS] += float((sample * signs[: sample.numel()]).sum())
        squares[i % GROUPS] += float(sample.pow(2).sum())
    fingerprint = {"shapes": shapes, "values": [round(v, 6) for v in sums],
                   "norms": [round(q**0.5, 6) for q in squares]}
    quantization = describe(model)
    if quantization is not None:
        fingerprint["quantization"] = quantization["method"]
    return fingerprint


def tolerance(saved: dict, current: dict) -> float:
    """The tolerance of a comparison: the widest either side's quantization needs."""
    return max(QUANTIZED_TOLERANCE.get(fp.get("quantization"), TOLERANCE) for fp in (saved, current))


def same_base(saved: dict, current: dict) -> bool:
    if not saved or not current:
        return True  # adapters saved before fingerprints existed
    if saved.get("shapes") != current.get("shapes"):
        return False
    allowed = tolerance(saved, current)
    pairs = zip(saved.get("values", []), current.get("values", []), saved.get("norms", []))
    return all(abs(a - b) <= allowed * max(norm, 1e-12) for a, b, norm in pairs)
