"""Report figures logged as W&B images: they land in the offline run's media folder."""

from __future__ import annotations

import report_synthetic as syn
import wandb

from dylora_moe.report import build_report
from dylora_moe.report.wandb_images import log_report_to_wandb


def test_no_active_run_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(wandb, "run", None)
    assert log_report_to_wandb([tmp_path / "missing.png"]) is False


def test_figures_land_in_the_offline_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    syn.write_state(tmp_path / "run")
    figures = build_report(tmp_path / "run").figures
    run = wandb.init(project="report-test", dir=str(tmp_path), mode="offline")
    try:
        assert log_report_to_wandb(figures) is True
    finally:
        run.finish()
    images = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run.id}/files/media/images/report/*.png"))
    assert len(images) == len(figures) == 5
    for figure in figures:  # wandb names them <key>_<step>_<hash>.png
        assert sum(p.name.startswith(f"{figure.stem}_") for p in images) == 1, figure.stem
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in images)

