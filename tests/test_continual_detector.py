"""The novelty detector on the embedded tiny base: a disjoint sample of a known skill is known, other skills
are novel, and the same-skill distance sits well below the other skills' (relations, not one build's values)."""

from __future__ import annotations

import pytest

from dylora_moe.continual.embedding import dataset_sample
from dylora_moe.continual.library import SkillLibrary
from dylora_moe.continual.novelty_test import same_skill_test
from dylora_moe.data.config import DataConfig
from dylora_moe.data.pipeline import build_datasets
from dylora_moe.model.loading import load_base_model


@pytest.mark.slow
def test_a_disjoint_sample_of_a_skill_is_known_and_other_skills_are_novel(shared_data):
    model, tokenizer = load_base_model("tiny", log=lambda m: None)
    pad = tokenizer.pad_token_id

    def split(spec):
        return build_datasets(DataConfig(datasets=spec, max_seq_length=128, max_examples_per_dataset=240,
                                         eval_fraction=0.5), tokenizer)

    def mean(sample):
        return sample[0].sum(0) / sample[1].sum()

    library = SkillLibrary(alpha=0.01)
    library.reference = mean(dataset_sample(model, split("stdlib").train, pad, sample=64, seed=0))
    math = split("stdlib:math")
    known = dataset_sample(model, math.train, pad, sample=64, seed=0)
    library.add("stdlib:math", 0, library.centred(mean(known)), known)

    disjoint = dataset_sample(model, math.eval, pad, sample=64, seed=1)
    same = library.decide(library.centred(mean(disjoint)), disjoint)
    assert (same.novel, same.nearest, same.expert) == (False, "stdlib:math", 0), same

    others = {spec: dataset_sample(model, split(spec).train, pad, sample=64, seed=0)
              for spec in ("stdlib:net", f"code_alpaca={shared_data / 'code_alpaca_2k.json'}")}
    for spec, sample in others.items():
        decision = library.decide(library.centred(mean(sample)), sample)
        assert decision.novel and decision.p_value < library.alpha, (spec, decision)
    same_ratio = same_skill_test(*known, *disjoint).distance_ratio
    other_ratios = [same_skill_test(*known, *sample).distance_ratio for sample in others.values()]
    print(f"distance ratio: stdlib:math vs a disjoint sample {same_ratio:.2f}; others {other_ratios}")
    assert min(other_ratios) > 1.5 * same_ratio
