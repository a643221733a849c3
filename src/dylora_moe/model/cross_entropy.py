"""Next-token cross entropy that never holds the full-vocabulary logits in fp32.

The usual loss (`F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), ...)`) copies the shifted logits, upcasts
them to fp32 and keeps the fp32 log-softmax for backward; its backward then makes two more fp32 tensors of the
same size. For a code model's vocabulary that is most of a QLoRA step's activation memory: CodeGemma's 256,000
entries at 1,024 tokens are 1 GiB per fp32 copy. Here both directions walk the positions in chunks of at most
`CHUNK_ELEMENTS` logits: the forward keeps only the logits themselves (which the lm_head's output is anyway),
and the backward turns each chunk's fp32 copy into its gradient in place and writes it, in the logits' own
dtype, into one tensor: one fp32 chunk at a time is all the loss adds to the logits and their gradient. The
result is the same sum as `F.cross_entropy(..., reduction="sum")` on the fp32 logits, ignored labels (-100) and
label smoothing included.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 20  # fp32 logits per chunk: 4 MiB, e.g. 32 positions of a 32,000-entry vocabulary
IGNORE = -100


def shifted_cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor,
                              label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross entropy of position t's logits (batch, seq, V) toward label t+1 (batch, seq), the labels on
    the logits' device."""
    return _ShiftedCrossEntropy.apply(logits, labels, label_smoothing)


def _chunks(logits: torch.Tensor, labels: torch.Tensor):
    """(row, start, end, fp32 logits (n, V), targets (n,), valid (n,)) over every shifted position."""
    vocab = logits.shape[-1]
    step = max(1, CHUNK_ELEMENTS // vocab)
    for row in range(logits.shape[0]):
        for start in range(0, logits.shape[1] - 1, step):
            end = min(start + step, logits.shape[1] - 1)
            targets = labels[row, start + 1:end + 1]
            valid = targets != IGNORE
            chunk = logits[row, start:end].to(torch.float32, copy=True)  # copied even from fp32: edited in place
            yield row, start, end, chunk, targets.clamp_min(0), valid
            del chunk  # the caller drops its name too, so the next copy is made after this one is freed


class _ShiftedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for _, _, _, chunk, targets, valid in _chunks(logits, labels):
            log_z = torch.logsumexp(chunk, dim=-1)
            picked = chunk.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            loss = log_z - (1 - label_smoothing) * picked
            if label_smoothing:
                loss = loss - label_smoothing * chunk.mean(dim=-1)
            total = total + loss.masked_fill(~valid, 0.0).sum()
            del chunk
        ctx.save_for_backward(logits, labels)
        ctx.label_smoothing = label_smoothing
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        logits, labels = ctx.saved_tensors
        smoothing = ctx.label_smoothing
        grad = torch.zeros_like(logits)  # the last position of each row predicts nothing
        for row, start, end, chunk, targets, valid in _chunks(logits, labels):
            chunk_grad = chunk.sub_(torch.logsumexp(chunk, dim=-1, keepdim=True)).exp_()  # softmax, in place
            if smoothing:
                chunk_grad.sub_(smoothing / chunk.shape[-1])
            chunk_grad.scatter_add_(-1, targets.unsqueeze(-1),
                                    chunk_grad.new_full((targets.numel(), 1), -(1 - smoothing)))
            chunk_grad.mul_((valid.unsqueeze(-1) * grad_total).to(chunk_grad.dtype))
            grad[row, start:end] = chunk_grad
            del chunk, chunk_grad  # the loop would rebind them only after the next copy exists
        return grad, None, None
