"""Peak memory of one training step on a bf16 base against the same base in 4-bit NF4 (QLoRA), E=4 r=16.

A random Llama-shaped base (default hidden 2048, 16 layers, vocab 32000: ~0.94B parameters) is built in memory,
saved once to a temporary directory in bf16, and loaded by each variant in its own subprocess through the real
loader (`build_model`, with `--load_in_4bit`'s quantization for the 4-bit one), so each variant's memory is its
own. Both variants run the same step (same batch and sequence length, E=4 r=16 on q_proj/v_proj, fp32 experts,
no autocast), with activation checkpointing off and on (QLoRA is run with it: PEFT's k-bit preparation turns it
on). In each child: load, reset the peak counter, run one step (forward, backward, AdamW on the experts and
gates), read the peak; a second step gives the step time, and a third, under the profiler, the tensor counts.

Peak memory is, on CPU, the process's resident set high-water mark (VmHWM, reset before the step through
/proc/self/clear_refs; the whole-process peak, loading included, is printed too) and, on a GPU,
`torch.cuda.max_memory_allocated` (reset before the step). The GPU figure leaves out the CUDA context; its CPU
analogue is the peak minus the process baseline, the RSS of the same process after its imports (interpreter,
torch, transformers, and bitsandbytes for 4-bit) and before the model is built. Both the raw and the
baseline-subtracted ratios are printed; the goal (4-bit <= 0.45 x bf16) is read against the baseline-subtracted
step peak with activation checkpointing, at the first --seq (the last line).

Each child also counts tensors, to say where the peak goes: the loaded model's tensor bytes by kind (4-bit
packed layers with their quantization state, the unquantized base weights, experts and gates) and the
activations autograd saves for backward (parameters left out; under checkpointing, what stays saved between
the layers' recomputations), and the step's tensor peak: the tensors held between steps (model, grads, AdamW
state) plus the most the step allocates on top, from the profiler's allocation events. That is what
`max_memory_allocated` counts on a GPU; the RSS peak adds to it what the C heap keeps resident around them.

    python benchmarks/memory.py [--device cuda] [--layers 16] [--seq 256 128 512] [--batch 1] [--checkpointing both]
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--seq", type=int, nargs="+", default=[256],
                        help="sequence lengths, one row each; the goal line reads the first")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--checkpointing", default="both", choices=("both", "on", "off"),
                        help="activation checkpointing (recompute each layer in backward, as QLoRA runs do)")
    parser.add_argument("--gradient_checkpointing", action="store_true", help=argparse.SUPPRESS)  # child only
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
                         num_key_value_heads=args.hidden // 64, max_position_embeddings=max(*args.seq, 512),
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


def model_tensors_mib(model) -> dict:
    """The loaded model's tensor bytes by kind, each storage once (a tied head counts once)."""
    from dylora_moe.model.quantization import is_quantized_linear

    seen: set[int] = set()
    kinds = {"4bit layers": 0, "base weights": 0, "experts and gates": 0}

    def add(kind: str, tensor) -> None:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            kinds[kind] += storage.nbytes()

    for module in model.modules():
        quantized = is_quantized_linear(module)
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            add("4bit layers" if quantized else "experts and gates" if tensor.requires_grad else "base weights",
                tensor)
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        for tensor in quant_state_tensors(state) if quantized else ():
            add("4bit layers", tensor)
    return {kind: round(size / 2**20, 1) for kind, size in kinds.items()}


def quant_state_tensors(state) -> list:
    """A 4-bit weight's absmax and code tensors (double quantization nests a second state)."""
    if state is None:
        return []
    own = [t for t in (state.absmax, state.code, getattr(state, "offset", None)) if hasattr(t, "untyped_storage")]
    return own + quant_state_tensors(getattr(state, "state2", None))


class SavedActivations:
    """Bytes autograd saves for backward, parameters left out, each storage once."""

    def __init__(self, model) -> None:
        self.parameters = {t.untyped_storage().data_ptr() for t in model.parameters()}
        self.sizes: dict[int, int] = {}

    def pack(self, tensor):
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in self.parameters:
            self.sizes[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    def mib(self) -> float:
        return round(sum(self.sizes.values()) / 2**20, 1)


def trainer_state_mib(model, optimizer) -> float:
    """The experts' gradients and AdamW state, held between steps."""
    tensors = [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch_tensor(t)]
    return sum(t.untyped_storage().nbytes() for t in tensors) / 2**20


def torch_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.dim() > 0  # AdamW's step counter is a 0-d tensor


class TensorPeak:
    """The most tensor bytes allocated at once above the start of a step, from the profiler's allocation events:
    on CPU what `torch.cuda.max_memory_allocated` counts on a GPU (the step's tensors, not the C heap around
    them). Plus the tensors held between steps, it is the step's tensor peak. (On a GPU the allocator counts.)"""

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.profiler.__exit__(*exc)
        events = sorted((e for e in self.profiler.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
        live = peak = 0
        for event in events:
            live += event.nbytes()
            peak = max(peak, live)
        self.peak_mib = peak / 2**20


def child(args) -> dict:
    """One variant at one sequence length: load, one measured step, one timed step; a JSON line on stdout."""
    import torch

    from dylora_moe.model.config import DyLoRAConfig
    from dylora_moe.model.loading import build_model
    from dylora_moe.model.quantization import Quantization

    quantization = Quantization(bits=4, compute_dtype="bfloat16") if args.child == "4bit" else None
    import transformers.models.llama.modeling_llama  # noqa: F401  (so that the baseline below includes it)

    if quantization is not None:
        import bitsandbytes  # noqa: F401  (a cost of the 4-bit variant only: ~45 MiB)
    baseline, _ = current_and_peak(args.device)  # interpreter, torch, transformers (bitsandbytes): no weight yet
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
    seq = args.seq[0]
    tokens = torch.randint(3, args.vocab, (args.batch, seq), generator=torch.Generator().manual_seed(0)).to(device)

    def step(count_saved: SavedActivations | None = None) -> float:
        begin = time.perf_counter()
        counting = torch.autograd.graph.saved_tensors_hooks(count_saved.pack, lambda t: t) if count_saved else None
        with counting or contextlib.nullcontext():
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # the later steps keep the grads' memory, as training does
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - begin

    loaded, _ = current_and_peak(args.device)
    reset_peak(args.device)
    first_s = step()  # the measured step: nothing but the step runs in it
    _, step_peak = current_and_peak(args.device)
    second_s = step()  # the timed step
    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    saved = SavedActivations(model)
    with TensorPeak() as tensor_peak:  # a third step, counted: the profiler and the hooks stay out of the peak
        step(count_saved=saved)
    held = sum(model_tensors_mib(model).values()) + trainer_state_mib(model, optimizer)
    tensor_peak_mib = step_peak if args.device == "cuda" else held + tensor_peak.peak_mib
    return {"variant": args.child, "seq": seq, "checkpointing": args.gradient_checkpointing,
            "baseline_mib": round(baseline, 1), "after_load_mib": round(loaded, 1),
            "step_peak_mib": round(step_peak, 1), "process_peak_mib": round(whole, 1),
            "tensors_mib": model_tensors_mib(model), "saved_activations_mib": saved.mib(),
            "tensor_peak_mib": round(tensor_peak_mib, 1),
            "load_s": round(load_s, 1), "first_step_s": round(first_s, 2), "step_s": round(second_s, 2),
            "trainable": model.trainable_parameter_count()}


def run_variant(args, variant: str, base_dir: str, seq: int, checkpointing: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--base_dir", base_dir,
               "--device", args.device, "--vocab", str(args.vocab), "--seq", str(seq), "--batch", str(args.batch)]
    command += ["--gradient_checkpointing"] if checkpointing else []
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def above(result: dict, key: str) -> float:
    """A figure minus the process baseline (on a GPU the baseline is 0 allocated: the same figure)."""
    return result[key] - result["baseline_mib"]


def print_variant(result: dict, unit: str) -> None:
    tensors = ", ".join(f"{kind} {size:.0f}" for kind, size in result["tensors_mib"].items())
    print(f"  {result['variant']:>5}: baseline {result['baseline_mib']:6.0f}, after load {result['after_load_mib']:6.0f} "
          f"(+{above(result, 'after_load_mib'):.0f}), step peak {result['step_peak_mib']:6.0f} "
          f"(+{above(result, 'step_peak_mib'):.0f}) MiB {unit}; whole process {result['process_peak_mib']:.0f} MiB RSS; "
          f"tensors: {tensors} MiB; saved activations {result['saved_activations_mib']:.0f} MiB; tensor peak "
          f"{result['tensor_peak_mib']:.0f} MiB; load "
          f"{result['load_s']} s, step {result['first_step_s']} s then {result['step_s']} s")


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    settings = {"both": (False, True), "off": (False,), "on": (True,)}[args.checkpointing]
    unit = "allocated" if args.device == "cuda" else "RSS"
    rows = []
    with tempfile.TemporaryDirectory(prefix="dylora-memory-") as base_dir:
        count = save_random_base(args, base_dir)
        print(f"base: random Llama, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}: {count / 1e9:.2f}B "
              f"parameters; batch {args.batch}; E=4 r=16 on q_proj,v_proj, fp32 experts; device {args.device}; "
              f"MiB of {unit}, (+N) above the process baseline; {allocator_line()}", flush=True)
        for seq in args.seq:
            for checkpointing in settings:
                print(f"seq {seq}, activation checkpointing {'on' if checkpointing else 'off'}:", flush=True)
                bf16, nf4 = (run_variant(args, variant, base_dir, seq, checkpointing) for variant in VARIANTS)
                for result in (bf16, nf4):
                    print_variant(result, unit)
                rows.append((seq, checkpointing, bf16, nf4))
    print(f"\n4-bit / bf16, batch {args.batch}:")
    print("| seq | checkpointing | step peak raw | step peak above baseline | tensor peak | model after load above "
          "baseline | step time |")
    print("|---|---|---|---|---|---|---|")
    for seq, checkpointing, bf16, nf4 in rows:
        print(f"| {seq} | {'on' if checkpointing else 'off'} | {nf4['step_peak_mib'] / bf16['step_peak_mib']:.3f} | "
              f"{above(nf4, 'step_peak_mib') / above(bf16, 'step_peak_mib'):.3f} | "
              f"{nf4['tensor_peak_mib'] / bf16['tensor_peak_mib']:.3f} | "
              f"{above(nf4, 'after_load_mib') / above(bf16, 'after_load_mib'):.3f} | "
              f"{nf4['step_s'] / bf16['step_s']:.2f} |")
    seq, checkpointing, bf16, nf4 = next((r for r in rows if r[0] == args.seq[0] and r[1]), rows[0])
    ratio = above(nf4, "step_peak_mib") / above(bf16, "step_peak_mib")
    where = f"seq {seq}, batch {args.batch}, activation checkpointing {'on' if checkpointing else 'off'}"
    if args.device == "cpu":
        tensors = nf4["tensor_peak_mib"] / bf16["tensor_peak_mib"]
        print(f"4-bit / bf16 tensor peak (what max_memory_allocated counts on a GPU), {where}: {tensors:.3f} "
              f"({'within' if tensors <= 0.45 else 'above'} 0.45)")
    print(f"goal: 4-bit / bf16 step peak above the process baseline, {where}: {ratio:.3f} "
          f"({'met' if ratio <= 0.45 else 'not met'}: goal <= 0.45)")


def allocator_line() -> str:
    """The C allocator setting the children inherit: on CPU it moves the RSS figures (see docs/model.md)."""
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    return f"glibc mmap threshold fixed at {threshold} bytes" if threshold else "glibc malloc defaults"


if __name__ == "__main__":
    main()
