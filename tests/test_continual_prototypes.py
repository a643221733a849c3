"""Routing prototypes (--prototype_routing): recorded gate inputs of finished skills, the loss that keeps them on
their experts while a later skill trains the gates, and their place in the skill library."""

from __future__ import annotations

import torch
from micro import micro_moe

from dylora_moe.continual.library import SkillLibrary
from dylora_moe.continual.prototypes import LEADING, POSITIONS, collect_prototypes, set_routing_prototypes


def _rows(low: int, high: int, count: int, seed: int, length: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = torch.randint(low, high, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:]})  # a 4-token "prompt", then the answer
    return rows


def test_prototypes_are_the_routers_running_means_at_quantile_positions():
    model = micro_moe(num_experts=2, router_input="context").eval()
    rows = _rows(3, 120, 3, seed=0)
    key, router = next(iter(model.routers.items()))
    inputs = []
    handle = router.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()))
    protos = collect_prototypes(model, rows, sample=3)
    handle.remove()
    assert set(protos) == set(model.routers)
    picks = sorted({round(q * 15) for q in POSITIONS} | set(range(LEADING)))
    assert protos[key].shape == (3 * len(picks), router.weight.shape[1])
    x = inputs[0][0]
    running = x.cumsum(0) / torch.arange(1, x.shape[0] + 1).unsqueeze(1)
    assert torch.allclose(protos[key][: len(picks)], running[picks], atol=1e-6)
    model(input_ids=torch.tensor([rows[0]["input_ids"]]))
    assert model.last_routing_pass.capture is None  # capturing is switched off again


def _train_gates(model, skill_b: list[dict], steps: int = 60) -> None:
    """Train only the gates on skill B, with B's answer tokens supervised to expert 1 (as in a continual phase)."""
    gates = [r.weight for r in model.routers.values()]
    for p in model.parameters():
        p.requires_grad_(False)
    for g in gates:
        g.requires_grad_(True)
    opt = torch.optim.Adam(gates, lr=0.05)
    model.weight_loss_term("routing_supervision_loss", 1.0)
    model.train()
    for step in range(steps):
        rows = skill_b[(step * 4) % len(skill_b):][:4]
        out = model(input_ids=torch.tensor([r["input_ids"] for r in rows]),
                    labels=torch.tensor([r["labels"] for r in rows]), expert_ids=torch.ones(len(rows), dtype=torch.long))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()


def _usage(model, rows: list[dict]) -> list[float]:
    out = model(input_ids=torch.tensor([r["input_ids"] for r in rows]), labels=torch.tensor([r["labels"] for r in rows]))
    return out.expert_usage.tolist()


def test_prototypes_keep_an_earlier_skills_contexts_on_its_expert():
    """Skill A (tokens 3-89) was learned by expert 0; skill B (tokens 40-126, overlapping) trains the gates
    toward expert 1. Without prototypes B's supervision pulls most of A's held-out contexts to expert 1 too
    (measured: 41% stay on expert 0); with A's recorded gate inputs as prototypes 89% stay, while 77% of B's
    go to expert 1."""
    skill_a, held_out_a = _rows(3, 90, 16, seed=1), _rows(3, 90, 8, seed=2)
    skill_b, held_out_b = _rows(40, 127, 16, seed=3), _rows(40, 127, 8, seed=4)
    usages = {}
    for weight in (0.0, 1.0):
        model = micro_moe(num_experts=2, router_input="context")
        model.set_maturity([True, False])
        protos = collect_prototypes(model, skill_a, sample=16)
        count = set_routing_prototypes(model, [(0, protos)], weight)
        assert count == 16 * len({round(q * 15) for q in POSITIONS} | set(range(LEADING)))
        before = model(input_ids=torch.tensor([skill_b[0]["input_ids"]]), labels=torch.tensor([skill_b[0]["labels"]]))
        assert (before.routing_prototype_loss is not None) and \
            (model.loss_term_weights["routing_prototype_loss"] == weight)
        _train_gates(model, skill_b)
        usages[weight] = (_usage(model, held_out_a)[0], _usage(model, held_out_b)[1])
    assert usages[0.0][0] < 0.5, usages  # unprotected: A's contexts have moved to the new expert
    assert usages[1.0][0] > 0.85 and usages[1.0][1] > 0.7, usages


def test_prototype_loss_enters_the_models_loss_with_its_weight():
    model = micro_moe(num_experts=2, router_input="context")
    rows = _rows(3, 120, 2, seed=5)
    ids, labels = torch.tensor([r["input_ids"] for r in rows]), torch.tensor([r["labels"] for r in rows])
    assert model(input_ids=ids, labels=labels).routing_prototype_loss is None
    assert set_routing_prototypes(model, [], 1.0) == 0 and model.loss_term_weights["routing_prototype_loss"] == 0.0
    set_routing_prototypes(model, [(1, collect_prototypes(model, rows, sample=2))], 0.5)
    out = model(input_ids=ids, labels=labels)
    expected = torch.stack([r.prototype_loss(*model.routing_prototypes[k]) for k, r in model.routers.items()]).mean()
    assert torch.allclose(out.routing_prototype_loss, expected)
    assert torch.allclose(out.loss, out.lm_loss + model.dylora_config.balance_coefficient * out.balance_loss
                          + 0.5 * expected, atol=1e-6)


def test_library_round_trip_keeps_prototypes(tmp_path):
    library = SkillLibrary(names=["a", "b"], experts=[0, 1], embeddings=[torch.randn(8), torch.randn(8)])
    library.prototypes["a"] = {"layers-0-self_attn": torch.randn(12, 8), "layers-1-self_attn": torch.randn(12, 8)}
    library.save(tmp_path)
    loaded = SkillLibrary.load(tmp_path)
    assert set(loaded.prototypes) == {"a"} and loaded.expert_of("b") == 1
    for key, value in library.prototypes["a"].items():
        assert torch.equal(loaded.prototypes["a"][key], value)


def test_sequence_routing_prototypes_are_stored_once_and_installed_for_every_router():
    model = micro_moe(num_experts=2, router_input="sequence").eval()
    rows = _rows(3, 120, 3, seed=6)
    protos = collect_prototypes(model, rows, sample=3)
    assert list(protos) == ["all"]
    count = set_routing_prototypes(model, [(0, protos)], 1.0)
    assert set(model.routing_prototypes) == set(model.routers) and count == protos["all"].shape[0]
    for inputs, experts, *_ in model.routing_prototypes.values():
        assert torch.equal(inputs, protos["all"]) and experts.tolist() == [0] * count
