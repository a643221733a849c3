"""`dylora-moe` command line: a thin layer over the library.

Each area owns its subcommand in `<area>/cli.py` with `add_parser(subparsers)`; that function sets
`func` on its parser. Heavy imports (torch, transformers) stay inside the `func`s so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dylora_moe.errors import UserError

# subcommand -> module that defines add_parser(subparsers)
SUBCOMMAND_MODULES = {
    "train": "dylora_moe.training.cli",
    "eval": "dylora_moe.eval.cli",
    "checkpoints": "dylora_moe.checkpoint.cli",
    "submit": "dylora_moe.cloud.cli",
    "report": "dylora_moe.report.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dylora-moe", description="Dynamic LoRA Mixture-of-Experts trainer for code models."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an area not installed/implemented yet
            if exc.name and exc.name.startswith("dylora_moe"):
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
