"""Held-out loss of a model on a tokenized dataset: the forgetting measurement reads it before and after."""

from __future__ import annotations

import torch

from dylora_moe.data.collator import CausalLMCollator


def eval_loss(model, dataset, pad_token_id: int, batch_size: int = 8) -> float:
    """Mean next-token loss per scored token over the whole dataset."""
    return eval_metrics(model, dataset, pad_token_id, batch_size)["loss"]


@torch.no_grad()
def eval_metrics(model, dataset, pad_token_id: int, batch_size: int = 8) -> dict:
    """Token-weighted mean loss and per-expert routing usage (which experts this data is routed to)."""
    collate = CausalLMCollator(pad_token_id)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    usage = None
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            scored = int((batch["labels"][:, 1:] != -100).sum())
            total += float(out.lm_loss_per_token) * scored
            count += scored
            if out.expert_usage is not None:
                weighted = out.expert_usage.float().cpu() * scored
                usage = weighted if usage is None else usage + weighted
    finally:
        model.train(was_training)
    return {"loss": total / max(count, 1),
            "usage": [round(u, 4) for u in (usage / max(count, 1)).tolist()] if usage is not None else []}
