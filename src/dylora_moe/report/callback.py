"""A `transformers.TrainerCallback` that writes the report at the end of training and logs it to W&B.

Why: the issue asks for the figures on W&B "at the end of a run when a W&B run is active". The
trainer's in-memory log history is complete at `on_train_end` (the runtime summary is logged just
before it), so the report is drawn from it directly rather than from a file that may not be saved yet.
A failing report must never fail a finished training run: it is reported in one line and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from dylora_moe.report.build import ReportResult, report_from_log_history
from dylora_moe.report.wandb_images import log_report_to_wandb


class ReportCallback(TrainerCallback):
    """On train end (main process only): `<output_dir>/report/` and, when W&B is active, its images."""

    def __init__(self, out_dir: str | Path | None = None, log: Callable[[str], object] = print):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = log
        self.result: ReportResult | None = None

    def on_train_end(self, args, state, control, **kwargs):
        if not getattr(state, "is_world_process_zero", True):
            return control
        out = self.out_dir or Path(args.output_dir) / "report"
        meta = {"global_step": state.global_step, "epoch": state.epoch, "best_metric": state.best_metric}
        try:
            self.result = report_from_log_history(list(state.log_history), out, meta, source=str(args.output_dir))
            logged = log_report_to_wandb(self.result.figures)
        except Exception as exc:  # noqa: BLE001 - the run already finished; the report is a bonus
            self.log(f"warning: run report not written ({type(exc).__name__}: {exc})")
            return control
        where = " and logged to W&B" if logged else ""
        self.log(f"run report: {self.result.summary_html} ({len(self.result.figures)} figures){where}")
        return control
