"""Generation speed of DyLoRA-MoE against a single PEFT LoRA and the bare base, greedy with KV cache.

One process, one small Llama config (random weights; `min_new_tokens` keeps EOS away so every run makes the same number
of tokens), the variants measured round-robin in a shuffled order at each batch size (so load on the machine hits
them alike); prints the median new tokens/s of each, its ratio to PEFT, and last ours-sparse / PEFT at batch 1.

    python benchmarks/generation.py [--device cuda] [--batches 1,8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from step_cost import make_base, ours, peft_lora  # the same base and variants as the step-cost benchmark

PEFT = "PEFT LoRA (r=16)"
SPARSE = "ours sparse top-1 (E=4, r=16)"


def generate_fn(model, prompt: torch.Tensor, args):
    model.to(args.device).eval()
    mask = torch.ones_like(prompt)

    def run() -> float:
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
        if args.device == "cuda":
            torch.cuda.synchronize()
        assert out.shape[1] == prompt.shape[1] + args.new_tokens
        return prompt.shape[0] * args.new_tokens / (time.perf_counter() - start)

    return run


def measure(variants: dict, batch: int, args) -> dict[str, float]:
    prompt = torch.randint(3, args.vocab, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
    runs = {name: generate_fn(model, prompt.to(args.device), args) for name, model in variants.items()}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    order = list(runs)
    shuffle = random.Random(batch).shuffle
    for i in range(args.warmup + args.repeats):
        shuffle(order)
        for name in order:
            rate = runs[name]()
            if i >= args.warmup:
                rates[name].append(rate)
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    args.seq = args.prompt + args.new_tokens  # step_cost.make_base sizes the position table by it
    variants = {
        "bare base": make_base(args),
        PEFT: peft_lora(args),
        "ours dense (E=4, r=16)": ours(args, sparse=False),
        SPARSE: ours(args, sparse=True),
        "ours sparse, sequence routing": ours(args, sparse=True, router_input="sequence"),
    }
    print(f"device={args.device} hidden={args.hidden} layers={args.layers} prompt={args.prompt} "
          f"new_tokens={args.new_tokens} targets=q_proj,v_proj; greedy, KV cache; median of {args.repeats} runs")
    sparse_at_1 = None
    for batch in (int(b) for b in args.batches.split(",")):
        rates = measure(variants, batch, args)
        peft = rates[PEFT]
        print(f"batch {batch}:")
        for name, rate in rates.items():
            print(f"  {name:32s} {rate:9.1f} tokens/s   x{rate / peft:.3f} of PEFT")
        if batch == 1:
            sparse_at_1 = rates[SPARSE] / peft
    if sparse_at_1 is not None:
        print(f"ratio ours-sparse / PEFT at batch 1: {sparse_at_1:.3f}")


if __name__ == "__main__":
    main()
