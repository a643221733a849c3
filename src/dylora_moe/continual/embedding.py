"""Skill embeddings: the mean of the base model's final (normed) hidden states over a sample of a skill's texts.

Computed with the experts' contribution switched off, so the embedding of a skill does not drift as experts
learn: the library compares skills in the frozen base's representation space only.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def experts_bypassed(model) -> Iterator[None]:
    """Zero every adapted layer's LoRA scaling for the duration (exact: the delta is multiplied by 0)."""
    layers = [layer for _, layer in model.adapted_layers()] if hasattr(model, "adapted_layers") else []
    saved = [layer.scaling for layer in layers]
    try:
        for layer in layers:
            layer.scaling = 0.0
        yield
    finally:
        for layer, scaling in zip(layers, saved):
            layer.scaling = scaling


def _inner_model(model):
    """The decoder stack (LlamaModel, GPT2Model, ...) whose `last_hidden_state` is already layer-normed."""
    causal_lm = model.base_model if hasattr(model, "adapted_layers") else model
    return getattr(causal_lm, "base_model", causal_lm)


def sample_indices(size: int, sample: int, seed: int) -> list[int]:
    """A seeded sample of row indices (all rows, in order, when the set is smaller than `sample`)."""
    if size <= sample:
        return list(range(size))
    return sorted(random.Random(seed).sample(range(size), sample))


@torch.no_grad()
def skill_sample(model, input_ids: list[list[int]], pad_token_id: int,
                 batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the sum of its final normed hidden states (N, d) and its token count (N,), float32 on CPU.
    Kept per example so the novelty test can re-split a sample; `skill_embedding` is their token-weighted mean."""
    if not input_ids:
        raise ValueError("cannot embed a skill without examples")
    inner = _inner_model(model)
    device = next(inner.parameters()).device
    was_training = model.training
    model.eval()
    sums, counts = [], []
    try:
        with experts_bypassed(model):
            for start in range(0, len(input_ids), batch_size):
                rows = input_ids[start : start + batch_size]
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                    mask[i, : len(r)] = 1
                hidden = inner(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                sums.append((hidden.float() * mask.to(device).unsqueeze(-1)).sum(dim=1).cpu())
                counts.append(mask.sum(dim=1).float())
    finally:
        model.train(was_training)
    return torch.cat(sums), torch.cat(counts)


def skill_embedding(model, input_ids: list[list[int]], pad_token_id: int, batch_size: int = 8) -> torch.Tensor:
    """Token-weighted mean of the final normed hidden states over `input_ids` (float32, on CPU)."""
    sums, counts = skill_sample(model, input_ids, pad_token_id, batch_size=batch_size)
    return sums.sum(0) / counts.sum().clamp_min(1)


def _sample_rows(dataset, sample: int, seed: int) -> list[list[int]]:
    return [list(dataset[i]["input_ids"]) for i in sample_indices(len(dataset), sample, seed)]


def dataset_embedding(model, dataset, pad_token_id: int, sample: int = 64, seed: int = 0,
                      batch_size: int = 8) -> torch.Tensor:
    """`skill_embedding` over a seeded sample of a tokenized dataset's `input_ids`."""
    return skill_embedding(model, _sample_rows(dataset, sample, seed), pad_token_id, batch_size=batch_size)


def dataset_sample(model, dataset, pad_token_id: int, sample: int = 64, seed: int = 0,
                   batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """`skill_sample` over the same seeded sample as `dataset_embedding`."""
    return skill_sample(model, _sample_rows(dataset, sample, seed), pad_token_id, batch_size=batch_size)
