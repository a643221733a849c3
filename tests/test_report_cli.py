"""`dylora-moe report`: output paths on stdout, one `error:` line for a bad source."""

from __future__ import annotations

import report_synthetic as syn

from dylora_moe.cli import main


def test_report_command_writes_into_source_report(tmp_path, capsys):
    syn.write_state(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == [str(tmp_path / "report" / "summary.md"), str(tmp_path / "report" / "summary.html")]
    assert len(printed) == 7
    assert (tmp_path / "report" / "losses.png").is_file()


def test_report_command_out_flag(tmp_path, capsys):
    syn.write_state(tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "summary.html").is_file()
    assert not (tmp_path / "run" / "report").exists()


def test_report_command_bad_source_is_one_error_line(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["report", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: report source {missing} does not exist; expected an output dir, a checkpoint dir or a store URI "
        "(wandb://, gs://, s3://, file://); check the path\n"
    )
