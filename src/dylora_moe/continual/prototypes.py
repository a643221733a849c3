"""Routing prototypes: what each router read on a learned skill, kept so later skills cannot steal its routing.

When a skill is finished, every router's gate input (a causal running mean of the sequence under `context` or
`sequence` routing) is recorded at the first and at evenly spaced positions of a sample of the skill's examples.
While a later skill trains, `Router.prototype_loss` keeps those inputs routed to the skill's expert — a replay
of gate inputs, not of data. Without it nothing tells the gates that earlier contexts exist, and the new
expert's gate row rises on them too (on the tiny base, 53% of the first skill's routing went to the second
skill's expert).
"""

from __future__ import annotations

import torch

from dylora_moe.continual.embedding import sample_indices

POSITIONS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)  # quantiles of each example's positions
SHARED = "all"  # the key of prototypes that every router shares (router_input="sequence": one gate input for all)
LEADING = 8  # and its first positions: the prompt template every skill shares, whose keys/values every later
# token attends to (routing them to a new expert moved the first skill's loss even at 97% routing kept)


@torch.no_grad()
def collect_prototypes(model, dataset, sample: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Router key -> (N, d) gate inputs at `POSITIONS` of up to `sample` examples (float32, CPU); one entry
    under `SHARED` when every router reads the same input."""
    keys = {id(router): key for key, router in model.routers.items()}
    shared = model.dylora_config.router_input == "sequence"  # every gate reads one tensor: record it once
    device = next(model.parameters()).device
    collected: dict[str, list[torch.Tensor]] = {key: [] for key in keys.values()}
    was_training = model.training
    model.eval()
    try:
        for index in sample_indices(len(dataset), sample, seed):
            row = dataset[index]
            labels = torch.as_tensor(row["labels"])
            if not bool((labels != -100).any()):
                continue
            picks = sorted({round(q * (labels.numel() - 1)) for q in POSITIONS} | set(range(min(LEADING, labels.numel()))))
            captured: dict[int, list[torch.Tensor]] = {}
            ids = torch.as_tensor(row["input_ids"]).reshape(1, -1).to(device)
            with model.routing_pass(capture=captured):
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
            for router_id, inputs in captured.items():
                collected[keys[router_id]].append(inputs[0][0, picks].float().cpu())
                if shared:
                    break
    finally:
        model.train(was_training)
    prototypes = {key: torch.cat(rows) for key, rows in collected.items() if rows}
    if shared and prototypes:
        return {SHARED: next(iter(prototypes.values()))}
    return prototypes


def set_routing_prototypes(model, prototypes: list[tuple[int, dict[str, torch.Tensor]]], weight: float) -> int:
    """Install (expert, {router key: inputs}) pairs as the model's routing prototypes; returns how many inputs
    each router holds (0: none, the loss is off)."""
    per_router: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for expert, by_router in prototypes:
        if SHARED in by_router:
            by_router = {key: by_router[SHARED] for key in model.routers}
        for key, inputs in by_router.items():
            rows, experts = per_router.setdefault(key, ([], []))
            rows.append(inputs)
            experts.append(torch.full((inputs.shape[0],), expert, dtype=torch.long))
    model.routing_prototypes = {key: (torch.cat(rows), torch.cat(experts)) for key, (rows, experts) in per_router.items()}
    model.weight_loss_term("routing_prototype_loss", weight if model.routing_prototypes else 0.0)
    return next(iter(model.routing_prototypes.values()))[0].shape[0] if model.routing_prototypes else 0
