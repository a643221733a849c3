"""`dylora-moe report SOURCE [--out DIR]`: a thin layer over `build_report`."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="PNG figures and a Markdown/HTML summary of a run",
        description="Draw losses, learning rate, expert usage, routing entropy (with resume points and "
        "maturity changes marked) and, for continual runs, which expert each skill went to.",
    )
    parser.add_argument("source", metavar="SOURCE",
                        help="output dir, checkpoint dir, trainer_state.json or store URI (wandb://, gs://, s3://)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where to write the report (default: SOURCE/report; ./report for a store URI)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dylora_moe.report.build import build_report

    result = build_report(args.source, args.out)
    for path in [*result.figures, result.summary_md, result.summary_html]:
        print(path)
    return 0
