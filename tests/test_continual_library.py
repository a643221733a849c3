"""Skill library and novelty decisions: exact cosine decisions, save/load round trip, centring, config errors."""

from __future__ import annotations

import pytest
import torch
from micro import micro_moe

from dylora_moe.continual.callbacks import freeze_other_experts
from dylora_moe.continual.config import ContinualConfig
from dylora_moe.continual.embedding import experts_bypassed, skill_embedding
from dylora_moe.continual.library import SkillLibrary
from dylora_moe.errors import UserError


def test_decisions_follow_the_threshold_exactly():
    lib = SkillLibrary(threshold=0.75)
    first = lib.decide(torch.tensor([1.0, 0.0]))
    assert (first.novel, first.similarity, first.expert) == (True, None, None)
    lib.add("a", 0, torch.tensor([1.0, 0.0]))
    lib.add("b", 1, torch.tensor([0.0, 1.0]))
    near_b = lib.decide(torch.tensor([0.6, 0.8]))  # cos 0.6 to a, 0.8 to b
    assert (near_b.novel, round(near_b.similarity, 6), near_b.nearest, near_b.expert) == (False, 0.8, "b", 1)
    between = lib.decide(torch.tensor([1.0, 1.0]))  # cos 0.7071 to both
    assert between.novel and round(between.similarity, 4) == 0.7071


def test_centring_and_round_trip(tmp_path):
    lib = SkillLibrary(threshold=0.5, reference=torch.tensor([10.0, 10.0, 10.0]))
    assert lib.centred(torch.tensor([11.0, 10.0, 9.0])).tolist() == [1.0, 0.0, -1.0]
    lib.add("stdlib:text", 0, torch.tensor([1.0, 0.0, -1.0]))
    lib.add("mbpp", 1, torch.tensor([0.0, 2.0, 0.0]))
    lib.save(tmp_path)
    back = SkillLibrary.load(tmp_path)
    assert (back.names, back.experts, back.threshold) == (["stdlib:text", "mbpp"], [0, 1], 0.5)
    assert torch.equal(torch.stack(back.embeddings), torch.stack(lib.embeddings))
    assert torch.equal(back.reference, lib.reference)


def test_embedding_ignores_the_experts():
    model = micro_moe(num_experts=2, r=4)
    rows = [[5, 6, 7, 8, 9], [10, 11, 12]]
    before = skill_embedding(model, rows, pad_token_id=0)
    with torch.no_grad():
        for _, layer in model.adapted_layers():
            for b in layer.lora_B:
                b.add_(1.0)
    assert torch.equal(skill_embedding(model, rows, pad_token_id=0), before)
    with experts_bypassed(model):
        assert all(layer.scaling == 0.0 for _, layer in model.adapted_layers())
    assert all(layer.scaling != 0.0 for _, layer in model.adapted_layers())
    # padding does not enter the mean: one row alone equals itself padded next to a longer one
    alone = skill_embedding(model, [rows[1]], pad_token_id=0)
    assert torch.allclose(skill_embedding(model, [rows[1]] * 2, pad_token_id=0), alone, atol=1e-6)


def test_freeze_other_experts():
    model = micro_moe(num_experts=3, r=4)
    assert freeze_other_experts(model, 1) == 2
    flags = {e: {p.requires_grad for p in model.expert_parameters(e)} for e in range(3)}
    assert flags == {0: {False}, 1: {True}, 2: {False}}
    assert all(r.weight.requires_grad for r in model.routers.values())


@pytest.mark.parametrize("overrides, message", [
    (dict(skills=" , "), "--mode continual needs --skills, e.g. --skills stdlib:text,stdlib:math"),
    (dict(novelty_threshold=1.5), "--novelty_threshold is a cosine similarity in [-1, 1], got 1.5"),
    (dict(seed_steps=-1), "--seed_steps must be 0 or more, got -1"),
    (dict(prototype_routing=-0.5), "--prototype_routing is a loss weight, 0 or more, got -0.5"),
])
def test_config_errors(overrides, message):
    with pytest.raises(UserError) as info:
        ContinualConfig(**{"skills": "stdlib:text", **overrides}).check()
    assert str(info.value) == message


def test_plus_joins_datasets_inside_one_skill():
    assert ContinualConfig(skills="stdlib:text+stdlib:math, mbpp").skill_specs() == ["stdlib:text,stdlib:math", "mbpp"]


def test_phase_data_replays_earlier_skills_at_the_given_share():
    from dylora_moe.continual.orchestrator import phase_data
    from dylora_moe.training.config import TrainConfig

    skills = ["stdlib:math", "mbpp=/x/mbpp.jsonl", "stdlib:math,code_alpaca=/y.json"]
    cfg = TrainConfig()
    first = phase_data(cfg, ContinualConfig(skills=",".join(skills), replay=0.2), 0, skills)
    assert (first.datasets, first.mixing, first.mix_weights) == ("stdlib:math", "interleave", "stdlib:math=1")
    second = phase_data(cfg, ContinualConfig(replay=0.2), 1, skills)
    assert (second.datasets, second.mix_weights) == ("mbpp=/x/mbpp.jsonl,stdlib:math", "mbpp=0.8,stdlib:math=0.2")
    third = phase_data(cfg, ContinualConfig(replay=0.2), 2, skills)
    assert third.datasets == "stdlib:math,code_alpaca=/y.json,mbpp=/x/mbpp.jsonl"
    assert third.mix_weights == "stdlib:math=0.4,code_alpaca=0.4,mbpp=0.2"
    none = phase_data(cfg, ContinualConfig(replay=0.0), 1, skills)
    assert (none.datasets, none.mix_weights) == ("mbpp=/x/mbpp.jsonl", "mbpp=1")
