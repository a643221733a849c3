"""The data flags of `dylora-moe train`, so every command spells them the same way.

The trainer's CLI calls `add_data_args(parser)` and `config_from_args(args)`; `--seed` is not defined here
(the trainer owns it) but is read when present.
"""

from __future__ import annotations

import argparse

from dylora_moe.data.config import DataConfig


def add_data_args(parser: argparse.ArgumentParser) -> None:
    d = DataConfig()
    g = parser.add_argument_group("data")
    g.add_argument("--datasets", default=d.datasets,
                   help="comma-separated names (code_alpaca, mbpp, evol_instruct, code_feedback, "
                        "python_code_instructions_18k, python_codes_25k, python_code_23k_sharegpt, stdlib, "
                        "stdlib:SKILL) or NAME=FILE (json/jsonl/parquet) (default: %(default)s)")
    g.add_argument("--max_seq_length", type=int, default=d.max_seq_length)
    g.add_argument("--training_subset", type=float, default=d.training_subset, help="percent of the train split")
    g.add_argument("--eval_subset", type=float, default=d.eval_subset, help="percent of the eval split")
    g.add_argument("--eval_fraction", type=float, default=d.eval_fraction, help="share of the pool held out for eval")
    g.add_argument("--train_on_prompt", action="store_true", help="also compute the loss on prompt tokens")
    g.add_argument("--use_chat_template", action="store_true", help="use the tokenizer's chat template if it has one")
    g.add_argument("--drop_truncated", action="store_true", help="drop examples longer than --max_seq_length")
    g.add_argument("--mixing", choices=("concat", "interleave"), default=d.mixing)
    g.add_argument("--mix_weights", default=None, help="NAME=W,... for --mixing interleave")
    g.add_argument("--max_examples_per_dataset", type=int, default=None, help="cap per dataset before the split")
    g.add_argument("--max_dropped_fraction", type=float, default=d.max_dropped_fraction,
                   help="refuse a dataset whose share of unusable rows (empty instruction or response) is larger; "
                        "1 trains on whatever is usable (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> DataConfig:
    return DataConfig(
        datasets=args.datasets, max_seq_length=args.max_seq_length, training_subset=args.training_subset,
        eval_subset=args.eval_subset, eval_fraction=args.eval_fraction, seed=getattr(args, "seed", DataConfig.seed),
        train_on_prompt=args.train_on_prompt, use_chat_template=args.use_chat_template,
        drop_truncated=args.drop_truncated, mixing=args.mixing, mix_weights=args.mix_weights,
        max_examples_per_dataset=args.max_examples_per_dataset,
        max_dropped_fraction=getattr(args, "max_dropped_fraction", DataConfig.max_dropped_fraction),
    )
