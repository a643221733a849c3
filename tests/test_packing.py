"""Padding-free packing: a packed row computes exactly what the same examples compute padded."""

import pytest
import torch
import torch.nn.functional as F

from micro import micro_llama, micro_moe

from dylora_moe.data.collator import CausalLMCollator
from dylora_moe.data.length_sampler import SeededLengthGroupedSampler
from dylora_moe.data.packing import PackingCollator


def _examples(lengths=(7, 12, 4, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, 120, (n,), generator=g).tolist()
        labels = [-100] * 2 + ids[2:]  # a short prompt without labels
        out.append({"input_ids": ids, "labels": labels})
    return out


def _per_example_losses(logits_rows, label_rows):
    return [F.cross_entropy(lg[:-1].float(), lb[1:], ignore_index=-100, reduction="sum")
            for lg, lb in zip(logits_rows, label_rows)]


def _strong(model):
    torch.manual_seed(5)
    for router in model.routers.values():
        router.weight.data.normal_(0.0, 2.0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.05)
    return model


def _padded_vs_packed(model, examples):
    lengths = [len(e["input_ids"]) for e in examples]
    padded = CausalLMCollator(pad_token_id=0)(examples)
    packed = PackingCollator()(examples)
    results = []
    for inputs in (padded, packed):
        model.zero_grad()
        out = model(**inputs)
        out.loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        if inputs is padded:
            rows = [(out.logits[i, :n], padded["labels"][i, :n]) for i, n in enumerate(lengths)]
        else:
            logits = out.logits[0].split(lengths)
            rows = list(zip(logits, [e["labels"] for e in [dict(labels=torch.tensor(x["labels"])) for x in examples]]))
        results.append((out, grads, _per_example_losses(*zip(*rows))))
    return results


@pytest.mark.parametrize("mode", ["token", "context", "sequence"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_equals_padded_batch(mode, attn):
    base = micro_llama()
    base.config._attn_implementation = attn
    model = _strong(micro_moe(num_experts=3, base=base, router_input=mode, lora_dropout=0.0)).eval()
    (pad_out, pad_grads, pad_losses), (pack_out, pack_grads, pack_losses) = _padded_vs_packed(model, _examples())
    for a, b in zip(pad_losses, pack_losses):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)
    assert torch.allclose(pad_out.loss, pack_out.loss, rtol=1e-5)
    assert torch.allclose(pad_out.balance_loss, pack_out.balance_loss, rtol=1e-5)
    assert torch.allclose(pad_out.expert_usage, pack_out.expert_usage, rtol=1e-5, atol=1e-7)
    assert pad_grads.keys() == pack_grads.keys() and pad_grads
    for name in pad_grads:
        diff = (pad_grads[name] - pack_grads[name]).norm() / pad_grads[name].norm().clamp_min(1e-12)
        assert diff <= 1e-5, (name, diff.item())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_attention_and_routing_do_not_cross_examples(attn, mode):
    base = micro_llama()
    base.config._attn_implementation = attn
    model = _strong(micro_moe(num_experts=3, base=base, router_input=mode, lora_dropout=0.0)).eval()
    examples = _examples((8, 10))
    changed = [dict(examples[0], input_ids=[(t + 7) % 117 + 3 for t in examples[0]["input_ids"]]), examples[1]]
    with torch.no_grad():
        before = model(**PackingCollator()(examples)).logits[0]
        after = model(**PackingCollator()(changed)).logits[0]
    assert not torch.allclose(before[:8], after[:8])  # the first example did change
    assert torch.allclose(before[8:], after[8:], atol=1e-6)  # the second example never saw it


def test_packing_labels_positions_and_no_mask():
    batch = PackingCollator()([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    assert "attention_mask" not in batch


def test_length_sampler_is_seeded_per_epoch_and_groups_lengths():
    lengths = [int(x) for x in torch.randint(5, 300, (400,), generator=torch.Generator().manual_seed(1))]
    a, b = SeededLengthGroupedSampler(lengths, 8, seed=3), SeededLengthGroupedSampler(lengths, 8, seed=3)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(99)  # the global RNG does not matter
    assert list(b) == first and sorted(first) == list(range(400))
    a.set_epoch(1)
    assert list(a) != first
    spread = sum(max(lengths[i] for i in first[k:k + 8]) - min(lengths[i] for i in first[k:k + 8])
                 for k in range(0, 400, 8))
    shuffled = torch.randperm(400, generator=torch.Generator().manual_seed(2)).tolist()
    random_spread = sum(max(lengths[i] for i in shuffled[k:k + 8]) - min(lengths[i] for i in shuffled[k:k + 8])
                        for k in range(0, 400, 8))
    assert spread < random_spread / 3


def test_length_groups_follow_the_global_batch_so_a_resume_with_another_split_continues_in_order():
    """Global batch 4 as 4x1 for 5 steps, then as 2x2: each step takes the sampler's next 4 samples, so the
    epoch is the uninterrupted one, no sample twice, none skipped; the micro-batches of 2 stay length-grouped."""
    lengths = [int(x) for x in torch.randint(5, 300, (59,), generator=torch.Generator().manual_seed(1))]
    order = list(SeededLengthGroupedSampler(lengths, 4, seed=3))
    micro_4 = [order[k:k + 4] for k in range(0, 59, 4)]
    micro_2 = [order[k:k + 2] for k in range(0, 59, 2)]
    resumed = [i for batch in micro_4[:5] for i in batch] + [i for batch in micro_2[5 * 2:] for i in batch]
    assert resumed == order and sorted(resumed) == list(range(59))
    spread = sum(abs(lengths[b[0]] - lengths[b[-1]]) for b in micro_2)
    assert spread < sum(abs(lengths[i] - lengths[j]) for i, j in zip(range(0, 58, 2), range(1, 59, 2))) / 3
