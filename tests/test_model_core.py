"""The DyLoRA-MoE model: training signal reaches every expert, routing modes, PEFT equivalence, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from dylora_moe.errors import UserError
from dylora_moe.model.adapter_io import load_adapter, save_adapter
from dylora_moe.model.targets import KNOWN_TARGETS, attention_targets, find_targets, linear_layer_names
from families import FAMILIES
from micro import VOCAB, batch, micro_gpt2, micro_llama, micro_moe


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("make_base", [micro_llama, micro_gpt2], ids=["llama", "gpt2"])
def test_one_step_changes_every_expert_and_gate(make_base):
    model = micro_moe(base=make_base(), lora_dropout=0.1)
    model.train()
    before = _snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    out = model(**batch())
    out.loss.backward()
    opt.step()
    after = _snapshot(model)
    names = list(before)
    assert any(".lora_A.3" in n for n in names) and any("routers" in n for n in names)
    unchanged = [n for n in names if torch.equal(before[n], after[n])]
    assert unchanged == []
    frozen_changed = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_changed == []


def test_gpt2_conv1d_targets_and_llama_defaults():
    gpt = micro_moe(base=micro_gpt2())
    assert [n.rsplit(".", 1)[-1] for n, _ in gpt.adapted_layers()] == ["c_attn", "c_attn"]
    llama = micro_moe()
    assert sorted({n.rsplit(".", 1)[-1] for n, _ in llama.adapted_layers()}) == ["q_proj", "v_proj"]
    # q and v of one layer read the same input, so they share one router
    assert len(llama.routers) == 2


def test_shared_router_computes_once_per_input():
    model = micro_moe()
    calls = []
    router = next(iter(model.routers.values()))
    handle = router.register_forward_hook(lambda *a: calls.append(1))
    model(**batch())
    handle.remove()
    assert len(calls) == 2  # q_proj and v_proj call it; the second call is served from the cache
    with model.routing_pass(collect_stats=True):
        model.base_model(**{k: v for k, v in batch().items() if k != "labels"})
    assert len(model.last_routing_pass.stats) == 2  # one routing decision per layer, not per projection


def test_single_expert_equals_peft_lora():
    model = micro_moe(num_experts=1, r=8, lora_dropout=0.0)
    model.eval()
    peft_model = get_peft_model(
        micro_llama(), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    ).eval()
    peft_state = peft_model.state_dict()
    for name, layer in model.adapted_layers():
        prefix = f"base_model.model.{name}"
        peft_state[f"{prefix}.lora_A.default.weight"] = layer.lora_A[0].detach().clone()
        peft_state[f"{prefix}.lora_B.default.weight"] = layer.lora_B[0].detach().clone()
    peft_model.load_state_dict(peft_state)
    b = batch()
    ours = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    theirs = peft_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert (ours - theirs).abs().max().item() <= 1e-5
    base_logits = micro_llama()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert (ours - base_logits).abs().max().item() > 1e-6  # the adapter really contributes


def _routing_weights(model):
    captured = []
    router = next(iter(model.routers.values()))
    handle = router.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    model(**batch())
    handle.remove()
    return captured[0].reshape(-1, model.num_experts)


def test_dense_while_immature_sparse_top_k_when_mature():
    model = micro_moe(num_experts=4, top_k=2)
    model.set_maturity([True, True, True, False])
    dense = _routing_weights(model)
    assert bool((dense > 0).all())
    assert torch.allclose(dense.sum(-1), torch.ones(dense.shape[0]), atol=1e-5)
    model.mark_mature(3)
    sparse = _routing_weights(model)
    assert ((sparse > 0).sum(-1) == 2).all()
    assert torch.allclose(sparse.sum(-1), torch.ones(sparse.shape[0]), atol=1e-5)


def test_balance_loss_reported_separately_and_padding_masked():
    model = micro_moe()
    b = batch()
    out = model(**b)
    assert out.lm_loss is not None and out.balance_loss is not None
    expected = out.lm_loss + model.dylora_config.balance_coefficient * out.balance_loss
    assert torch.allclose(out.loss, expected)
    assert out.expert_usage.shape == (4,) and abs(out.expert_usage.sum().item() - 1.0) < 1e-4
    assert 0.0 < out.routing_entropy.item() <= torch.log(torch.tensor(4.0)).item() + 1e-6
    # changing padded positions' tokens must not change the (masked) balance loss
    b2 = {k: v.clone() for k, v in b.items()}
    b2["input_ids"][0, -3:] = 5
    out2 = model(**b2)
    assert torch.allclose(out.balance_loss, out2.balance_loss, atol=1e-6)


def test_save_load_roundtrip_identical_logits(tmp_path):
    model = micro_moe(seed=3)
    model.set_maturity([True, False, True, False])
    save_adapter(model, tmp_path)
    fresh = micro_moe(seed=99)  # same base weights? no: different seed for adapters only
    fresh.base_model.load_state_dict(model.base_model.state_dict())
    load_adapter(fresh, tmp_path)
    assert fresh.maturity.tolist() == [True, False, True, False]
    model.eval(), fresh.eval()
    b = batch()
    assert torch.equal(model(**b).logits, fresh(**b).logits)


def test_loading_two_experts_into_four_names_both_values(tmp_path):
    save_adapter(micro_moe(num_experts=2), tmp_path)
    with pytest.raises(UserError, match=r"num_experts=2 but the model has num_experts=4; pass --num_experts 2"):
        load_adapter(micro_moe(num_experts=4), tmp_path)


def test_generate_with_cache_equals_without_cache_sparse():
    model = micro_moe(num_experts=4, top_k=1)
    model.set_maturity([True] * 4)
    model.eval()
    prompt = batch(bsz=1, seq=6)["input_ids"]
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    with_cache = model.generate(input_ids=prompt, use_cache=True, **kw)
    without = model.generate(input_ids=prompt, use_cache=False, **kw)
    assert with_cache.shape[1] == prompt.shape[1] + 12
    assert torch.equal(with_cache, without)


def test_add_experts_keeps_existing_experts():
    model = micro_moe(num_experts=2)
    model.set_maturity([True, True])
    before = _snapshot(model)
    ids = model.add_experts(1)
    assert ids == [2] and model.num_experts == 3 and model.maturity.tolist() == [True, True, False]
    after = dict(model.named_parameters())
    for name, value in before.items():
        if "routers" in name:
            assert torch.equal(after[name][:2], value)
            assert after[name].shape[0] == 3
        else:
            assert torch.equal(after[name], value)
    assert model(**batch()).loss.isfinite()


def test_label_smoothing_applies_to_shifted_labels():
    import torch.nn.functional as F

    from dylora_moe.model.moe_model import shifted_lm_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, 1] = -100
    total, count = shifted_lm_loss(logits, labels, label_smoothing=0.1)
    manual = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100,
                             label_smoothing=0.1, reduction="sum")
    assert count.item() == 7 and torch.allclose(total, manual)
    unshifted = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100,
                                label_smoothing=0.1, reduction="sum")
    assert not torch.allclose(total, unshifted)


def _micro_other(kind: str):
    from transformers import GemmaConfig, GemmaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if kind == "gemma":
        return GemmaForCausalLM(GemmaConfig(head_dim=16, **common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


@pytest.mark.parametrize("kind", ["gemma", "qwen2"])
def test_gemma_and_qwen2_train_a_step(kind):
    model = micro_moe(base=_micro_other(kind))
    assert model.dylora_config.model_type == kind
    assert sorted({n.rsplit(".", 1)[-1] for n, _ in model.adapted_layers()}) == ["q_proj", "v_proj"]
    model.train()
    before = _snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch()).loss.backward()
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


def test_adapter_refuses_a_base_with_other_weights_under_the_same_name(tmp_path):
    """The name is not the weights (the tiny base is rebuilt per Python version): a changed base is one line;
    the same base loaded in bf16 is accepted."""
    save_adapter(micro_moe(num_experts=2), tmp_path)
    same_bf16 = micro_moe(num_experts=2, base=micro_llama(0).to(torch.bfloat16))
    load_adapter(same_bf16, tmp_path)
    other = micro_moe(num_experts=2, base=micro_llama(seed=7))
    with pytest.raises(UserError, match=r"was trained on other weights than the base 'micro-llama' loaded here .*"
                                        r"load the base it was trained on$"):
        load_adapter(other, tmp_path)
    saved = json.loads((tmp_path / "dylora_config.json").read_text())
    assert set(saved["base_fingerprint"]) == {"shapes", "values", "norms"} and len(saved["base_fingerprint"]["values"]) == 8


def test_unknown_target_modules_list_the_models_linear_layers():
    with pytest.raises(UserError, match=r"^none of the target modules \['c_attn'\] exist in this llama; pass "
                                        r"--target_modules with some of its Linear layers: "
                                        r"q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head$"):
        micro_moe(target_modules=["c_attn"])


def test_a_model_without_attention_projections_lists_its_linear_layers():
    """Mamba has no attention: no default targets; the error names the layers --target_modules can pick."""
    from transformers import MambaConfig, MambaForCausalLM

    mamba = MambaForCausalLM(MambaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, state_size=4))
    with pytest.raises(UserError, match=r"^found no query/value or fused qkv projection in this mamba's attention "
                                        r"to adapt by default; pass --target_modules with some of its Linear layers: "
                                        r"in_proj,x_proj,dt_proj,out_proj,lm_head$"):
        micro_moe(base=mamba)
    assert linear_layer_names(micro_llama(), limit=3) == "q_proj,k_proj,v_proj (and 5 more)"


def _family_model(family: str):
    from transformers import AutoModelForCausalLM

    from families import family_config

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(family_config(family, vocab=VOCAB, pad=0, eos=1)).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attention_targets_agree_with_the_known_table(family):
    """What is read from each family's attention module is what the fallback table says for its model type."""
    model = _family_model(family)
    found = attention_targets(model)
    assert found is not None
    table = KNOWN_TARGETS[model.config.model_type]
    assert find_targets(model, found) == find_targets(model, table) != []


@pytest.mark.parametrize("family, routers", [("phi3", 2), ("falcon", 2), ("deepseek_v2", 2), ("deepseek_v3", 2)])
def test_fused_and_mla_targets_share_one_router_per_layer_and_route_by_sequence(family, routers):
    """A fused qkv projection has its own router; MLA's query and kv down-projections read the hidden state, so
    they share one, and sequence routing (one context of one width for all gates) works."""
    model = micro_moe(base=_family_model(family), router_input="sequence")
    assert len(model.routers) == routers
    model.train()
    model(**batch()).loss.backward()
    assert all(p.grad is not None for p in model.routers.parameters())
