"""router_input="context" / "sequence": gates read a causal running mean of the sequence (see model/router.py)."""

import pytest
import torch

from micro import batch, micro_moe

from dylora_moe.errors import UserError
from dylora_moe.model.adapter_io import load_adapter, save_adapter


def _routing_weights(model, ids, mask=None):
    """Routing weights of the first router for every position: (batch, seq, E)."""
    router = next(iter(model.routers.values()))
    seen = []
    handle = router.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    try:
        model(input_ids=ids, attention_mask=mask if mask is not None else torch.ones_like(ids))
    finally:
        handle.remove()
    return seen[0]


MODES = ["context", "sequence"]


@pytest.mark.parametrize("mode", MODES)
def test_context_routing_is_causal_and_differs_from_token_routing(mode):
    ctx = micro_moe(num_experts=3, router_input=mode).eval()
    tok = micro_moe(num_experts=3, router_input="token").eval()
    ids = batch(bsz=1, seq=10)["input_ids"]
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 5) % 100 + 3
    before, after = _routing_weights(ctx, ids), _routing_weights(ctx, changed)
    assert torch.allclose(before[0, :6], after[0, :6])  # earlier positions never see later tokens
    assert not torch.allclose(before[0, 7:], after[0, 7:])  # later positions see the change through the mean
    assert not torch.allclose(before, _routing_weights(tok, ids))


@pytest.mark.parametrize("mode", MODES)
def test_context_routing_ignores_left_padding(mode):
    model = micro_moe(num_experts=3, router_input=mode).eval()
    ids = batch(bsz=1, seq=8)["input_ids"]
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    plain = _routing_weights(model, ids)
    with_pad = _routing_weights(model, padded, mask)
    # the base's position ids differ with left padding, so compare the first layer's router (it reads embeddings)
    assert torch.allclose(plain[0], with_pad[0, 3:], atol=1e-6)


def _strong_gates(model):
    """Gates large enough that routing decides the output (the default init makes every expert weigh ~1/E)."""
    torch.manual_seed(3)
    for router in model.routers.values():
        router.weight.data.normal_(0.0, 2.0)
    return model


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mature", [False, True])
def test_cached_generation_scores_equal_uncached(mature, mode):
    """generate() with a KV cache carries each router's running sum; without a cache it recomputes the whole
    sequence: the per-step logits agree (and differ from a cache that forgot the context)."""
    model = _strong_gates(micro_moe(num_experts=3, router_input=mode))
    model.set_maturity([mature] * 3)
    model.eval()
    prompt = batch(bsz=1, seq=6)["input_ids"]
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None, output_scores=True,
              return_dict_in_generate=True)
    with_cache = model.generate(input_ids=prompt, use_cache=True, **kw)
    without = model.generate(input_ids=prompt, use_cache=False, **kw)
    steps = len(with_cache.scores)
    assert steps == 8 and torch.equal(with_cache.sequences[:, :7], without.sequences[:, :7])
    assert torch.allclose(torch.stack(with_cache.scores), torch.stack(without.scores), atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_cached_logits_equal_full_forward_logits(mode):
    """Step-by-step decoding with a KV cache gives the full forward's logits at every position."""
    model = _strong_gates(micro_moe(num_experts=3, router_input=mode)).eval()
    ids = batch(bsz=2, seq=9)["input_ids"]
    full = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    out = model.base_model(input_ids=ids[:, :5], use_cache=True)
    steps = [out.logits]
    for t in range(5, 9):
        out = model.base_model(input_ids=ids[:, t:t + 1], cache=out.past_key_values, use_cache=True)
        steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_checkpoint_router_input_mismatch_is_one_line(tmp_path):
    save_adapter(micro_moe(num_experts=2, router_input="context"), tmp_path)
    with pytest.raises(UserError, match=r"router_input=context but the model has router_input=token; "
                                        r"pass --router_input context"):
        load_adapter(micro_moe(num_experts=2), tmp_path)


def test_unknown_router_input_is_refused():
    with pytest.raises(UserError, match="router_input must be one of token, context, sequence, got 'topic'"):
        micro_moe(router_input="topic")


def test_sequence_mode_gives_every_gate_the_first_gates_running_mean():
    model = micro_moe(num_experts=2, router_input="sequence").eval()
    captured = {}
    ids = batch(bsz=2, seq=7)["input_ids"]
    with model.routing_pass(capture=captured):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    inputs = [v[0] for v in captured.values()]
    assert len(inputs) == len(model.routers) > 1
    assert all(x.data_ptr() == inputs[0].data_ptr() for x in inputs)  # computed once per forward, by the first gate
    own = micro_moe(num_experts=2, router_input="context").eval()
    own_captured = {}
    with own.routing_pass(capture=own_captured):
        own(input_ids=ids, attention_mask=torch.ones_like(ids))
    first = next(iter(own_captured.values()))[0]
    assert torch.allclose(first, inputs[0])  # the first gate's own running mean


def test_sequence_mode_refuses_targets_of_different_widths():
    with pytest.raises(UserError, match=r"router_input=sequence shares one context across all gates, but the target "
                                        r"modules \['q_proj', 'down_proj'\] read inputs of widths \[64, 128\]"):
        micro_moe(router_input="sequence", target_modules=["q_proj", "down_proj"])


def test_beam_search_is_refused_with_context_routing():
    model = micro_moe(num_experts=2, router_input="context").eval()
    with pytest.raises(UserError, match="beam search reorders sequences .* generate with num_beams=1"):
        model.generate(input_ids=batch(bsz=1, seq=4)["input_ids"], num_beams=2, max_new_tokens=2, pad_token_id=0)


@pytest.mark.parametrize("mode", MODES)
def test_left_padded_batch_generation_routes_each_prompt_as_alone(mode):
    """Padding never enters the running means: a short prompt left-padded in a batch gets the same per-step
    scores as when generated alone."""
    model = _strong_gates(micro_moe(num_experts=3, router_input=mode)).eval()
    long, short = batch(bsz=1, seq=8, seed=1)["input_ids"], batch(bsz=1, seq=5, seed=2)["input_ids"]
    ids = torch.cat([long, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1)])
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None, output_scores=True,
              return_dict_in_generate=True, use_cache=True)
    together = model.generate(input_ids=ids, attention_mask=mask, **kw)
    alone = model.generate(input_ids=short, attention_mask=torch.ones_like(short), **kw)
    assert torch.allclose(torch.stack(together.scores)[:, 1], torch.stack(alone.scores)[:, 0], atol=1e-4)
