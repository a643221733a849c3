"""Memory and time of the next-token loss alone: ours (chunked, `model/cross_entropy.py`) against the usual
`F.cross_entropy` on the shifted logits upcast to fp32, on bf16 logits of a code model's vocabulary.

Both run in this process on the same logits, round-robin; each one's tensor peak is the most bytes allocated at
once above the logits themselves during forward + backward, from the profiler's allocation events (what
`torch.cuda.max_memory_allocated` would count on a GPU, minus the logits). Last line: ours / reference.

    python benchmarks/loss_memory.py [--vocab 256000] [--seq 1024] [--batch 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from dylora_moe.model.moe_model import shifted_lm_loss


def reference_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[..., :-1, :].reshape(-1, vocab).float(), labels[..., 1:].reshape(-1),
                           ignore_index=-100, reduction="sum")


def ours_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return shifted_lm_loss(logits, labels)[0]


def peak_above_start_mib(fn) -> float:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=256000, help="CodeGemma's vocabulary size")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.batch, args.seq, args.vocab, generator=g).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    variants = {"reference F.cross_entropy (fp32 copy)": reference_loss, "ours (chunked)": ours_loss}
    values, peaks, times = {}, {}, {name: [] for name in variants}

    for name, loss_fn in variants.items():
        def run(loss_fn=loss_fn, name=name):
            loss = loss_fn(logits, labels)
            loss.backward()
            values[name] = loss.item()
            logits.grad = None
        peaks[name] = peak_above_start_mib(run)
    for _ in range(args.repeats):
        for name, loss_fn in variants.items():
            start = time.perf_counter()
            loss_fn(logits, labels).backward()
            logits.grad = None
            times[name].append(time.perf_counter() - start)
    size = logits.numel() * logits.element_size() / 2**20
    print(f"bf16 logits ({args.batch}, {args.seq}, {args.vocab}): {size:.0f} MiB; peak above them during forward + "
          f"backward (the gradient included); median of {args.repeats} timed runs")
    reference = next(iter(variants))
    for name in variants:
        print(f"  {name:38s} loss {values[name]:.4f}  peak {peaks[name]:7.0f} MiB  "
              f"time {statistics.median(times[name]):.2f} s")
    ours = "ours (chunked)"
    print(f"ratio ours / reference: peak {peaks[ours] / peaks[reference]:.3f}, time "
          f"{statistics.median(times[ours]) / statistics.median(times[reference]):.2f}")


if __name__ == "__main__":
    main()
