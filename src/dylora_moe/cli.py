"""`dylora-moe` command line: a thin layer over the library.

Each area owns its subcommand in `<area>/cli.py` with `add_parser(subparsers)`; that function sets
`func` on its parser. Heavy imports (torch, transformers) stay inside the `func`s so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dylora_moe.errors import UserError, network_error

# subcommand -> module that defines add_parser(subparsers)
SUBCOMMAND_MODULES = {
    "train": "dylora_moe.training.cli",
    "eval": "dylora_moe.eval.cli",
    "generate": "dylora_moe.eval.generate_cli",
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


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`argv` parsed, with the values of its `--config` file (if any) as the chosen command's defaults."""
    from dylora_moe.config_file import apply_config_file
    from dylora_moe.processes import log_stderr

    argv = sys.argv[1:] if argv is None else list(argv)
    apply_config_file(parser, argv, log=log_stderr)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # gcsfs logs every exhausted retry with a full traceback; the one-line error below says the same
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    try:
        args = parse_args(parser, argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return _run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from dylora_moe.writable import disk_error, is_disk_error

        if is_disk_error(exc):  # a full or read-only disk found late (after the up-front checks)
            print(f"error: {disk_error(exc, str(exc.filename or 'a file'))}", file=sys.stderr)
            return 2
        cause = network_error(exc)
        if cause is None:
            raise
        detail = str(cause).splitlines()[0] if str(cause) else ""
        print(f"error: could not reach a remote store or service: {type(cause).__name__}: {detail}; check the URI, "
              "the network and the credentials", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """The subcommand, with bitsandbytes importable only when it quantizes and, for those with --verbose, the
    libraries' bars and info logs as asked."""
    from dylora_moe.model.quantization import bitsandbytes_only_if_asked

    with bitsandbytes_only_if_asked(getattr(args, "load_in_4bit", False) or getattr(args, "load_in_8bit", False)):
        if hasattr(args, "verbose"):
            from dylora_moe.library_output import configure_library_output

            configure_library_output(args.verbose)
        return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
