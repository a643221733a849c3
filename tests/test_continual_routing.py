"""Skill-supervised routing (--routing_supervision): the router loss, the batches' expert ids, routing learned
from it on a micro model, and a micro continual sequence that turns it on for the replay phase."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from micro import batch, micro_moe
from train_helpers import micro_config

from dylora_moe.continual.callbacks import SkillRoutingCollator, routing_targets
from dylora_moe.continual.config import ContinualConfig
from dylora_moe.continual.orchestrator import train_continual
from dylora_moe.data.collator import CausalLMCollator
from dylora_moe.errors import UserError
from transformers import TrainerCallback


def test_supervision_loss_is_the_routers_cross_entropy_over_answer_tokens():
    model = micro_moe(num_experts=3, r=4)
    inputs = batch(bsz=3)
    inputs["labels"][:, :4] = -100  # a prompt: routed, but not supervised
    targets = torch.tensor([2, 0, -1])  # the third sequence has no target
    captured = []
    hooks = [r.register_forward_hook(lambda m, i, o: captured.append(o.detach())) for r in model.routers.values()]
    out = model(**inputs, expert_ids=targets)
    for h in hooks:
        h.remove()
    mask = inputs["attention_mask"].bool() & (inputs["labels"] != -100)
    expected = []
    for probs in captured:  # dense routing: the router's output is its softmax; class-balanced mean
        logp = probs.clamp_min(1e-12).log()
        expected.append(-(logp[0][mask[0]][:, 2].mean() + logp[1][mask[1]][:, 0].mean()) / 2)
    assert torch.allclose(out.routing_supervision_loss, torch.stack(expected).mean(), atol=1e-5)
    assert torch.allclose(out.loss, out.lm_loss + model.dylora_config.balance_coefficient * out.balance_loss)
    model.weight_loss_term("routing_supervision_loss", 0.5)
    weighted = model(**inputs, expert_ids=targets)
    assert torch.allclose(weighted.loss, out.loss + 0.5 * out.routing_supervision_loss, atol=1e-5)
    assert model(**inputs).routing_supervision_loss is None  # no targets: no loss, routing unchanged
    with pytest.raises(UserError):
        ContinualConfig(skills="stdlib", routing_supervision=-1).check()


def test_collator_adds_each_rows_expert_and_minus_one_for_unknown_rows():
    targets = routing_targets([[5, 6, 7], [8, 9]], ["a", "b"], {"a": 0, "b": 1})
    collate = SkillRoutingCollator(CausalLMCollator(0), targets)
    rows = [{"input_ids": [8, 9], "labels": [8, 9]}, {"input_ids": [5, 6, 7], "labels": [5, 6, 7]},
            {"input_ids": [1, 2], "labels": [1, 2]}]
    assert collate(rows)["expert_ids"].tolist() == [1, 0, -1]


SKILLS = "stdlib:text,stdlib:math"


def test_supervision_routes_each_skills_tokens_to_its_expert_on_a_micro_model():
    """Two separable 'skills' (disjoint token ranges), the new skill 4x more frequent, as in a replay phase:
    with the class-balanced supervision alone training the gates, each skill's held-out tokens are routed (sparse
    top-1, router only, no ids at inference) mostly to its own expert."""
    def routed(supervision: float) -> tuple[float, float]:
        torch.manual_seed(0)
        model = micro_moe(num_experts=2, r=4)
        model.weight_loss_term("routing_supervision_loss", supervision)
        # as in a supervised continual phase; target weights: inverse token shares of 20% / 80%
        model.set_routing_defaults(detach_weights=True, target_weights=torch.tensor([2.5, 0.625]))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(30):
            ids = torch.cat([torch.randint(3, 60, (2, 12), generator=g), torch.randint(60, 128, (6, 12), generator=g)])
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids,
                        expert_ids=torch.tensor([0, 0] + [1] * 6))
            opt.zero_grad()
            (out.routing_supervision_loss * supervision + 0 * out.loss).backward()
            opt.step()
        model.set_maturity([True, True])
        model.eval()
        usage = []
        with torch.no_grad():
            for lo, hi in ((3, 60), (60, 128)):
                ids = torch.randint(lo, hi, (8, 12), generator=g)
                usage.append(model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).expert_usage)
        return float(usage[0][0]), float(usage[1][1])

    a_to_0, b_to_1 = routed(1.0)
    assert a_to_0 > 0.8 and b_to_1 > 0.7, (a_to_0, b_to_1)
    assert routed(0.0)[0] < a_to_0 - 0.2  # the supervision, not the set-up, does it (without it: initial routing)


SKILLS = "stdlib:text,stdlib:math"


def test_continual_phase_supervises_routing_with_each_examples_skill(base, tmp_path):
    cfg = micro_config(base, tmp_path, datasets="stdlib", max_examples=24, max_steps=3, save_steps=3, eval_steps=3,
                       learning_rate=2e-2, lr_scheduler_type="constant", warmup_ratio=0.0, num_experts=1,
                       lora_dropout=0.0, gradient_accumulation_steps=1, train_batch_size=8)
    cfg.data = dataclasses.replace(cfg.data, max_seq_length=128, eval_fraction=0.2)
    ccfg = ContinualConfig(skills=SKILLS, novelty_threshold=1.0, embedding_samples=8, replay=0.3,
                           routing_supervision=1.0)
    seen = []

    class Spy(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            routing = model.last_routing_pass  # what the routers read in this step's forward
            seen.append((model.num_experts, model.loss_term_weights.get("routing_supervision_loss", 0.0),
                         routing.detach_weights,
                         None if routing.target_weights is None else routing.target_weights.tolist()))

    result = train_continual(cfg, ccfg, log=lambda m: None, extra_callbacks=[Spy()])
    assert [r.expert for r in result.state.records] == [0, 1]
    b_phase = [s for s in seen if s[0] == 2]
    assert b_phase and all(s[1] == 1.0 and s[2] for s in b_phase)
    weights = b_phase[0][3]  # A replayed at ~30% of the rows: its tokens weigh more than B's
    assert weights[0] > 1.0 > weights[1] > 0
    b_logs = [e for e in result.log_history if "routing_supervision_loss" in e and e["step"] > 3]
    assert b_logs and all(e["routing_supervision_loss"] > 0 for e in b_logs)
