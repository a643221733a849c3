"""Is a new sample from a known skill? A permutation test on the difference of their mean hidden states.

A fixed cosine threshold holds for one base: how close two samples of the *same* skill come depends on the
base, the skill and the sample size (a disjoint sample of one skill scored 0.63 on one build, 0.81 on another).
The test calibrates itself from the data: it pools both samples' examples, re-splits them at random, and asks
how often a random split lies as far apart as the real one. Same skill: the real split is one random split
among others (p uniform, novel at rate `alpha`); another skill: few random splits come close (p at its floor).

Each example counts once, as the mean of its hidden states (long examples do not dominate), and the distance
is summed over dimensions in units of each dimension's pooled spread (a few high-variance directions would
otherwise drown the rest). No reference corpus is needed: a difference of means does not depend on the centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PERMUTATIONS = 999


@dataclass
class SampleTest:
    p_value: float  # share of random re-splits at least as far apart as the real one (with the real one counted)
    distance_ratio: float  # real distance / the random splits' mean: ~1 same skill, >1 another


@torch.no_grad()
def same_skill_test(a_sums: torch.Tensor, a_counts: torch.Tensor, b_sums: torch.Tensor, b_counts: torch.Tensor,
                    permutations: int = PERMUTATIONS, seed: int = 0) -> SampleTest:
    """Two samples, each given as per-example hidden-state sums (N, d) and token counts (N,)."""
    examples = torch.cat([a_sums / a_counts.clamp_min(1).unsqueeze(-1),
                          b_sums / b_counts.clamp_min(1).unsqueeze(-1)]).double()
    examples = examples / examples.std(dim=0).clamp_min(1e-12)  # pooled: the same for every split
    n_a, n = len(a_sums), len(examples)
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(permutations, n, generator=generator).argsort(dim=1)
    member = torch.zeros(permutations + 1, n, dtype=torch.float64)
    member[0, :n_a] = 1  # the real split first
    member[1:].scatter_(1, order[:, :n_a], 1.0)
    inside = member @ examples / n_a
    outside = (1 - member) @ examples / (n - n_a)
    distances = (inside - outside).pow(2).sum(-1)
    observed, null = distances[0], distances[1:]
    p_value = (1 + int((null >= observed).sum())) / (1 + permutations)
    return SampleTest(p_value=p_value, distance_ratio=float(observed / null.mean().clamp_min(1e-30)))
