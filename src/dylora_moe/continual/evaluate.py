"""Held-out loss of a model on a tokenized dataset: the forgetting measurement reads it before and after."""

from __future__ import annotations

import torch

from dylora_moe.data.collator import CausalLMCollator


@torch.no_grad()
def eval_loss(model, dataset, pad_token_id: int, batch_size: int = 8) -> float:
    """Mean next-token loss per scored token over the whole dataset."""
    collate = CausalLMCollator(pad_token_id)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            scored = int((batch["labels"][:, 1:] != -100).sum())
            total += float(out.lm_loss_per_token) * scored
            count += scored
    finally:
        model.train(was_training)
    return total / max(count, 1)
