"""The data flags map one-to-one onto DataConfig (the trainer's CLI uses them)."""

from __future__ import annotations

import argparse

from dylora_moe.data.args import add_data_args, config_from_args
from dylora_moe.data.config import DataConfig


def _parse(argv: list[str], with_seed: bool = False) -> DataConfig:
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    if with_seed:
        parser.add_argument("--seed", type=int, default=42)
    return config_from_args(parser.parse_args(argv))


def test_defaults_equal_dataconfig():
    assert _parse([]) == DataConfig()


def test_every_flag():
    cfg = _parse(["--datasets", "code_alpaca=a.json,mbpp", "--max_seq_length", "1024", "--training_subset", "10",
                  "--eval_subset", "50", "--eval_fraction", "0.1", "--train_on_prompt", "--use_chat_template",
                  "--drop_truncated", "--mixing", "interleave", "--mix_weights", "code_alpaca=0.7,mbpp=0.3",
                  "--max_examples_per_dataset", "100", "--seed", "3"], with_seed=True)
    assert cfg == DataConfig(datasets="code_alpaca=a.json,mbpp", max_seq_length=1024, training_subset=10.0,
                             eval_subset=50.0, eval_fraction=0.1, seed=3, train_on_prompt=True,
                             use_chat_template=True, drop_truncated=True, mixing="interleave",
                             mix_weights="code_alpaca=0.7,mbpp=0.3", max_examples_per_dataset=100)
