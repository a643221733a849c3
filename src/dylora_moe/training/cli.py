"""`dylora-moe train`: flags generated from `TrainConfig` (+ the data flags), then `training.run.train`."""

from __future__ import annotations

import argparse

from dylora_moe.config_file import add_config_flag
from dylora_moe.continual.args import add_continual_args, run_continual
from dylora_moe.data.args import add_data_args
from dylora_moe.data.args import config_from_args as data_config_from_args
from dylora_moe.flags import add_dataclass_flags, config_from_args
from dylora_moe.library_output import add_verbose_flag
from dylora_moe.training.config import TrainConfig


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser, TrainConfig)
    parser.add_argument("--auto_resume", "--auto-resume", action="store_true",
                        help="same as --resume_from_checkpoint auto: safe on every job's command line")


def config_from_namespace(args: argparse.Namespace) -> TrainConfig:
    cfg = config_from_args(TrainConfig, args, data=data_config_from_args(args))
    if getattr(args, "auto_resume", False) and not cfg.resume_from_checkpoint:
        cfg.resume_from_checkpoint = "auto"
    return cfg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a DyLoRA-MoE model (defaults: embedded tiny base, stdlib data; no downloads)",
        description="Train, or resume exactly, a DyLoRA-MoE model.",
    )
    add_config_flag(parser)
    add_train_flags(parser)
    add_data_args(parser)
    add_continual_args(parser)
    add_verbose_flag(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dylora_moe.training.distributed import end_process_group
    from dylora_moe.training.run import train

    try:
        if getattr(args, "mode", "joint") == "continual":
            return run_continual(args, config_from_namespace(args))
        return train(config_from_namespace(args)).exit_code
    finally:
        end_process_group()  # the command owns the process group its launcher's environment made
