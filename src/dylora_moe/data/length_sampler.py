"""`SeededLengthGroupedSampler`: batches of similar lengths, in an order fixed by (seed, epoch, global batch).

Why not transformers' `LengthGroupedSampler` as is: it draws its permutation from the global torch RNG when
iterated, so where a resumed run restores that RNG decides the order. Here the order of an epoch depends on
the seed and the epoch number alone (the Trainer calls `set_epoch`), so a run resumed mid-epoch sees the same
order and skips the same samples; the data position stays in samples, as for random order.

The groups are cut to the global batch (samples per optimizer step), not the per-device batch: how that batch
is split into micro-batches and processes (4x1 or 2x2) then changes nothing in the order, so a resume with
another split but the same global batch neither revisits nor skips a sample. Each optimizer step's samples
are consecutive in a length-sorted mega-batch, so its micro-batches stay of similar lengths.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class SeededLengthGroupedSampler(Sampler[int]):
    """Random mega-batches sorted by length (transformers' grouping over global batches), seeded per epoch."""

    def __init__(self, lengths: list[int], global_batch: int, seed: int):
        self.lengths = list(lengths)
        self.global_batch = global_batch  # per-device batch x gradient accumulation x world size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.global_batch, generator=generator))
