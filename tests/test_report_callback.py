"""ReportCallback: the report from the trainer's in-memory history at train end; failures never crash."""

from __future__ import annotations

import report_synthetic as syn
import wandb


def test_callback_writes_the_report_from_the_trainer_state(tmp_path, monkeypatch):
    from transformers import TrainerControl, TrainerState

    from dylora_moe.report.callback import ReportCallback

    monkeypatch.setattr(wandb, "run", None)
    lines: list[str] = []
    state = TrainerState(global_step=120, epoch=3.0, log_history=syn.log_history())
    callback = ReportCallback(log=lines.append)
    args = type("Args", (), {"output_dir": str(tmp_path)})()
    callback.on_train_end(args, state, TrainerControl())
    assert [p.name for p in callback.result.figures][0] == "losses.png"
    assert lines == [f"run report: {tmp_path / 'report' / 'summary.html'} (5 figures)"]
    assert "Reached step 120, epoch 3." in (tmp_path / "report" / "summary.md").read_text()


def test_callback_failure_is_one_warning_not_a_crash(tmp_path):
    from transformers import TrainerControl, TrainerState

    from dylora_moe.report.callback import ReportCallback

    (tmp_path / "report").write_text("a file where the report dir should go")
    lines: list[str] = []
    callback = ReportCallback(log=lines.append)
    args = type("Args", (), {"output_dir": str(tmp_path)})()
    state = TrainerState(global_step=1, log_history=[{"step": 1, "loss": 1.0}])
    callback.on_train_end(args, state, TrainerControl())
    assert callback.result is None
    assert len(lines) == 1 and lines[0].startswith("warning: run report not written (FileExistsError: ")
