"""Peak memory of one training step on a bf16 base against the same base in 4-bit NF4 (QLoRA), E=4 r=16.

A random Llama-shaped base (default hidden 2048, 16 layers, vocab 32000: ~0.94B parameters) is built in memory,
saved once to a temporary directory in bf16, and loaded by each variant in its own subprocess through the real
loader (`build_model`, with `--load_in_4bit`'s quantization for the 4-bit one), so each variant's memory is its
own. In each child: load, reset the peak counter, run one step (forward, backward, AdamW on the experts and
gates), read the peak; a second step gives the step time. Prints each variant's figures and, last, the ratios
4-bit / bf16.

Peak memory is, on CPU, the process's resident set high-water mark (VmHWM, reset before the step through
/proc/self/clear_refs; the whole-process peak, loading included, is printed too) and, on a GPU,
`torch.cuda.max_memory_allocated` (reset before the step).

    python benchmarks/memory.py [--device cuda] [--layers 16] [--seq 256] [--batch 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

VARIANTS = ("bf16", "4bit")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="recompute each layer in backward (what QLoRA runs usually do): activations shrink")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--base_dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def save_random_base(args, directory: str) -> int:
    """A randomly initialised Llama of the requested shape, saved in bf16; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.6875),
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=args.hidden // 64, max_position_embeddings=max(args.seq, 512),
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.set_default_dtype(torch.bfloat16)
    model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(directory)
    save_stub_tokenizer(directory)
    return sum(p.numel() for p in model.parameters())


def save_stub_tokenizer(directory: str) -> None:
    """The loader wants a tokenizer beside the weights; the step feeds token ids directly."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(directory)


def rss_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (kB there)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def current_and_peak(device: str) -> tuple[float, float]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    return rss_mib("VmRSS"), rss_mib("VmHWM")


def child(args) -> dict:
    """One variant: load, one measured step, one timed step; a JSON line on stdout."""
    import torch

    from dylora_moe.model.config import DyLoRAConfig
    from dylora_moe.model.loading import build_model
    from dylora_moe.model.quantization import Quantization

    quantization = Quantization(bits=4, compute_dtype="bfloat16") if args.child == "4bit" else None
    import transformers.models.llama.modeling_llama  # noqa: F401  (so that the baseline below includes it)

    if quantization is not None:
        import bitsandbytes  # noqa: F401  (a cost of the 4-bit variant only: ~120 MiB)
    baseline = rss_mib("VmRSS")  # the interpreter, torch, transformers (and bitsandbytes): before any weight
    config = DyLoRAConfig(num_experts=4, lora_r=16, lora_alpha=32, lora_dropout=0.0)
    started = time.perf_counter()
    model, _ = build_model(args.base_dir, config, dtype=None if quantization else "bfloat16", log=lambda *_: None,
                           quantization=quantization)
    if args.device == "cuda" and quantization is None:
        model.to("cuda")
    model.to(next(model.base_model.parameters()).device)  # the maturity buffer follows the base
    model.train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    load_s = time.perf_counter() - started
    device = next(model.base_model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens = torch.randint(3, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(device)

    def step() -> float:
        begin = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # the second step keeps the grads' memory, as training does
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - begin

    loaded, _ = current_and_peak(args.device)
    reset_peak(args.device)
    first_s = step()
    _, step_peak = current_and_peak(args.device)
    second_s = step()
    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": args.child, "baseline_rss_mib": round(baseline, 1), "after_load_mib": round(loaded, 1),
            "step_peak_mib": round(step_peak, 1),
            "process_peak_mib": round(whole, 1), "load_s": round(load_s, 1), "first_step_s": round(first_s, 2),
            "step_s": round(second_s, 2), "trainable": model.trainable_parameter_count()}


def run_variant(args, variant: str, base_dir: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--base_dir", base_dir,
               "--device", args.device, "--vocab", str(args.vocab), "--seq", str(args.seq), "--batch", str(args.batch)]
    command += ["--gradient_checkpointing"] if args.gradient_checkpointing else []
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="dylora-memory-") as base_dir:
        count = save_random_base(args, base_dir)
        print(f"base: random Llama, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}: {count / 1e9:.2f}B "
              f"parameters; batch {args.batch} x {args.seq} tokens; E=4 r=16 on q_proj,v_proj; device {args.device}"
              + ("; activation checkpointing" if args.gradient_checkpointing else ""))
        results = {variant: run_variant(args, variant, base_dir) for variant in VARIANTS}
    unit = "allocated" if args.device == "cuda" else "RSS"
    for result in results.values():
        print(f"{result['variant']:>5}: after load {result['after_load_mib']:8.0f} MiB, step peak "
              f"{result['step_peak_mib']:8.0f} MiB {unit}, whole process {result['process_peak_mib']:8.0f} MiB RSS; "
              f"load {result['load_s']} s, step {result['first_step_s']} s then {result['step_s']} s "
              f"(process baseline before loading {result['baseline_rss_mib']:.0f} MiB RSS)")
    bf16, nf4 = results["bf16"], results["4bit"]
    if args.device == "cpu":
        above = [r["step_peak_mib"] - r["baseline_rss_mib"] for r in (nf4, bf16)]
        loaded = [r["after_load_mib"] - r["baseline_rss_mib"] for r in (nf4, bf16)]
        print(f"4-bit / bf16 above the process baseline: step peak {above[0] / above[1]:.3f}, "
              f"model after load {loaded[0] / loaded[1]:.3f}")
    print(f"4-bit / bf16: step peak {nf4['step_peak_mib'] / bf16['step_peak_mib']:.3f} (goal <= 0.45), "
          f"after load {nf4['after_load_mib'] / bf16['after_load_mib']:.3f}, whole process "
          f"{nf4['process_peak_mib'] / bf16['process_peak_mib']:.3f}, step time {nf4['step_s'] / bf16['step_s']:.2f}")


if __name__ == "__main__":
    main()
