"""`TrainConfig`: every option of `dylora-moe train`, usable from a notebook as a plain dataclass.

The CLI flags are generated from this dataclass (underscore names as in the seed, dash aliases too), so the
library API and the command line cannot drift apart. Data options live in `DataConfig` (data/args.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from dylora_moe.data.config import DataConfig
from dylora_moe.errors import UserError


@dataclass
class TrainConfig:
    # model
    model_name: str = "tiny"
    num_experts: int = 4
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: str | None = None  # comma-separated; default per architecture
    top_k: int = 1
    router_temperature: float = 1.0
    router_input: str | None = None  # token | context | sequence; None: the checkpoint's when resuming, else
    # sequence in --mode continual and token otherwise
    balance_coefficient: float = 0.01
    maturity_ratio: float = 0.5  # all experts become mature (sparse routing) at this share of planned steps
    mature_after_steps: int | None = None  # explicit step instead of maturity_ratio; -1 = never
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 | flex_attention
    # optimisation
    output_dir: str = "outputs/dylora-moe"
    overwrite_output_dir: bool = False  # a fresh run may delete the checkpoints another run left in output_dir
    run_name: str | None = None
    seed: int = 42
    num_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    train_batch_size: int = 8
    eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    load_in_4bit: bool = False  # frozen base in 4-bit NF4 (QLoRA; needs bitsandbytes)
    load_in_8bit: bool = False
    bnb_4bit_compute_dtype: str | None = None  # float32 | bfloat16 | float16; None: follows --bf16/--fp16
    group_by_length: bool = False  # batches of similar lengths (seeded, resumable)
    packing: bool = False  # padding-free: each micro-batch's examples in one row, no attention across them
    # evaluation, checkpoints, stopping
    save_steps: int = 50
    eval_steps: int | None = None  # default: save_steps
    logging_steps: int = 10
    save_total_limit: int | None = None
    early_stopping_patience: int = 3
    disable_early_stopping: bool = False
    load_best_model_at_end: bool = False
    # resumption
    resume_from_checkpoint: str | None = None  # path / store URI / "latest" / "auto"
    wandb_checkpoint_artifact: str | None = None
    weights_only_resume: bool = False
    grow_experts: int = 0
    grow_experts_from: int | None = None  # new experts start as copies of this expert (None: fresh init)
    checkpoint_store: str | None = None
    # code benchmarks on the trained weights (HumanEval / MBPP, sandboxed)
    eval_benchmarks: str | None = None  # e.g. "humaneval,mbpp"
    eval_benchmarks_when: str = "end"  # or "epoch"
    eval_benchmarks_limit: int | None = None
    eval_max_new_tokens: int = 256
    eval_mbpp_path: str | None = None
    # tracking
    write_report: bool = False  # figures + summary in <output_dir>/report at the end (always when W&B is active)
    report_to: str = "auto"  # auto: W&B when WANDB_PROJECT/--wandb_project set and wandb is installed; none
    wandb_project: str | None = None
    wandb_entity: str | None = None
    # data
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resume_artifact(self) -> str | None:
        """`--wandb_checkpoint_artifact`, else `WANDB_CHECKPOINT_ARTIFACT` (the only place that reads it)."""
        return self.wandb_checkpoint_artifact or os.environ.get("WANDB_CHECKPOINT_ARTIFACT") or None

    def check(self) -> None:
        """Every option that needs no I/O, before torch sees it (NaN, negative rates, impossible top-k)."""
        if self.bf16 and self.fp16:
            raise UserError("--bf16 and --fp16 were both given; choose one")
        if self.router_input not in (None, "token", "context", "sequence"):
            raise UserError(f"--router_input must be token, context or sequence, got {self.router_input!r}")
        check_numbers(self)


# (name, lowest, highest, lowest allowed itself, highest allowed itself); None = unbounded
_RANGES = (
    ("learning_rate", 0.0, None, True, True), ("lora_dropout", 0.0, 1.0, True, False),
    ("label_smoothing", 0.0, 1.0, True, False), ("router_temperature", 0.0, None, False, True),
    ("lora_alpha", 0.0, None, False, True), ("weight_decay", 0.0, None, True, True),
    ("max_grad_norm", 0.0, None, True, True), ("warmup_ratio", 0.0, 1.0, True, True),
    ("balance_coefficient", 0.0, None, True, True), ("maturity_ratio", 0.0, None, True, True),
)
_AT_LEAST_ONE = ("num_experts", "lora_r", "train_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                 "save_steps", "logging_steps", "top_k", "early_stopping_patience")


def _range_text(low, high, low_ok: bool, high_ok: bool) -> str:
    low_part = f"{'>=' if low_ok else '>'} {low:g}"
    return low_part if high is None else f"{low_part} and {'<=' if high_ok else '<'} {high:g}"


def check_numbers(cfg: TrainConfig) -> None:
    """One line per bad value: what it was, the range expected."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{f.name} must be a finite number, got {value}")
    for name, low, high, low_ok, high_ok in _RANGES:
        value = getattr(cfg, name)
        too_low = value < low or (value == low and not low_ok)
        too_high = high is not None and (value > high or (value == high and not high_ok))
        if too_low or too_high:
            raise UserError(f"--{name} must be {_range_text(low, high, low_ok, high_ok)}, got {value:g}")
    for name in _AT_LEAST_ONE:
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.eval_steps is not None and cfg.eval_steps < 1:
        raise UserError(f"--eval_steps must be at least 1, got {cfg.eval_steps}")
    if cfg.top_k > cfg.num_experts + cfg.grow_experts:
        raise UserError(f"--top_k {cfg.top_k} is larger than the number of experts ({cfg.num_experts + cfg.grow_experts}"
                        f"); give --top_k at most {cfg.num_experts + cfg.grow_experts} or raise --num_experts")
    if cfg.grow_experts < 0:
        raise UserError(f"--grow_experts must be at least 0, got {cfg.grow_experts}")
    if cfg.num_epochs <= 0 and cfg.max_steps <= 0:
        raise UserError("--num_epochs must be > 0 (or give --max_steps)")


FLAG_HELP = {
    "router_input": "what the gates read: 'token' (each token's input), 'context' (causal running mean of each "
                    "gate's input over the sequence) or 'sequence' (one running mean of the first layer's input, "
                    "shared by all gates), so experts specialise by skill; default: the checkpoint's when "
                    "resuming, 'sequence' in --mode continual, else 'token'",
    "overwrite_output_dir": "let a fresh run delete the checkpoints another run left in --output_dir (otherwise "
                            "refused: resume it, or choose a new --output_dir)",
    "attn_implementation": "attention kernel of the base: sdpa, eager, flash_attention_2 (NVIDIA GPU + flash-attn) "
                           "or flex_attention",
    "model_name": "hub id, local HF model directory, or 'tiny' (the embedded base shipped with the package)",
    "target_modules": "comma-separated projection names (default per architecture: q_proj,v_proj; c_attn for GPT-2)",
    "maturity_ratio": "share of the planned steps after which all experts are mature (sparse top-k routing)",
    "mature_after_steps": "step after which all experts are mature (overrides --maturity_ratio; -1 = never)",
    "resume_from_checkpoint": "checkpoint dir, output dir, store URI, or no value / 'latest' (newest in "
    "--output_dir), or 'auto' (newest verified of this run locally or in --checkpoint_store; fresh if none)",
    "wandb_checkpoint_artifact": "W&B artifact to resume from, entity/project/name:version (also "
    "WANDB_CHECKPOINT_ARTIFACT); any store URI works too",
    "weights_only_resume": "resume only experts/gates/maturity from a checkpoint; optimizer and LR schedule start fresh",
    "grow_experts": "add N new immature experts to the resumed model",
    "grow_experts_from": "initialise the grown experts as copies of this expert instead of from scratch",
    "checkpoint_store": "upload checkpoints to this store URI (dir, gs://, s3://, wandb://entity/project/name)",
    "load_in_4bit": "load the frozen base's Linear layers in 4-bit NF4 with double quantisation (QLoRA; needs "
                    "pip install 'dylora-moe[qlora]'); the experts stay fp32",
    "load_in_8bit": "load the frozen base's Linear layers in 8 bits (LLM.int8; needs bitsandbytes)",
    "bnb_4bit_compute_dtype": "dtype the 4-bit layers compute in, and of the base's unquantized weights: float32, "
                              "bfloat16 or float16 (default: bfloat16 with --bf16, float16 with --fp16, else float32)",
    "group_by_length": "batch examples of similar lengths (seeded order per epoch; less padding, exact resume)",
    "packing": "padding-free batches: each micro-batch's examples flattened into one row (positions restart, "
               "no attention or routing context across examples); no compute on pad tokens",
    "eval_steps": "evaluate every N steps (default: --save_steps)",
    "eval_benchmarks": "run code benchmarks (humaneval,mbpp) on the trained weights, sandboxed",
    "eval_benchmarks_when": "'end' of training or every 'epoch'",
    "eval_benchmarks_limit": "only the first N problems of each benchmark",
    "eval_mbpp_path": "local MBPP jsonl for --eval_benchmarks mbpp (otherwise the hub)",
}
