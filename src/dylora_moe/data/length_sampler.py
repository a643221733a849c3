"""`SeededLengthGroupedSampler`: batches of similar lengths, in an order fixed by (seed, epoch).

Why not transformers' `LengthGroupedSampler` as is: it draws its permutation from the global torch RNG when
iterated, so where a resumed run restores that RNG decides the order. Here the order of an epoch depends on
the seed and the epoch number alone (the Trainer calls `set_epoch`), so a run resumed mid-epoch sees the same
order and skips the same samples; the data position stays in samples, as for random order.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class SeededLengthGroupedSampler(Sampler[int]):
    """Random mega-batches sorted by length (transformers' grouping), seeded per epoch."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
