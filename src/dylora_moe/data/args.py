"""The data flags of `dylora-moe train`, generated from `DataConfig`, so every command spells them the same way.

`--seed` is not defined here (the trainer owns it) but is read when present.
"""

from __future__ import annotations

import argparse

from dylora_moe.data.config import DataConfig
from dylora_moe.flags import add_dataclass_flags
from dylora_moe.flags import config_from_args as _config_from_args


def add_data_args(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser.add_argument_group("data"), DataConfig, skip=("seed",))


def config_from_args(args: argparse.Namespace) -> DataConfig:
    return _config_from_args(DataConfig, args)
