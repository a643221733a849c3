"""The report of a real, resumed micro run: valid PNGs, one continuous curve, the resume point marked."""

from __future__ import annotations

from matplotlib.image import imread

from dylora_moe.report.build import build_report
from dylora_moe.report.history import normalise
from micro import save_micro_base
from train_helpers import micro_config, run


def test_report_of_a_resumed_run(tmp_path):
    base = save_micro_base(tmp_path / "base")
    out = tmp_path / "out"
    run(micro_config(base, out, early_stopping_patience=10), stop_at=4)
    resumed = run(micro_config(base, out, early_stopping_patience=10, resume_from_checkpoint="latest",
                               write_report=True))
    assert resumed.global_step == 12
    report_dir = out / "report"
    pngs = sorted(report_dir.glob("*.png"))
    assert len(pngs) >= 4
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(png).size > 0
    summary = (report_dir / "summary.md").read_text()
    assert "Resumed 1 time(s), at step 4." in summary
    history = normalise(resumed.log_history)
    assert history.resume_steps == [4]
    assert list(history.train["loss"].steps) == list(range(1, 13))  # one continuous curve, each step once
    again = build_report(out, tmp_path / "again")  # from the output directory on disk, as the CLI does
    assert {p.name for p in again.figures} == {p.name for p in pngs} and again.summary_html.is_file()
