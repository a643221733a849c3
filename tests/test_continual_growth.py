"""Growing the expert pool on a full resume: optimizer state kept for existing parameters, fresh for new ones."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from micro import batch, micro_moe
from train_helpers import micro_config, run

from dylora_moe.errors import UserError
from dylora_moe.training.optimizer_growth import optimizer_param_names, remap_optimizer_state
from dylora_moe.training.run import train


def _adam_step(model) -> torch.optim.AdamW:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch()).loss.backward()
    opt.step()
    return opt


def test_remap_keeps_existing_state_pads_grown_gates_and_leaves_new_experts_fresh():
    model = micro_moe(num_experts=2, r=4)
    opt = _adam_step(model)
    saved, names = opt.state_dict(), optimizer_param_names(opt, model)
    params = dict(model.named_parameters())
    old = {n: {k: v.clone() for k, v in opt.state[params[n]].items()} for n in names[0]}
    model.add_experts(1)
    grown_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    state, kept, fresh = remap_optimizer_state(saved, names, grown_opt, model)
    grown_opt.load_state_dict(state)
    layers, routers = len(model.adapted_layers()), len(model.routers)
    assert (kept, fresh) == (2 * 2 * layers + routers, 2 * layers)
    params = dict(model.named_parameters())
    a0 = next(n for n in params if n.endswith("lora_A.0"))
    assert torch.equal(grown_opt.state[params[a0]]["exp_avg"], old[a0]["exp_avg"])
    assert params[a0.replace("lora_A.0", "lora_A.2")] not in grown_opt.state
    gate = next(n for n in params if n.startswith("routers."))
    moment = grown_opt.state[params[gate]]["exp_avg_sq"]
    assert moment.shape[0] == 3 and torch.equal(moment[:2], old[gate]["exp_avg_sq"])
    assert torch.count_nonzero(moment[2]) == 0
    model(**batch()).loss.backward()
    grown_opt.step()  # the re-mapped state is usable


def test_grow_experts_on_full_resume_keeps_optimizer_state(base, tmp_path):
    cfg = micro_config(base, tmp_path, num_experts=2, max_steps=6, lr_scheduler_type="constant", warmup_ratio=0.0)
    run(cfg, stop_at=3)
    with pytest.raises(UserError, match=r"has num_experts=2 but the model has num_experts=3; pass --num_experts 2 "
                                        r"to match the checkpoint \(or --grow_experts to add experts\)"):
        train(dataclasses.replace(cfg, num_experts=3, resume_from_checkpoint="latest"), log=lambda m: None)
    lines: list[str] = []
    result = train(dataclasses.replace(cfg, resume_from_checkpoint="latest", grow_experts=1), log=lines.append)
    remapped = [line for line in lines if "re-mapped" in line]
    assert remapped == ["[train] optimizer state re-mapped onto the grown model: 18 parameters keep their state, "
                        "8 start fresh"]
    assert result.global_step == 6
    assert [line for line in lines if "continuity" in line] == [
        f"[resume] continuity: not checked: --grow_experts 1 adds experts to {tmp_path}/checkpoint-3, so the model "
        "no longer computes as it did at save"]
    from train_helpers import adapter_weights

    weights = adapter_weights(result.last_checkpoint)
    assert weights["maturity"].tolist() == [0, 0, 0] and any(k.endswith("lora_A.2") for k in weights)


def test_grown_expert_can_start_as_a_copy_of_an_existing_one(base, tmp_path):
    """--grow_experts_from: the continual mode's 'nearest' init (a novel skill starts from its nearest skill's expert)."""
    from safetensors.torch import load_file

    from train_helpers import micro_config, run

    first = run(micro_config(base, tmp_path / "a", max_steps=2, num_experts=2))
    grown = run(micro_config(base, tmp_path / "b", max_steps=1, num_experts=2, learning_rate=0.0,
                             resume_from_checkpoint=first.last_checkpoint, weights_only_resume=True,
                             grow_experts=1, grow_experts_from=1))
    state = load_file(f"{grown.last_checkpoint}/adapter_model.safetensors")
    a_keys = [k for k in state if k.endswith(".lora_A.2")]
    assert a_keys
    for key in a_keys:
        assert torch.equal(state[key], state[key[:-1] + "1"])
        assert torch.equal(state[key.replace("lora_A", "lora_B")], state[key.replace("lora_A", "lora_B")[:-1] + "1"])
        assert not torch.equal(state[key], state[key[:-1] + "0"])
