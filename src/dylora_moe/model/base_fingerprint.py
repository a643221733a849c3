"""A fingerprint of the frozen base's weights, saved with every adapter and checked when one is loaded.

The adapter is only meaningful on the weights it was trained on. The base's *name* is not enough: a local
directory can be rebuilt with other weights under the same name, and a hub id can move to new weights (the
embedded `tiny` base is shipped and sha256-checked, so it is the same everywhere). The fingerprint is a hash of the parameter names and shapes plus, for eight groups of
weight matrices, a fixed random-sign sum of a sample of the values and that sample's norm. Two different weight
sets give sums that differ by about the norm; the same weights rounded to bf16/fp16 differ by well under 1% of
it, so the check tolerates 5% of the norm: the same base in another dtype matches, other weights do not.
"""

from __future__ import annotations

import hashlib

import torch

SAMPLES_PER_TENSOR = 256
GROUPS = 8
TOLERANCE = 0.05  # of the sample's norm


def _base_parameters(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The base's own parameters under their original names, whether or not experts are injected (an adapted
    projection keeps the original Linear as `.base`; its lora_A/lora_B are not the base's)."""
    params = []
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        params.append((name.replace(".base.weight", ".weight").replace(".base.bias", ".bias"), param))
    return sorted(params, key=lambda item: item[0])


@torch.no_grad()
def base_fingerprint(model: torch.nn.Module) -> dict:
    """{"shapes": hash of names and shapes, "values": GROUPS signed sums, "norms": their samples' norms}."""
    params = _base_parameters(model)
    shapes = hashlib.sha256("\n".join(f"{n}:{tuple(p.shape)}" for n, p in params).encode()).hexdigest()[:16]
    sums, squares = [0.0] * GROUPS, [0.0] * GROUPS
    signs = torch.randint(0, 2, (SAMPLES_PER_TENSOR,), generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0
    matrices = [p for _, p in params if p.dim() >= 2]  # norms' gains (mostly ~1 everywhere) would only add noise
    for i, p in enumerate(matrices):
        flat = p.detach().reshape(-1)
        sample = flat[:: max(flat.numel() // SAMPLES_PER_TENSOR, 1)][:SAMPLES_PER_TENSOR].float().cpu()
        sums[i % GROUPS] += float((sample * signs[: sample.numel()]).sum())
        squares[i % GROUPS] += float(sample.pow(2).sum())
    return {"shapes": shapes, "values": [round(v, 6) for v in sums], "norms": [round(q**0.5, 6) for q in squares]}


def same_base(saved: dict, current: dict) -> bool:
    if not saved or not current:
        return True  # adapters saved before fingerprints existed
    if saved.get("shapes") != current.get("shapes"):
        return False
    pairs = zip(saved.get("values", []), current.get("values", []), saved.get("norms", []))
    return all(abs(a - b) <= TOLERANCE * max(norm, 1e-12) for a, b, norm in pairs)
