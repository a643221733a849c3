"""Data options: which datasets, how they are formatted, split, subset and mixed.

The fields' `metadata` gives the flags of `dylora-moe train` (flags.py); `check()` holds every rule on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dylora_moe.errors import UserError


@dataclass
class DataConfig:
    """Everything that decides the prepared train/eval sets; all of it enters the fingerprint."""

    datasets: str = field(default="stdlib", metadata={"help": (
        "comma-separated names (code_alpaca, mbpp, evol_instruct, code_feedback, python_code_instructions_18k, "
        "python_codes_25k, python_code_23k_sharegpt, stdlib, stdlib:SKILL) or NAME=FILE (json/jsonl/parquet)")})
    max_seq_length: int = field(default=256, metadata={"help": (
        "longest example in tokens (sized for the embedded default on CPU; raise it for real code models)")})
    training_subset: float = field(default=100.0, metadata={"help": "percent of the train split"})
    eval_subset: float = field(default=100.0, metadata={"help": "percent of the eval split"})
    eval_fraction: float = field(default=0.05, metadata={"help": "share of the pool held out for eval"})
    seed: int = 42  # no flag of its own: the trainer's --seed
    train_on_prompt: bool = field(default=False, metadata={"help": "also compute the loss on prompt tokens"})
    use_chat_template: bool = field(default=False, metadata={"help": (
        "use the tokenizer's chat template if it has one")})
    drop_truncated: bool = field(default=False, metadata={"help": "drop examples longer than --max_seq_length"})
    mixing: str = field(default="concat", metadata={"help": (
        "concat: one pool of all datasets; interleave: sample them by --mix_weights"),
        "choices": ("concat", "interleave")})
    mix_weights: str | None = field(default=None, metadata={"help": "NAME=W,... for --mixing interleave"})
    max_examples_per_dataset: int | None = field(default=None, metadata={"help": "cap per dataset before the split"})
    max_dropped_fraction: float = field(default=0.5, metadata={"help": (
        "refuse a dataset whose share of unusable rows (empty instruction or response) is larger; 1 trains on "
        "whatever is usable")})

    def check(self) -> None:
        """Every rule on the data options, before a model or a dataset is loaded: ranges, names known, one
        weight per dataset, and no hub dataset while the hub is offline."""
        from dylora_moe.data.splitting import check_percent

        check_percent(self.training_subset, "--training_subset")
        check_percent(self.eval_subset, "--eval_subset")
        if not 0.0 <= self.eval_fraction < 1.0:  # also false for NaN
            raise UserError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}; e.g. 0.05 holds out 5% "
                            "for eval")
        if self.max_seq_length < 2:
            raise UserError(f"--max_seq_length must be at least 2, got {self.max_seq_length}")
        if self.mixing not in ("concat", "interleave"):
            raise UserError(f"--mixing must be 'concat' or 'interleave', got '{self.mixing}'")
        if self.mix_weights and self.mixing != "interleave":
            raise UserError("--mix_weights only applies with --mixing interleave; add --mixing interleave or drop it")
        if not 0 <= self.max_dropped_fraction <= 1:  # also false for NaN
            raise UserError(f"--max_dropped_fraction must be between 0 and 1, got {self.max_dropped_fraction}")
        if self.max_examples_per_dataset is not None and self.max_examples_per_dataset < 1:
            raise UserError(f"--max_examples_per_dataset must be at least 1, got {self.max_examples_per_dataset}")
        self._check_sources()

    def _check_sources(self) -> None:
        from dylora_moe.data.loading import hub_unreachable_error
        from dylora_moe.data.registry import REGISTRY, parse_datasets
        from dylora_moe.data.splitting import parse_weights
        from dylora_moe.hub import hub_offline

        specs = parse_datasets(self.datasets)
        for spec in specs:
            hub_id = REGISTRY[spec.base].hub_id if spec.base in REGISTRY else None
            if not spec.path and hub_id and hub_offline():
                raise hub_unreachable_error(spec.name, hub_id)
        if self.mixing == "interleave":
            parse_weights(self.mix_weights, [s.name for s in specs])

    def to_dict(self) -> dict:
        return asdict(self)
