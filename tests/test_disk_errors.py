"""Full and read-only disks, on real small file systems (tmpfs mounts): one line, found before the work, and a
full disk keeps the previous checkpoint. Needs mount rights (root in CI); skipped with the reason otherwise.

Read-only must be a read-only mount: root ignores permission bits, so `chmod` would prove nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from dylora_moe.checkpoint.manifest import find_latest_checkpoint, verify_checkpoint
from train_helpers import cli_args, one_error_line, run_cli

# one micro checkpoint is ~430 KiB on tmpfs: the first fits, the second cannot
ONE_CHECKPOINT_FS = "size=700k"


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); needs root / CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_output_dir_fails_before_training(base, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        proc = run_cli(*cli_args(base, ro / "out"))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: cannot write --output_dir {ro / 'out'}: Read-only file system; choose a writable path")
    assert "steps planned" not in proc.stderr  # refused before any model was loaded or step trained


def test_read_only_eval_output_fails_before_the_evaluation(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        proc = run_cli("eval", "--model", str(tmp_path / "not-loaded"), "--output", str(ro / "results.json"))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: cannot write --output {ro / 'results.json'}: Read-only file system; choose a writable path")


@pytest.mark.slow
def test_disk_full_keeps_the_previous_checkpoint_and_ends_in_one_line(base, tmp_path):
    with tmpfs(tmp_path / "small", ONE_CHECKPOINT_FS) as small:
        out = small / "out"
        proc = run_cli(*cli_args(base, out, "--save_steps", "3", "--max_steps", "6"))
        assert proc.returncode == 2
        assert one_error_line(proc) == (
            f"error: cannot write checkpoint-6 into {out}: No space left on device; the previous checkpoint "
            f"{out / 'checkpoint-3'} is intact; free some space (or choose a writable --output_dir), then resume with "
            "--resume_from_checkpoint auto")
        verify_checkpoint(out / "checkpoint-3")
        assert find_latest_checkpoint(out, log=lambda m: None) == out / "checkpoint-3"
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3"]  # the failed save's temp dir is gone
