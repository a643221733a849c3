"""Real (non-pad) training tokens per second: padded random batches (today) vs --group_by_length vs --packing.

One process, the default `stdlib` data and the embedded tiny base. At each --max_seq_length the three modes
train the same fresh model round-robin, one optimizer step at a time in a shuffled order (so load on the
machine hits them alike), on batches spread evenly over the epoch. Real tokens are the examples' own tokens;
padded rows count every position the model computes.
Prints, per length and mode, the real/computed token share and real tokens/s, the ratios against padded, and
last the best ratio.

    python benchmarks/throughput.py [--lengths 1024,512] [--steps 6] [--batch 8]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from dylora_moe.data.collator import CausalLMCollator
from dylora_moe.data.config import DataConfig
from dylora_moe.data.length_sampler import SeededLengthGroupedSampler
from dylora_moe.data.packing import PackingCollator
from dylora_moe.data.pipeline import build_datasets
from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.loading import build_model

MODES = ("padded", "group_by_length", "packing")


def in_batches(order: list[int], batch: int) -> list[list[int]]:
    return [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]


def mode_batches(lengths: list[int], batch: int) -> dict[str, list[list[int]]]:
    """Each mode's batches of example indices: random order for padded and packing, grouped for the other."""
    permutation = list(range(len(lengths)))
    random.Random(0).shuffle(permutation)
    grouped = list(SeededLengthGroupedSampler(lengths, batch, seed=0))
    return {"padded": in_batches(permutation, batch), "group_by_length": in_batches(grouped, batch),
            "packing": in_batches(permutation, batch)}


def computed_tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(real tokens, positions computed) of one collated batch."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum()), batch["attention_mask"].numel()
    return batch["input_ids"].numel(), batch["input_ids"].numel()


def measure(max_len: int, args) -> dict[str, float]:
    """Real tokens/s of each mode at one --max_seq_length, round-robin on one model."""
    torch.manual_seed(0)
    model, tokenizer = build_model("tiny", DyLoRAConfig(num_experts=4, lora_r=16, lora_alpha=32), log=lambda m: None)
    data = build_datasets(DataConfig(max_seq_length=max_len), tokenizer).train
    lengths = [len(ids) for ids in data["input_ids"]]
    batches = mode_batches(lengths, args.batch)
    collators = {"padded": CausalLMCollator(tokenizer.pad_token_id),
                 "group_by_length": CausalLMCollator(tokenizer.pad_token_id), "packing": PackingCollator()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    stats = {mode: {"real": 0, "computed": 0, "seconds": 0.0} for mode in MODES}
    schedule = [mode for _ in range(args.steps) for mode in MODES]
    random.Random(1).shuffle(schedule)
    cursor = dict.fromkeys(MODES, 0)
    stride = {mode: max(1, len(b) // (args.steps + 1)) for mode, b in batches.items()}  # spread over the epoch
    for mode in list(MODES) + schedule:  # the first step of each mode is a warm-up, not counted
        indices = batches[mode][cursor[mode] * stride[mode] % len(batches[mode])]
        batch = collators[mode]([data[i] for i in indices])
        cursor[mode] += 1
        start = time.perf_counter()
        model(**batch).lm_loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if cursor[mode] > 1:
            real, computed = computed_tokens(batch)
            stats[mode]["seconds"] += elapsed
            stats[mode]["real"] += real
            stats[mode]["computed"] += computed
    rates = {mode: s["real"] / s["seconds"] for mode, s in stats.items()}
    for mode, s in stats.items():
        print(f"max_seq_length {max_len} {mode:>15}: real/computed tokens {s['real'] / s['computed']:.0%}, "
              f"{rates[mode]:,.0f} real tokens/s, {rates[mode] / rates['padded']:.2f}x padded")
    return {mode: rates[mode] / rates["padded"] for mode in MODES if mode != "padded"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,512")
    parser.add_argument("--steps", type=int, default=6, help="counted steps per mode and length")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    ratios = {(int(n), mode): r for n in args.lengths.split(",") for mode, r in measure(int(n), args).items()}
    (length, mode), best = max(ratios.items(), key=lambda item: item[1])
    print(f"best: {mode} / padded real tokens/s = {best:.2f}x at max_seq_length {length}")


if __name__ == "__main__":
    main()
