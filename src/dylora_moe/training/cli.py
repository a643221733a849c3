"""`dylora-moe train`: flags generated from `TrainConfig` (+ the data flags), then `training.run.train`."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from dylora_moe.continual.args import add_continual_args, run_continual
from dylora_moe.data.args import add_data_args, config_from_args
from dylora_moe.training.config import FLAG_HELP, TrainConfig

_SKIP = {"data"}


def _flag_type(annotation: str):
    base = annotation.replace(" | None", "")
    return {"int": int, "float": float, "str": str}[base]


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SKIP:
            continue
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        default = getattr(defaults, f.name)
        help_text = FLAG_HELP.get(f.name, "") + (f" (default: {default})" if default not in (None, False) else "")
        if hints[f.name] is bool:
            parser.add_argument(*names, dest=f.name, action="store_true", help=help_text or None)
        elif f.name == "resume_from_checkpoint":
            parser.add_argument(*names, dest=f.name, nargs="?", const="latest", default=None, help=help_text)
        else:
            annotation = str(f.type)
            parser.add_argument(*names, dest=f.name, type=_flag_type(annotation), default=default, help=help_text or None)
    parser.add_argument("--auto_resume", "--auto-resume", action="store_true",
                        help="same as --resume_from_checkpoint auto: safe on every job's command line")


def config_from_namespace(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in _SKIP}
    if getattr(args, "auto_resume", False) and not values.get("resume_from_checkpoint"):
        values["resume_from_checkpoint"] = "auto"
    return TrainConfig(**values, data=config_from_args(args))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a DyLoRA-MoE model (defaults: embedded tiny base, stdlib data; no downloads)",
        description="Train, or resume exactly, a DyLoRA-MoE model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_train_flags(parser)
    add_data_args(parser)
    add_continual_args(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dylora_moe.training.run import train

    if getattr(args, "mode", "joint") == "continual":
        return run_continual(args, config_from_namespace(args))
    result = train(config_from_namespace(args))
    return result.exit_code
