"""The training loss, composed in one place: the LM loss plus weighted auxiliary terms.

A forward with labels returns the parts (`DyLoRAOutput.lm_loss` and the auxiliary losses it computed);
`DyLoRAMoEModel.loss_parts` pairs each auxiliary loss with its weight (the balance coefficient, and the weight of
any term registered with `DyLoRAMoEModel.weight_loss_term`, e.g. continual mode's routing terms). The model's
`.loss` and the trainer's loss are both `combine_loss` of those parts; they differ only in scaling, which the
trainer passes in (its LM loss is a share of a whole accumulated, possibly multi-process, batch).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def combine_loss(
    lm_loss: torch.Tensor,
    weighted_terms: Iterable[tuple[torch.Tensor | None, float]],
    lm_scale: float = 1,
    aux_divisor: float = 1,
) -> torch.Tensor:
    """`lm_loss * lm_scale + sum(weight * term / aux_divisor)` over the terms that exist and have a weight."""
    loss = lm_loss * lm_scale
    for term, weight in weighted_terms:
        if term is not None and weight:
            loss = loss + weight * term.to(loss.dtype) / aux_divisor
    return loss
