"""Where in the data a resumed run starts, and how many steps it now plans.

The checkpoint records the data position in samples (epoch, samples consumed in that epoch, global batch),
not in steps, so a run resumed with another world size, batch size or gradient accumulation continues at the
right sample; only an unchanged set-up continues bit for bit. A changed dataset starts its epochs afresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DataPosition:
    """Saved in `dylora_state.json` at every checkpoint."""

    global_step: int
    epoch: int  # 0-based epoch in progress (or about to start)
    samples_in_epoch: int  # samples of `epoch` already consumed
    global_batch: int  # samples per optimizer step (per-device batch x grad accumulation x world size)
    steps_per_epoch: int
    num_examples: int
    dataset_fingerprint: str
    world_size: int
    grad_accum: int = 0  # micro-batches per optimizer step (0: a checkpoint from before it was recorded)

    @classmethod
    def from_dict(cls, data: dict) -> "DataPosition":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class DataLayout:
    """How the new command walks the training set; the resume plan and the position tracker both read it."""

    num_examples: int
    global_batch: int  # samples per optimizer step (per-device batch x grad accumulation x world size)
    grad_accum: int
    steps_per_epoch: int
    dataset_fingerprint: str
    world_size: int

    @classmethod
    def of(cls, num_examples: int, *, batch: int, grad_accum: int, world_size: int, fingerprint: str) -> "DataLayout":
        """HF's own count of optimizer steps per epoch (the last, short accumulation window counts)."""
        len_dataloader = math.ceil(num_examples / (batch * world_size))
        steps = max(len_dataloader // grad_accum + int(len_dataloader % grad_accum > 0), 1)
        return cls(num_examples, batch * grad_accum * world_size, grad_accum, steps, fingerprint, world_size)


@dataclass
class ResumePlan:
    epochs_trained: int
    steps_in_epoch: int  # optimizer steps of the current epoch already done (the position tracker counts on)
    batches_to_skip: int  # the same, in micro-batches (what HF's data skip takes)
    max_steps: int  # total optimizer steps of the whole run, past steps included
    exact: bool
    dataset_changed: bool
    message: str


def plan_resume(saved: DataPosition, layout: DataLayout, *, num_epochs: float, max_steps: int) -> ResumePlan:
    """Plan the continuation of `saved` under the new command's settings."""
    step, steps_per_epoch, global_batch = saved.global_step, layout.steps_per_epoch, layout.global_batch
    dataset_fingerprint, world_size = layout.dataset_fingerprint, layout.world_size
    if dataset_fingerprint != saved.dataset_fingerprint:
        total = max_steps if max_steps > 0 else step + math.ceil(num_epochs * steps_per_epoch)
        return ResumePlan(
            0, 0, 0, total, exact=False, dataset_changed=True,
            message=(
                f"training data changed (fingerprint {saved.dataset_fingerprint[:12]} -> {dataset_fingerprint[:12]}): "
                f"no mid-epoch data skipping; epochs restart on the new data from step {step}"
            ),
        )
    same_layout = global_batch == saved.global_batch and steps_per_epoch == saved.steps_per_epoch
    samples = saved.samples_in_epoch
    epochs_trained = saved.epoch
    steps_into_epoch = samples // global_batch if global_batch else 0
    if steps_into_epoch >= steps_per_epoch:
        epochs_trained, steps_into_epoch = epochs_trained + 1, 0
    if max_steps > 0:
        total = max_steps
    else:
        remaining_epochs = num_epochs - epochs_trained
        total = step + max(0, math.ceil(remaining_epochs * steps_per_epoch) - steps_into_epoch)
    same_split = saved.grad_accum in (0, layout.grad_accum)  # unrecorded: as before, taken as unchanged
    exact = same_layout and world_size == saved.world_size and same_split
    message = (
        f"resuming at step {step}, epoch {epochs_trained}, batch {steps_into_epoch}/{steps_per_epoch} of the epoch"
    )
    if not (same_layout and world_size == saved.world_size):
        message += (
            f"; world size {saved.world_size}->{world_size}, global batch {saved.global_batch}->{global_batch}: "
            "data position recomputed in samples, the continuation is no longer bitwise exact"
        )
    elif not same_split:
        message += (
            f"; per-device batch x accumulation {_split(saved.global_batch, saved.grad_accum, world_size)}->"
            f"{_split(global_batch, layout.grad_accum, world_size)} with the same global batch: the same samples "
            "in the same steps, but other micro-batches, so the continuation is not bitwise exact"
        )
    return ResumePlan(epochs_trained, steps_into_epoch, steps_into_epoch * layout.grad_accum, total, exact, False,
                      message)


def _split(global_batch: int, grad_accum: int, world_size: int) -> str:
    """'4x1': per-device batch x gradient accumulation."""
    return f"{global_batch // (grad_accum * world_size)}x{grad_accum}"
