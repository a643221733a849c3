"""The novelty detector on the embedded tiny base: two stdlib skill groups are told apart, and a skill is not
novel against a disjoint sample of itself (embeddings centred on the whole stdlib set, as in continual runs)."""

from __future__ import annotations

import pytest

from dylora_moe.continual.embedding import dataset_embedding
from dylora_moe.continual.library import SkillLibrary
from dylora_moe.data.config import DataConfig
from dylora_moe.data.pipeline import build_datasets
from dylora_moe.model.loading import load_base_model


@pytest.mark.slow
def test_stdlib_groups_are_novel_and_a_disjoint_sample_is_known():
    model, tokenizer = load_base_model("tiny", log=lambda m: None)
    pad = tokenizer.pad_token_id

    def data(spec):
        return build_datasets(DataConfig(datasets=spec, max_seq_length=128, max_examples_per_dataset=120,
                                         eval_fraction=0.5), tokenizer)

    library = SkillLibrary(threshold=0.75)
    library.reference = dataset_embedding(model, data("stdlib").train, pad, sample=32, seed=0)
    math = data("stdlib:math")
    library.add("stdlib:math", 0, library.centred(dataset_embedding(model, math.train, pad, sample=32, seed=0)))

    same = library.decide(library.centred(dataset_embedding(model, math.eval, pad, sample=32, seed=1)))
    assert (same.novel, same.nearest, same.expert) == (False, "stdlib:math", 0), same

    net = data("stdlib:net")
    other = library.decide(library.centred(dataset_embedding(model, net.train, pad, sample=32, seed=0)))
    assert other.novel and other.similarity < 0.0, other
    print(f"stdlib:math vs a disjoint sample of itself {same.similarity:.3f}, stdlib:net vs stdlib:math "
          f"{other.similarity:.3f}")
    assert same.similarity - other.similarity > 0.5
