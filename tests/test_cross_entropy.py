"""The chunked next-token cross entropy equals PyTorch's on fp32 logits, in value and gradient, and keeps less
memory for backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dylora_moe.model import cross_entropy
from dylora_moe.model.cross_entropy import shifted_cross_entropy_sum


def _reference(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1),
                           ignore_index=-100, label_smoothing=smoothing, reduction="sum")


def _case(dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(3, 19, 37, generator=g) * 3).to(dtype).requires_grad_()
    labels = torch.randint(0, 37, (3, 19), generator=g)
    labels[0, 5:9] = -100
    labels[2, :] = -100  # a row with nothing to score
    return logits, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk_elements", [37 * 4, 1 << 22])  # chunks of 4 positions (a ragged last one), or one
def test_equals_torch_cross_entropy_in_value_and_gradient(dtype, smoothing, chunk_elements, monkeypatch):
    monkeypatch.setattr(cross_entropy, "CHUNK_ELEMENTS", chunk_elements)
    logits, labels = _case(dtype)
    ours = shifted_cross_entropy_sum(logits, labels, smoothing)
    (grad,) = torch.autograd.grad(ours * 0.5, logits)
    reference = _reference(logits, labels, smoothing)
    (reference_grad,) = torch.autograd.grad(reference * 0.5, logits)
    assert ours.dtype == torch.float32 and grad.dtype == dtype
    assert abs(ours.item() - reference.item()) <= 1e-5 * abs(reference.item())
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2  # bf16: both round the same fp32 gradient once
    assert (grad.float() - reference_grad.float()).abs().max().item() <= tolerance
    assert grad[:, -1].abs().sum() == 0 and grad[2].abs().sum() == 0 and grad[0, 4:8].abs().sum() == 0


def test_keeps_only_the_logits_for_backward():
    logits, labels = _case(torch.bfloat16)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        shifted_cross_entropy_sum(logits, labels)
    fp32_bytes = sum(t.numel() * t.element_size() for t in saved if t.dtype == torch.float32)
    assert fp32_bytes == 0  # PyTorch's keeps an fp32 log-softmax the size of the logits
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        saved.clear()
        _reference(logits, labels, 0.0)
    assert sum(t.numel() for t in saved if t.dtype == torch.float32) >= logits[:, :-1].numel()
