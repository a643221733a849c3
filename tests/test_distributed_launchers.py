"""`accelerate launch` works like torchrun; SIGTERM under torchrun: every rank stops at the same step and saves.

Preemption in a multi-process run: the platform signals the launcher (torchrun forwards SIGTERM to every
worker) or, in the worst case, only one worker; `PreemptionHandler` all-reduces the flag over gloo so all
ranks stop after the same optimizer step, and non-main ranks wait at the end of `train` until the main process
has finished its uploads (otherwise torchrun sees a worker exit 143 and SIGTERMs the uploading main process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dist_helpers import cli_args, dist_env, launch_command
from train_helpers import is_loss_line

pytestmark = pytest.mark.slow


def test_accelerate_launch_runs_two_processes(base, tmp_path):
    out = tmp_path / "out"
    # --multi_gpu selects accelerate's torchrun-based launcher, which falls back to gloo without CUDA;
    # --cpu would start ONE process (accelerate's multi-CPU mode needs mpirun)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "dylora_moe", *cli_args(base, out, "--max_steps", "3")]
    proc = subprocess.run(cmd, env=dist_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "3 steps planned (8 per epoch, global batch 8)" in log  # 2 processes x batch 4
    assert sorted(p.name for p in (out / "checkpoint-3").glob("rng_state_*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert (out / "checkpoint-3" / "COMPLETE").is_file()
    assert log.count("[train] done: 3 steps") == 1


def _children(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _rank_of(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in env if e.startswith(b"RANK="))[5:])


def _start_long_run(base: str, out: Path, *extra: str, slow_upload: float = 0.0):
    args = cli_args(base, out, "--num_epochs", "50", "--save_steps", "1000", "--eval_steps", "1000", *extra)
    proc = subprocess.Popen(launch_command(args, slow_upload=slow_upload), env=dist_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, seen = [], 0
    for line in proc.stdout:  # a few optimizer steps in, well before the end
        lines.append(line)
        seen += is_loss_line(line)
        if seen >= 3:
            break
    return proc, lines


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes through /proc")
def test_sigterm_to_one_worker_stops_all_ranks_and_main_finishes_its_upload(base, tmp_path):
    out, store = tmp_path / "out", tmp_path / "store"
    proc, lines = _start_long_run(base, out, "--checkpoint_store", str(store), slow_upload=3.0)
    workers = {_rank_of(pid): pid for pid in _children(proc.pid)}
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGTERM)  # only rank 1 is signalled: rank 0 learns it through the all-reduce
    rest, _ = proc.communicate(timeout=120)
    log = "".join(lines) + rest
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "COMPLETE").is_file(), log[-3000:]
    step = int(checkpoints[0].name.split("-")[1])
    assert sorted(p.name for p in checkpoints[0].glob("rng_state_*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert f"[train] preempted (peer signal) at step {step}" in log, log[-5000:]
    # the main process was not killed while uploading: the upload is in the store
    from dylora_moe.checkpoint.stores.uri import open_store

    versions = open_store(str(store))[0].list_versions()
    assert [v.metadata.get("global_step") for v in versions] == [step], log[-3000:]
    # rank 0 finished (uploads included) before anyone left: its summary line follows the upload lines
    assert log.index(f"[train] preempted (peer signal) at step {step}") > log.rindex("[upload] uploaded checkpoint-")
    assert f"checkpoint-{step} written and uploaded" in log
    # rank 1 left with the preemption code; rank 0 may be listed as SIGTERMed (-15) by torchrun if rank 1's exit
    # is noticed first, but by then rank 0 is past the final barrier with nothing left to do
    assert "exitcode  : 143 (pid: " in log, log[-3000:]
    assert proc.returncode == 1  # torchrun's own code for failed workers; see docs/distributed.md

    # a fresh 2-process job resumes from the store: the main process downloads first, rank 1 then finds it cached
    args = cli_args(base, tmp_path / "again", "--auto_resume", "--checkpoint_store", str(store), "--max_steps", str(step + 2))
    again = subprocess.run(launch_command(args), env=dist_env(), capture_output=True, text=True, timeout=300)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert f"auto: newest checkpoint is {store}:{versions[0].version} (step {step}) in the store" in log
    assert (tmp_path / "again" / f"checkpoint-{step + 2}" / "COMPLETE").is_file()


def test_sigterm_to_torchrun_is_forwarded_and_every_rank_saves(base, tmp_path):
    out = tmp_path / "out"
    proc, lines = _start_long_run(base, out)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    log = "".join(lines) + rest
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "COMPLETE").is_file(), log[-3000:]
    step = int(checkpoints[0].name.split("-")[1])
    assert f"[train] preempted (SIGTERM) at step {step}" in log
    assert sorted(p.name for p in checkpoints[0].glob("rng_state_*")) == ["rng_state_0.pth", "rng_state_1.pth"]


def test_only_the_main_process_opens_a_wandb_run(base, tmp_path):
    wandb_dir = tmp_path / "wandb"
    wandb_dir.mkdir()
    env = dist_env(WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), WANDB_PROJECT="dist", WANDB_SILENT="true")
    args = cli_args(base, tmp_path / "out", "--max_steps", "3", "--report_to", "wandb")
    proc = subprocess.run(launch_command(args), env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    runs = sorted(p.name for p in wandb_dir.rglob("offline-run-*") if p.is_dir())
    assert len(runs) == 1, runs  # rank 1 logs nothing and uploads nothing
    assert log.count("[wandb] run ") == 1
