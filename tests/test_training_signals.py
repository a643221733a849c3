"""Real subprocesses, real signals: SIGTERM saves and exits 143; SIGKILL mid-save leaves the previous checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dylora_moe.training.callbacks import EXIT_PREEMPTED
from train_helpers import ALPACA, adapter_weights, cli_args, cli_env, is_loss_line, max_weight_diff, micro_config, run

pytestmark = pytest.mark.slow


def test_sigterm_saves_exits_143_and_auto_resume_matches_uninterrupted(base, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "dylora_moe", *cli_args(base, out)], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen_losses = 0
    lines = []
    for line in proc.stdout:
        lines.append(line)
        seen_losses += is_loss_line(line)
        if seen_losses >= 4:  # mid-epoch 0 (6 steps per epoch)
            break
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    exit_seconds = time.monotonic() - signalled
    log = "".join(lines) + rest
    assert proc.returncode == EXIT_PREEMPTED, log[-2000:]
    assert exit_seconds < 30, exit_seconds
    print(f"SIGTERM -> exit in {exit_seconds:.2f} s")
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "COMPLETE").is_file()
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 4 <= stopped_at < 12
    assert f"preempted (SIGTERM) at step {stopped_at}" in log

    resumed = subprocess.run([sys.executable, "-m", "dylora_moe", *cli_args(base, out, "--resume_from_checkpoint", "auto")],
                             env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"auto: newest complete checkpoint is {checkpoints[0]}" in resumed.stderr
    uninterrupted = run(micro_config(base, tmp_path / "full"))
    diff = max_weight_diff(adapter_weights(out / "checkpoint-12"), adapter_weights(uninterrupted.last_checkpoint))
    assert diff <= 1e-6


def test_auto_resume_with_nothing_to_resume_starts_fresh_and_says_so(base, tmp_path):
    result = subprocess.run([sys.executable, "-m", "dylora_moe",
                             *cli_args(base, tmp_path / "out", "--auto_resume", "--max_steps", "1")],
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"auto: no checkpoint found in {tmp_path / 'out'}; starting fresh" in result.stderr


KILL_DURING_SAVE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import dylora_moe.checkpoint.manifest as manifest
    from dylora_moe.cli import main
    flag = Path(sys.argv[1]); real = manifest._write_marker
    def slow_marker(final_dir):
        if final_dir.name == "checkpoint-6":
            flag.write_text("renamed, marker not yet written")
            time.sleep(120)
        real(final_dir)
    manifest._write_marker = slow_marker
    sys.exit(main(sys.argv[2:]))
""")


def test_sigkill_while_saving_leaves_previous_checkpoint(base, tmp_path):
    out, flag = tmp_path / "out", tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_SAVE, str(flag), *cli_args(base, out, "--save_steps", "3")],
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before saving checkpoint-6"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (out / "checkpoint-3" / "COMPLETE").is_file()
    assert (out / "checkpoint-6").is_dir() and not (out / "checkpoint-6" / "COMPLETE").exists()

    lines: list[str] = []
    resumed = run_logged(micro_config(base, out, resume_from_checkpoint="latest", max_steps=7), lines)
    assert resumed.global_step == 7
    assert any("skipping checkpoint-6: incomplete" in line for line in lines), lines
    assert [e for e in resumed.log_history if e.get("event") == "resume"][0]["step"] == 3


def run_logged(cfg, lines: list[str]):
    from dylora_moe.training.run import train

    return train(cfg, log=lines.append)
