"""build_report end to end on a synthetic resumed, continual run: PNGs, Markdown, HTML."""

from __future__ import annotations

import json

import pytest
import report_synthetic as syn
from matplotlib.image import imread

from dylora_moe.report import ReportResult, build_report, report_from_log_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = ["losses.png", "learning_rate.png", "expert_usage.png", "routing_entropy.png", "skills.png"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> ReportResult:
    run = tmp_path_factory.mktemp("run")
    syn.write_state(run)
    return build_report(run)


def test_every_figure_is_a_valid_png(report):
    assert [p.name for p in report.figures] == ALL_FIGURES
    for path in report.figures:
        assert path.parent.name == "report"  # default out = SOURCE/report
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 500


def test_summary_names_the_resume_and_the_events(report):
    text = report.summary_md.read_text()
    assert "Resumed 1 time(s), at step 60." in text
    assert "| 60 | wandb://team/proj/run-ckpt:v3 | yes |" in text
    assert "| 55 | 1 | M M . . |" in text
    assert "| 90 | code_alpaca | 1 | reused |" in text
    assert "| train loss | 0.906 | 120 |" in text
    assert "The training data changed at step 62." in text
    for name in ALL_FIGURES:
        assert f"]({name})" in text


def test_html_page_shows_every_png_and_escapes_text(report):
    page = report.summary_html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for name in ALL_FIGURES:
        assert f'<img src="{name}"' in page
    assert "<td>wandb://team/proj/run-ckpt:v3</td>" in page


def test_sparse_history_draws_only_what_it_has_and_clears_stale_figures(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "skills.png").write_bytes(b"stale")
    history = [{"step": s, "loss": 2.0 / s} for s in range(1, 6)] + [{"step": 3, "event": "resume", "resumed_from": "x"}]
    result = report_from_log_history(history, out)
    assert [p.name for p in result.figures] == ["losses.png"]
    assert not (out / "skills.png").exists()
    assert "Never resumed." not in result.summary_md.read_text()
    assert "Resumed 1 time(s), at step 3." in result.summary_md.read_text()


def test_explicit_out_dir_and_state_file_source(tmp_path):
    state = syn.write_state(tmp_path / "run", history=[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    result = build_report(state, tmp_path / "elsewhere")
    assert result.summary_md == tmp_path / "elsewhere" / "summary.md"
    assert "Never resumed." in result.summary_md.read_text()
    assert json.loads(state.read_text())["global_step"] == 120  # the source is only read
