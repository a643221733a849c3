"""The options of `dylora-moe eval` and `dylora-moe generate` as dataclasses: their flags are generated from the
fields (flags.py), like `train`'s, so `--config` files and the command line spell them the same way.

Nothing here imports torch: `--help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dylora_moe.model.attention import ATTN_IMPLEMENTATIONS, UNSET_REASON

COMPUTE_DTYPE_NAMES = ("float32", "bfloat16", "float16")  # the keys of quantization.COMPUTE_DTYPES


@dataclass
class InferenceOptions:
    """Which model a command runs, on what and how it is loaded."""

    model: str | None = field(default=None, metadata={"help": (
        "checkpoint directory or store URI (wandb://, gs://, s3://); with --base-model, a base model name or "
        "directory"), "required": True, "metavar": "PATH|URI"})
    base_model: bool = field(default=False, metadata={"help": "run the bare base model (no experts), for comparison"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ...; None: the best available"})
    dtype: str | None = field(default=None, metadata={"help": (
        "float32, bfloat16, float16; None: the loader's")})
    load_in_4bit: bool = field(default=False, metadata={"help": (
        "load the frozen base's Linear layers in 4-bit NF4 (needs bitsandbytes)")})
    load_in_8bit: bool = field(default=False, metadata={"help": (
        "load the frozen base's Linear layers in 8 bits (needs bitsandbytes)")})
    bnb_4bit_compute_dtype: str | None = field(default=None, metadata={"help": (
        "dtype the 4-bit layers compute in; None: --dtype's, else float32"), "choices": COMPUTE_DTYPE_NAMES})
    attn_implementation: str | None = field(default=None, metadata={"help": (
        f"attention kernel: {', '.join(ATTN_IMPLEMENTATIONS)}; None: {UNSET_REASON}"), "metavar": "NAME"})


@dataclass
class EvalOptions(InferenceOptions):
    benchmarks: str = field(default="humaneval", metadata={"help": "comma-separated: humaneval,mbpp"})
    limit: int | None = field(default=None, metadata={"help": "first N problems of each benchmark"})
    n: int = field(default=1, metadata={"help": "samples per problem (n > 1 needs --temperature > 0)"})
    k: str = field(default="1", metadata={"help": "comma-separated k values for pass@k, each <= n"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling: smallest token set with this mass"})
    max_new_tokens: int = field(default=512, metadata={"help": "most tokens generated per completion"})
    batch_size: int = field(default=8, metadata={"help": "prompts generated together"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling"})
    output: str = field(default="eval_results.json", metadata={"help": (
        "JSON with per-problem completions and results"), "metavar": "FILE"})
    mbpp_path: str | None = field(default=None, metadata={"help": (
        "MBPP JSONL (e.g. mbpp.jsonl) instead of the Hugging Face hub"), "metavar": "FILE"})
    timeout: float = field(default=10.0, metadata={"help": "seconds per program"})
    memory_mb: int = field(default=1024, metadata={"help": "address-space cap per program (MiB)"})
    workers: int | None = field(default=None, metadata={"help": "programs run in parallel; None: one per CPU"})


@dataclass
class GenerateOptions(InferenceOptions):
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ...; None: cpu"})
    prompt: str | None = field(default=None, metadata={"help": (
        "the instruction; None: read --prompt-file or stdin"), "exclusive": "prompt", "metavar": "TEXT"})
    prompt_file: str | None = field(default=None, metadata={"help": "file holding the instruction",
                                                            "exclusive": "prompt", "metavar": "FILE"})
    raw: bool = field(default=False, metadata={"help": "send the prompt as is, without the training template"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling: smallest token set with this mass"})
    max_new_tokens: int = field(default=256, metadata={"help": "most tokens generated"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling"})
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of streaming text"})
