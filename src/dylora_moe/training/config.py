"""`TrainConfig`: every option of `dylora-moe train`, usable from a notebook as a plain dataclass.

The CLI flags are generated from these fields (flags.py: help from `metadata`, underscore names as in the
seed, dash aliases too), so the library API and the command line cannot drift apart. Data options live in
`DataConfig` (data/config.py); `check()` is the one place a config is validated before anything loads.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from dylora_moe.data.config import DataConfig
from dylora_moe.errors import UserError

_NO_ARTIFACT = frozenset({"", "none", "null"})  # resume_artifact values meaning "start fresh"


@dataclass
class TrainConfig:
    # model
    model_name: str = field(default="tiny", metadata={"help": (
        "hub id, local HF model directory, or 'tiny' (the embedded base shipped with the package)")})
    num_experts: int = field(default=4, metadata={"help": "number of LoRA experts"})
    lora_r: int = field(default=16, metadata={"help": "rank of each expert's LoRA matrices"})
    lora_alpha: float = field(default=32.0, metadata={"help": (
        "LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)")})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on each expert's LoRA input"})
    target_modules: str | None = field(default=None, metadata={"help": (
        "comma-separated projection names (default: read from the base's attention, its query and value "
        "projections or its fused qkv projection, e.g. q_proj,v_proj; c_attn for GPT-2; see docs/model.md)")})
    top_k: int = field(default=1, metadata={"help": "experts each token is routed to once the experts are mature"})
    router_temperature: float = field(default=1.0, metadata={"help": (
        "softmax temperature of the router's gate logits")})
    router_input: str | None = field(default=None, metadata={"help": (
        "what the gates read: 'token' (each token's input), 'context' (causal running mean of each gate's input over "
        "the sequence) or 'sequence' (one running mean of the first layer's input, shared by all gates), so experts "
        "specialise by skill; default: the checkpoint's when resuming, 'sequence' in --mode continual, else 'token'")})
    balance_coefficient: float = field(default=0.01, metadata={"help": (
        "weight of the load-balancing loss that spreads tokens over the experts")})
    maturity_ratio: float = field(default=0.5, metadata={"help": (
        "share of the planned steps after which all experts are mature (sparse top-k routing)")})
    mature_after_steps: int | None = field(default=None, metadata={"help": (
        "step after which all experts are mature (overrides --maturity_ratio; -1 = never)")})
    attn_implementation: str | None = field(default=None, metadata={"help": (
        "attention kernel of the base: sdpa, eager, flash_attention_2 (NVIDIA GPU + flash-attn) or flex_attention; "
        "unset: transformers picks sdpa where the architecture supports it, else eager (the checkpoint's "
        "run_config.json records the kernel used)")})
    # optimisation
    output_dir: str = field(default="outputs/dylora-moe", metadata={"help": (
        "where checkpoints, logs and the report are written")})
    overwrite_output_dir: bool = field(default=False, metadata={"help": (
        "let a fresh run delete the checkpoints another run left in --output_dir (otherwise refused: resume it, or "
        "choose a new --output_dir)")})
    run_name: str | None = field(default=None, metadata={"help": "name of the run (W&B and the trainer's logs)"})
    seed: int = field(default=42, metadata={"help": "seed of model init, data order, subsets and splits"})
    num_epochs: float = field(default=1.0, metadata={"help": (
        "passes over the training set (ignored when --max_steps is set)")})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps to train (-1: from --num_epochs)"})
    learning_rate: float = field(default=1e-3, metadata={"help": (
        "peak learning rate (on resume: the new peak from the resume step on, the schedule keeping its shape)")})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": (
        "learning-rate schedule (any of transformers' SchedulerType)")})
    warmup_ratio: float = field(default=0.05, metadata={"help": (
        "share of the planned steps spent warming the learning rate up")})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the language-modelling loss"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    train_batch_size: int = field(default=8, metadata={"help": "training examples per device per micro-batch"})
    eval_batch_size: int = field(default=8, metadata={"help": "evaluation examples per device per batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    bf16: bool = field(default=False, metadata={"help": "train in bfloat16 mixed precision"})
    fp16: bool = field(default=False, metadata={"help": "train in float16 mixed precision"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": (
        "recompute activations in the backward pass (less memory, more compute)")})
    load_in_4bit: bool = field(default=False, metadata={"help": (
        "load the frozen base's Linear layers in 4-bit NF4 with double quantisation (QLoRA; needs pip install "
        "'dylora-moe[qlora]'); the experts stay fp32")})
    load_in_8bit: bool = field(default=False, metadata={"help": (
        "load the frozen base's Linear layers in 8 bits (LLM.int8; needs bitsandbytes)")})
    bnb_4bit_compute_dtype: str | None = field(default=None, metadata={"help": (
        "dtype the 4-bit layers compute in, and of the base's unquantized weights: float32, bfloat16 or float16 "
        "(default: bfloat16 with --bf16, float16 with --fp16, else float32)")})
    group_by_length: bool | None = field(default=None, metadata={"help": (
        "batch examples of similar lengths (seeded order per epoch; less padding, exact resume); --no_group_by_length "
        "for random order. Unset: on for a new run without --packing, and as the checkpoint was trained when "
        "resuming, so a resume stays exact")})
    packing: bool = field(default=False, metadata={"help": (
        "padding-free batches: each micro-batch's examples flattened into one row (positions restart, no attention "
        "or routing context across examples); no compute on pad tokens")})
    # evaluation, checkpoints, stopping
    save_steps: int = field(default=50, metadata={"help": "save a checkpoint every N steps"})
    eval_steps: int | None = field(default=None, metadata={"help": "evaluate every N steps (default: --save_steps)"})
    logging_steps: int = field(default=10, metadata={"help": "log the training loss every N steps"})
    save_total_limit: int | None = field(default=None, metadata={"help": (
        "keep at most N checkpoints (the best one is always kept)")})
    early_stopping_patience: int = field(default=3, metadata={"help": (
        "stop after N evaluations without a better eval_loss")})
    disable_early_stopping: bool = field(default=False, metadata={"help": "never stop early"})
    load_best_model_at_end: bool = field(default=False, metadata={"help": (
        "load the checkpoint with the best eval_loss when training ends (resumed elsewhere: fetched from "
        "--checkpoint_store's best, else the last weights, said so)")})
    # resumption
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": (
        "checkpoint dir, output dir, store URI, or no value / 'latest' (newest in --output_dir), or 'auto' (newest "
        "verified of this run locally or in --checkpoint_store; fresh if none)"), "const": "latest"})
    wandb_checkpoint_artifact: str | None = field(default=None, metadata={"help": (
        "W&B artifact to resume from, entity/project/name:version (also WANDB_CHECKPOINT_ARTIFACT); any store URI "
        "works too; None starts fresh")})
    weights_only_resume: bool = field(default=False, metadata={"help": (
        "resume only experts/gates/maturity from a checkpoint; optimizer and LR schedule start fresh")})
    grow_experts: int = field(default=0, metadata={"help": "add N new immature experts to the resumed model"})
    grow_experts_from: int | None = field(default=None, metadata={"help": (
        "initialise the grown experts as copies of this expert instead of from scratch")})
    accept_probe_drift: bool = field(default=False, metadata={"help": (
        "resume even when the checkpoint's continuity probe scores beyond the tolerance here (another base, "
        "precision or library; see docs/training.md)")})
    checkpoint_store: str | None = field(default=None, metadata={"help": (
        "upload checkpoints to this store URI (dir, gs://, s3://, wandb://entity/project/name)")})
    # code benchmarks on the trained weights (HumanEval / MBPP, sandboxed)
    eval_benchmarks: str | None = field(default=None, metadata={"help": (
        "run code benchmarks (humaneval,mbpp) on the trained weights, sandboxed")})
    eval_benchmarks_when: str = field(default="end", metadata={"help": "'end' of training or every 'epoch'"})
    eval_benchmarks_limit: int | None = field(default=None, metadata={"help": (
        "only the first N problems of each benchmark")})
    eval_max_new_tokens: int = field(default=256, metadata={"help": "most tokens generated per benchmark problem"})
    eval_mbpp_path: str | None = field(default=None, metadata={"help": (
        "local MBPP jsonl for --eval_benchmarks mbpp (otherwise the hub)")})
    # tracking
    write_report: bool = field(default=False, metadata={"help": (
        "write figures and a summary to <output_dir>/report at the end (always when W&B is active)")})
    report_to: str = field(default="auto", metadata={"help": (
        "auto: W&B when WANDB_PROJECT/--wandb_project is set and wandb is installed; wandb; none")})
    wandb_project: str | None = field(default=None, metadata={"help": (
        "W&B project (also WANDB_PROJECT); setting it turns W&B on with --report_to auto")})
    wandb_entity: str | None = field(default=None, metadata={"help": "W&B entity (also WANDB_ENTITY)"})
    # data
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_config(self, **decided) -> dict:
        """What `run_config.json` saves: every option as resolved (command line over --config file), plus what
        the run `decided` at start; nothing named like a secret. `--config` reads it back to re-run the run."""
        from dylora_moe.training.tracking import sanitized_config

        return sanitized_config({**self.to_dict(), **decided})

    def resume_artifact(self) -> str | None:
        """`--wandb_checkpoint_artifact`, else `WANDB_CHECKPOINT_ARTIFACT` (the only place that reads it).

        'None' / 'null' (any case) mean no artifact, as the seed's Vertex submission sets for a fresh start; given
        as the flag, it also overrides the variable. An empty flag falls through to the variable."""
        flag = (self.wandb_checkpoint_artifact or "").strip()
        if flag:
            return None if flag.lower() in _NO_ARTIFACT else flag
        env = os.environ.get("WANDB_CHECKPOINT_ARTIFACT", "").strip()
        return None if env.lower() in _NO_ARTIFACT else env

    def wandb_project_name(self) -> str | None:
        """`--wandb_project`, else `WANDB_PROJECT` (the only place that reads it); set, W&B is wanted."""
        return self.wandb_project or os.environ.get("WANDB_PROJECT") or None

    def wandb_entity_name(self) -> str | None:
        """`--wandb_entity`, else `WANDB_ENTITY` (the only place that reads it); None: the W&B account's own."""
        return self.wandb_entity or os.environ.get("WANDB_ENTITY") or None

    def check(self) -> None:
        """Every option, before torch or a model sees it: numbers, datasets (known; hub ones while offline),
        quantization (bitsandbytes installed), a local --checkpoint_store, one resume source."""
        if self.bf16 and self.fp16:
            raise UserError("--bf16 and --fp16 were both given; choose one")
        if self.router_input not in (None, "token", "context", "sequence"):
            raise UserError(f"--router_input must be token, context or sequence, got {self.router_input!r}")
        check_numbers(self)
        self.data.check()
        self.quantization()
        if self.checkpoint_store:
            from dylora_moe.checkpoint.stores.uri import check_local_store

            check_local_store(self.checkpoint_store, "--checkpoint_store", must_exist=False)
        if self.resume_artifact() and self.resume_from_checkpoint not in (None, "auto"):
            raise UserError("both --resume_from_checkpoint and --wandb_checkpoint_artifact were given; pass one")

    def quantization(self):
        """The `Quantization` of the frozen base this run asks for (None: full precision); bad options (or no
        bitsandbytes) are a UserError."""
        from dylora_moe.model.quantization import quantization_from_flags

        return quantization_from_flags(self.load_in_4bit, self.load_in_8bit, self.bnb_4bit_compute_dtype,
                                       self.bf16, self.fp16)


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
