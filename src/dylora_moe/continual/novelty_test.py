"""Is a new sample from a known skill? A permutation test on the difference of their mean hidden states.

A fixed cosine threshold holds for one base: how close two samples of the *same* skill come depends on the
base, the skill and the sample size (a disjoint half of one skill scored 0.63 on one build, 0.81 on another).
The test calibrates itself from the data: it pools the per-example hidden-state sums of both samples, re-splits
them at random, and asks how often a random split lies as far apart as the real one. Same skill: the real split
is one random split among others (p uniform, novel at rate `alpha`); another skill: no random split comes close
(p at its floor). No reference corpus is needed: a difference of means does not depend on the centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PERMUTATIONS = 999


@dataclass
class SampleTest:
    p_value: float  # share of random re-splits at least as far apart as the real one (with the real one counted)
    distance_ratio: float  # real squared mean distance / the random splits' mean: ~1 same skill, >>1 another


def _group_means(sums: torch.Tensor, counts: torch.Tensor, member: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-weighted means of the rows in and out of each split (`member`: splits x rows, 0/1)."""
    inside = (member @ sums) / (member @ counts).unsqueeze(-1)
    outside = ((1 - member) @ sums) / ((1 - member) @ counts).unsqueeze(-1)
    return inside, outside


@torch.no_grad()
def same_skill_test(a_sums: torch.Tensor, a_counts: torch.Tensor, b_sums: torch.Tensor, b_counts: torch.Tensor,
                    permutations: int = PERMUTATIONS, seed: int = 0) -> SampleTest:
    """Two samples, each given as per-example hidden-state sums (N, d) and token counts (N,)."""
    sums = torch.cat([a_sums, b_sums]).double()
    counts = torch.cat([a_counts, b_counts]).double()
    n_a, n = len(a_sums), len(a_sums) + len(b_sums)
    real = torch.zeros(1, n, dtype=torch.float64)
    real[0, :n_a] = 1
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(permutations, n, generator=generator).argsort(dim=1)
    shuffled = torch.zeros(permutations, n, dtype=torch.float64).scatter_(1, order[:, :n_a], 1.0)
    inside, outside = _group_means(sums, counts, torch.cat([real, shuffled]))
    distances = (inside - outside).pow(2).sum(-1)
    observed, null = distances[0], distances[1:]
    p_value = (1 + int((null >= observed).sum())) / (1 + permutations)
    return SampleTest(p_value=p_value, distance_ratio=float(observed / null.mean().clamp_min(1e-30)))
