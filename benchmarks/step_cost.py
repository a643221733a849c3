"""Step cost of DyLoRA-MoE against a single PEFT LoRA and the upstream two-pass design.

One process, one small Llama config, the variants measured round-robin in a shuffled order (so load on the machine hits them
alike); prints the median forward+backward+optimizer step time of each and, last, ours-dense / PEFT.

    python benchmarks/step_cost.py [--device cuda] [--dtype bf16] [--steps 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.moe_model import DyLoRAMoEModel


def make_base(args) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.6875),
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=args.hidden // 64, max_position_embeddings=args.seq)
    return LlamaForCausalLM(cfg)


def ours(args, sparse: bool, router_input: str = "token"):
    config = DyLoRAConfig(num_experts=4, lora_r=16, lora_alpha=32, lora_dropout=0.0, router_input=router_input)
    model = DyLoRAMoEModel(make_base(args), config)
    model.set_maturity([sparse] * 4)
    return model


def peft_lora(args):
    return get_peft_model(make_base(args), LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                      lora_dropout=0.0))


class TwoPass(torch.nn.Module):
    """Upstream's design: a full pass for the last hidden state, a gate on it, then the routed pass."""

    def __init__(self, args):
        super().__init__()
        self.inner = ours(args, sparse=False)
        self.gate = torch.nn.Linear(args.hidden, 4)

    def forward(self, input_ids, labels):
        hidden = self.inner.base_model(input_ids=input_ids, output_hidden_states=True).hidden_states[-1]
        routing = self.gate(hidden).softmax(-1)
        out = self.inner(input_ids=input_ids, labels=labels)
        out.loss = out.loss + 0.0 * routing.sum()  # keeps the first pass in the backward graph, as upstream did
        return out


def step_fn(model, batch, device, dtype):
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    batch = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    batch = batch.to(args.device)
    variants = {
        "ours dense (E=4, r=16)": ours(args, sparse=False),
        "ours sparse top-1 (E=4, r=16)": ours(args, sparse=True),
        "ours dense, context routing": ours(args, sparse=False, router_input="context"),
        "PEFT LoRA (r=16)": peft_lora(args),
        "two-pass (upstream design)": TwoPass(args),
    }
    steps = {name: step_fn(model, batch, args.device, dtype) for name, model in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(steps)
    shuffle = random.Random(0).shuffle
    for i in range(args.warmup + args.steps):
        shuffle(order)  # no variant always runs right after the biggest one
        for name in order:
            elapsed = steps[name]()
            if i >= args.warmup:
                times[name].append(elapsed)
    print(f"device={args.device} dtype={args.dtype} hidden={args.hidden} layers={args.layers} "
          f"batch={args.batch}x{args.seq} targets=q_proj,v_proj; median of {args.steps} steps")
    medians = {name: statistics.median(t) for name, t in times.items()}
    peft = medians["PEFT LoRA (r=16)"]
    for name, value in medians.items():
        print(f"  {name:32s} {value * 1000:9.1f} ms   x{value / peft:.3f} of PEFT")
    print(f"ratio ours-dense / PEFT: {medians['ours dense (E=4, r=16)'] / peft:.3f}")


if __name__ == "__main__":
    main()
