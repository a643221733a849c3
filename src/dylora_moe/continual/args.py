"""The continual flags of `dylora-moe train` (`--mode continual --skills ...`), added by training/cli.py; all but
`--mode` are generated from `ContinualConfig`."""

from __future__ import annotations

import argparse

from dylora_moe.continual.config import ContinualConfig
from dylora_moe.flags import add_dataclass_flags, config_from_args


def add_continual_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("continual learning (--mode continual)")
    g.add_argument("--mode", choices=("joint", "continual"), default="joint",
                   help="joint: one run over --datasets; continual: learn --skills one after another (default: joint)")
    add_dataclass_flags(g, ContinualConfig)


def continual_config_from_args(args: argparse.Namespace) -> ContinualConfig:
    return config_from_args(ContinualConfig, args)


def run_continual(args: argparse.Namespace, train_config) -> int:
    from dylora_moe.continual.orchestrator import train_continual

    return train_continual(train_config, continual_config_from_args(args)).exit_code
