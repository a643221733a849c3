"""Data options: which datasets, how they are formatted, split, subset and mixed."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class DataConfig:
    """Everything that decides the prepared train/eval sets; all of it enters the fingerprint."""

    datasets: str = "stdlib"  # "code_alpaca,mbpp", "code_alpaca=path.json,mbpp=/x/mbpp.jsonl", "stdlib:text"
    max_seq_length: int = 256  # sized for the embedded default on CPU; raise it for real code models
    training_subset: float = 100.0  # percent, seeded random subset of the train split
    eval_subset: float = 100.0  # percent, seeded random subset of the eval split
    eval_fraction: float = 0.05  # share of the mixed pool held out for eval (seeded shuffle)
    seed: int = 42
    train_on_prompt: bool = False  # False: prompt tokens labelled -100
    use_chat_template: bool = False
    drop_truncated: bool = False
    mixing: str = "concat"  # or "interleave"
    mix_weights: str | None = None  # "code_alpaca=0.7,mbpp=0.3" for interleave
    max_examples_per_dataset: int | None = None  # cap per source before the split (tests, CPU runs)
    max_dropped_fraction: float = 0.5  # refuse a source that loses more of its rows than this as unusable

    def to_dict(self) -> dict:
        return asdict(self)
