"""Routing state is scoped to one forward: what a `routing_pass` (or a forward's labels and expert ids) asks for
is read by that forward's routers only, never by the next forward."""

from __future__ import annotations

import pytest
import torch

from dylora_moe.errors import UserError
from dylora_moe.model.router import Router, RoutingPass
from micro import batch, micro_moe


def test_a_forwards_targets_and_statistics_do_not_leak_into_the_next_forward():
    model = micro_moe(num_experts=2)
    data = batch()
    supervised = model(**data, expert_ids=torch.tensor([1, 0]))
    first = model.last_routing_pass
    assert supervised.routing_supervision_loss is not None
    assert first.targets is not None and first.target_mask is not None and first.collect_stats and first.stats
    plain = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"])
    second = model.last_routing_pass
    assert second is not first
    assert second.targets is None and second.target_mask is None and not second.collect_stats and not second.stats
    assert plain.routing_supervision_loss is None and plain.loss is None
    scored = model(**data)  # labels again, but no expert ids: statistics without supervision
    assert scored.routing_supervision_loss is None and model.last_routing_pass.targets is None


def test_a_capture_scope_covers_the_forwards_inside_it_only():
    model = micro_moe(num_experts=2, router_input="context").eval()
    ids = batch()["input_ids"]
    captured: dict = {}
    with model.routing_pass(capture=captured):
        model(input_ids=ids)
        assert model.last_routing_pass.capture is captured
    assert set(captured) == {id(r) for r in model.routers.values()}
    count = sum(len(v) for v in captured.values())
    model(input_ids=ids)
    assert model.last_routing_pass.capture is None
    assert sum(len(v) for v in captured.values()) == count


def test_generation_after_a_supervised_forward_routes_without_its_targets():
    model = micro_moe(num_experts=2, router_input="context")
    model(**batch(), expert_ids=torch.tensor([1, 0]))
    passes = []
    handle = model.base_model.register_forward_pre_hook(lambda *a: passes.append(None))  # after the pass starts
    seen = []
    hooks = [r.register_forward_pre_hook(lambda m, a: seen.append(m.active_pass)) for r in model.routers.values()]
    model.eval().generate(input_ids=batch()["input_ids"][:, :4], max_new_tokens=3, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
    handle.remove()
    for h in hooks:
        h.remove()
    steps = {id(p): p for p in seen}
    assert len(steps) == len(passes) == 3  # one fresh pass per generate step
    assert all(p.targets is None and not p.collect_stats and not p.stats for p in steps.values())
    assert [p.continue_context for p in steps.values()] == [False, True, True]


def test_a_router_outside_a_model_routes_with_the_defaults():
    router = Router(8, 3, top_k=1, temperature=2.0)
    x = torch.randn(2, 5, 8)
    weights = router(x)
    expected = torch.softmax((x @ router.weight.T) / 2.0, dim=-1)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert router.active_pass is None and RoutingPass().stats == []


def test_activation_checkpointing_keeps_one_routing_decision_per_router():
    """Backward recomputes each checkpointed layer, routers included; statistics recorded by the recomputation
    would keep that layer's recomputed activations alive until the next forward. The forward's decisions are the
    pass's, and the recomputation adds none."""
    model = micro_moe(num_experts=2).train()
    model.gradient_checkpointing_enable()
    calls = []
    hooks = [r.register_forward_hook(lambda *_: calls.append(None)) for r in model.routers.values()]
    out = model(**batch())
    in_forward = len(calls)
    p = model.last_routing_pass
    forward_stats = [id(s) for s in p.stats]
    assert len(forward_stats) == len(model.routers)
    out.loss.backward()
    for h in hooks:
        h.remove()
    assert len(calls) == 2 * in_forward  # backward did run every router again
    assert [id(s) for s in p.stats] == forward_stats
    assert all(r.weight.grad is not None and r.weight.grad.abs().sum() > 0 for r in model.routers.values())


def test_expert_ids_of_another_batch_size_are_one_clear_error():
    model = micro_moe(num_experts=2)
    data = batch(bsz=4)
    with pytest.raises(UserError) as raised:
        model(**data, expert_ids=torch.tensor([1, 0]))  # 4 * 12 tokens would split evenly over 2 ids
    assert str(raised.value) == ("expert_ids must hold one expert per sequence, shape (4,) for this batch, got "
                                 "shape (2,); pass -1 for a sequence without a target")
    assert model(**data, expert_ids=torch.tensor([1, 0, -1, 1])).routing_supervision_loss is not None
