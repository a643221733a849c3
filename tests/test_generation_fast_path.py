"""The inference fast path (cached concatenated experts, lean gating) gives today's outputs, and notices
every change of the weights."""

from __future__ import annotations

import pytest
import torch

from dylora_moe.model import layer as layer_module
from dylora_moe.model.router import Router
from micro import batch, micro_gpt2, micro_llama, micro_moe

CASES = [("token", False), ("token", True), ("context", True), ("sequence", False), ("sequence", True)]


@pytest.fixture
def reference_path(monkeypatch):
    """Today's path: rebuild the concatenation and route through the training code in every forward."""
    def slow(self):
        return torch.cat(tuple(self.lora_A), dim=0), torch.cat(tuple(self.lora_B), dim=1)

    def run(fn):
        with monkeypatch.context() as patch:
            patch.setattr(layer_module.MoELoRALinear, "concatenated_experts", slow)
            patch.setattr(Router, "_inference_weights", None)  # the fast gate must not be reached
            patch.setattr(torch, "is_grad_enabled", lambda: True)
            return fn()
    return run


def _model(router_input: str, sparse: bool):
    model = micro_moe(router_input=router_input).eval()
    model.set_maturity([sparse] * model.num_experts)
    return model


def _generate(model, use_cache: bool):
    ids = torch.tensor([[0, 0, 5, 9, 17, 33], [4, 8, 15, 16, 23, 42]])
    mask = (ids != 0).long()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, use_cache=use_cache,
                         pad_token_id=0, eos_token_id=None, output_scores=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.scores)


@pytest.mark.parametrize("router_input,sparse", CASES)
@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_equals_the_reference_path(router_input, sparse, use_cache, reference_path):
    model = _model(router_input, sparse)
    fast_tokens, fast_scores = _generate(model, use_cache)
    slow_tokens, slow_scores = reference_path(lambda: _generate(model, use_cache))
    assert torch.equal(fast_tokens, slow_tokens)
    assert (fast_scores - slow_scores).abs().max().item() <= 1e-5


@pytest.mark.parametrize("sparse", [False, True])
def test_generation_on_a_bf16_base_and_a_conv1d_base_equals_the_reference_path(sparse, reference_path):
    """Two other ways into the inference path's accumulation: a bf16 base under fp32 experts (the delta is cast,
    not accumulated in place) and GPT-2's Conv1D projections (accumulated in place, like nn.Linear)."""
    bf16 = micro_moe(base=micro_llama().to(torch.bfloat16)).eval()
    gpt2 = micro_moe(base=micro_gpt2(), target_modules=["c_attn"]).eval()
    for model, tolerance in ((bf16, 2e-2), (gpt2, 1e-5)):  # bf16: one rounding of the folded scaling may differ
        model.set_maturity([sparse] * model.num_experts)
        fast_tokens, fast_scores = _generate(model, use_cache=True)
        slow_tokens, slow_scores = reference_path(lambda: _generate(model, use_cache=True))
        assert torch.equal(fast_tokens, slow_tokens)
        assert (fast_scores.float() - slow_scores.float()).abs().max().item() <= tolerance


def _logits(model):
    data = batch(seed=3)
    with torch.no_grad():
        return model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits


def _fresh_reference(model, reference_path):
    return reference_path(lambda: _logits(model))


def test_cache_follows_an_optimizer_step(reference_path):
    model = _model("token", sparse=True)
    before = _logits(model)  # builds the cache
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    data = batch(seed=1)
    model(**data).loss.backward()
    optimizer.step()
    model.eval()
    after = _logits(model)
    assert (after - before).abs().max().item() > 1e-4  # the step changed the outputs
    assert torch.allclose(after, _fresh_reference(model, reference_path), atol=1e-6)


def test_cache_follows_in_place_writes_and_loads(reference_path):
    model = _model("token", sparse=False)
    _logits(model)
    layer = model.adapted_layers()[0][1]
    with torch.no_grad():
        layer.lora_B[0].mul_(3.0)  # in place, the way load_state_dict / load_adapter / copy_expert write
    assert torch.allclose(_logits(model), _fresh_reference(model, reference_path), atol=1e-6)
    other = _model("token", sparse=False)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    model.load_state_dict(other.state_dict())
    assert torch.allclose(_logits(model), _fresh_reference(model, reference_path), atol=1e-6)
    model.add_experts(1)
    assert torch.allclose(_logits(model), _fresh_reference(model, reference_path), atol=1e-6)


def test_writes_through_data_are_seen_after_train_or_eval(reference_path):
    model = _model("token", sparse=False)
    _logits(model)
    model.adapted_layers()[0][1].lora_A[1].data.mul_(2.0)  # `.data` keeps the version counter
    model.eval()
    assert torch.allclose(_logits(model), _fresh_reference(model, reference_path), atol=1e-6)


def test_training_forward_does_not_keep_a_cache():
    model = _model("token", sparse=False).train()
    model(**batch()).loss.backward()
    assert all(layer._concat is None for _, layer in model.adapted_layers())


@pytest.mark.parametrize("router_input", ["token", "context", "sequence"])
def test_batch_one_sparse_decoding_computes_the_chosen_expert_only(router_input, reference_path, monkeypatch):
    """Greedy decoding at batch 1 with sparse top-1 routing takes the single-expert path for every new token
    (the prompt's forward, several tokens, does not) and gives the reference path's tokens and scores."""
    model = _model(router_input, sparse=True)
    picks: list[int | None] = []
    single_expert = Router.single_expert

    def spy(self, x):
        picks.append(single_expert(self, x))
        return picks[-1]

    monkeypatch.setattr(Router, "single_expert", spy)
    ids = torch.tensor([[5, 9, 17, 33, 2, 7]])

    def generate():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             use_cache=True, pad_token_id=0, eos_token_id=None, output_scores=True,
                             return_dict_in_generate=True)
        return out.sequences, torch.stack(out.scores)

    fast_tokens, fast_scores = generate()
    chosen = [p for p in picks if p is not None]
    assert len(chosen) > 0 and None in picks  # decoding steps took the path, the prompt's forward did not
    assert all(0 <= p < model.num_experts for p in chosen)
    picks.clear()
    slow_tokens, slow_scores = reference_path(generate)
    assert all(p is None for p in picks)  # with autograd (the reference) the path is never taken
    assert torch.equal(fast_tokens, slow_tokens)
    assert (fast_scores - slow_scores).abs().max().item() <= 1e-5


def test_single_expert_path_is_only_for_sparse_top1_without_statistics():
    x = torch.randn(1, 1, 16)
    with torch.no_grad():
        assert Router(16, 4, top_k=1).single_expert(x) is None  # outside a model: dense routing
        model = _model("token", sparse=True)
        router = next(iter(model.routers.values()))
        router.active_pass = type(router.routing_pass)(sparse=True)
        assert router.single_expert(torch.randn(1, 1, router.weight.shape[1])) is not None
        assert router.single_expert(torch.randn(2, 1, router.weight.shape[1])) is None  # two tokens
        router.active_pass = type(router.routing_pass)(sparse=True, collect_stats=True)
        assert router.single_expert(torch.randn(1, 1, router.weight.shape[1])) is None
        router.top_k, router.active_pass = 2, type(router.routing_pass)(sparse=True)
        assert router.single_expert(torch.randn(1, 1, router.weight.shape[1])) is None
    router.top_k = 1
    assert router.single_expert(torch.randn(1, 1, router.weight.shape[1])) is None  # autograd on
