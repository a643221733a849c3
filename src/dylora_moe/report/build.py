"""The report as one call: find the state, normalise the history, draw the figures, write the summary.

Why: the CLI, the trainer's end-of-run hook and the tests all need the same sequence; keeping it in
one function keeps their outputs identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dylora_moe.report.history import RunHistory, load_history, normalise
from dylora_moe.report.source import locate_state, looks_like_uri
from dylora_moe.report.summary import summary_blocks, write_summary


@dataclass(frozen=True)
class ReportResult:
    """Where the report went: the PNGs (in drawing order) and the two summaries."""

    figures: list[Path]
    summary_md: Path
    summary_html: Path


def default_out_dir(source: str | os.PathLike) -> Path:
    """`<SOURCE>/report` for a directory, next to a state file, `./report` for a store URI."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return path.parent / "report"
    if not path.exists() and looks_like_uri(text):
        return Path.cwd() / "report"
    return path / "report"


def report_from_history(history: RunHistory, out_dir: str | os.PathLike, source: str = "?",
                        state_file: str = "?") -> ReportResult:
    """Figures and summaries for an already-normalised history (e.g. a trainer's in-memory log)."""
    from dylora_moe.report.figures import draw_all  # matplotlib only when a report is drawn

    out = Path(out_dir)
    figures = draw_all(history, out)
    md, page = write_summary(summary_blocks(history, figures, source, state_file), out)
    return ReportResult(figures=list(figures.values()), summary_md=md, summary_html=page)


def report_from_log_history(log_history: list, out_dir: str | os.PathLike, state: dict | None = None,
                            source: str = "?") -> ReportResult:
    """Report on a raw log_history list, as the trainer holds it at the end of a run."""
    return report_from_history(normalise(log_history, state), out_dir, source=source, state_file="(in memory)")


def build_report(source: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> ReportResult:
    """Report on an output dir, a checkpoint dir, a trainer_state.json or a store URI."""
    state_file, _local = locate_state(source)
    out = Path(out_dir) if out_dir is not None else default_out_dir(source)
    return report_from_history(load_history(state_file), out, source=os.fspath(source), state_file=str(state_file))
