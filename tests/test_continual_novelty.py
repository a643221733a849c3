"""The same-skill permutation test and the library's decisions by it (synthetic samples, exact seams)."""

from __future__ import annotations

import pytest
import torch

from dylora_moe.continual.config import ContinualConfig
from dylora_moe.continual.library import SkillLibrary
from dylora_moe.continual.novelty_test import PERMUTATIONS, same_skill_test
from dylora_moe.errors import UserError

DIM = 16


def _sample(mean: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example hidden-state sums and token counts of `n` examples around `mean` (token counts vary)."""
    counts = torch.randint(5, 40, (n,), generator=generator).float()
    per_token = mean + torch.randn(n, DIM, generator=generator)
    return per_token * counts.unsqueeze(-1), counts


def test_same_distribution_is_kept_at_about_alpha_and_another_is_rejected():
    generator = torch.Generator().manual_seed(0)
    centre, shifted = torch.zeros(DIM), torch.zeros(DIM)
    shifted[:4] = 1.5  # 1.5 standard deviations along 4 axes of 16
    same, other = [], []
    for _ in range(40):
        a = _sample(centre, 32, generator)
        same.append(same_skill_test(*a, *_sample(centre, 32, generator)))
        other.append(same_skill_test(*a, *_sample(shifted, 32, generator)))
    rejected = sum(t.p_value < 0.05 for t in same)
    assert rejected <= 8, [t.p_value for t in same]  # expected 2 of 40 at alpha 0.05
    assert all(t.p_value == 1 / (1 + PERMUTATIONS) for t in other), [t.p_value for t in other]
    mean_ratio_same = sum(t.distance_ratio for t in same) / len(same)
    assert 0.5 < mean_ratio_same < 1.5 and min(t.distance_ratio for t in other) > 2 * mean_ratio_same


def test_identical_samples_are_the_same_skill_and_the_test_is_seeded():
    a = _sample(torch.zeros(DIM), 16, torch.Generator().manual_seed(1))
    assert same_skill_test(*a, *a).p_value == 1.0
    b = _sample(torch.zeros(DIM), 16, torch.Generator().manual_seed(2))
    assert same_skill_test(*a, *b) == same_skill_test(*a, *b)


def test_library_decides_by_the_test_and_keeps_samples_through_save_and_load(tmp_path):
    generator = torch.Generator().manual_seed(3)
    means = {"a": torch.zeros(DIM), "b": torch.full((DIM,), 0.5), "new": torch.full((DIM,), -0.5)}
    library = SkillLibrary(alpha=0.01)
    for expert, name in enumerate(("a", "b")):
        sample = _sample(means[name], 32, generator)
        library.add(name, expert, sample[0].sum(0) / sample[1].sum(), sample)
    probe_b, probe_new = _sample(means["b"], 32, generator), _sample(means["new"], 32, generator)

    def decide(lib, probe):
        return lib.decide(probe[0].sum(0) / probe[1].sum(), probe)

    known = decide(library, probe_b)
    assert (known.novel, known.nearest, known.expert) == (False, "b", 1) and known.p_value >= 0.01
    novel = decide(library, probe_new)
    assert novel.novel and novel.p_value == 1 / (1 + PERMUTATIONS)
    library.save(tmp_path)
    back = SkillLibrary.load(tmp_path)
    assert (back.alpha, back.threshold, sorted(back.samples)) == (0.01, None, ["a", "b"])
    assert decide(back, probe_b) == known and decide(back, probe_new) == novel
    back.threshold = -1.0  # a fixed threshold, when set, decides instead of the test
    forced = decide(back, probe_new)
    assert (forced.novel, forced.p_value) == (False, None)


def test_alpha_must_be_a_level():
    with pytest.raises(UserError) as info:
        ContinualConfig(skills="stdlib:text", novelty_alpha=1.0).check()
    assert str(info.value) == "--novelty_alpha is a significance level in (0, 1), got 1.0"
