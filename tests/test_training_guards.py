"""Runs that must not lose or mix up checkpoints: another run's output dir, two runs at once, divergence, bad flags.

Real `dylora-moe train` subprocesses where the behaviour is the CLI's (exit code, the one error line, no
traceback); in-process runs where only the library's outcome matters.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dylora_moe.checkpoint.manifest import find_latest_checkpoint, sha256_file, verify_checkpoint
from dylora_moe.errors import UserError
from train_helpers import cli_args, cli_env, is_loss_line, micro_config, one_error_line, run, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(base, tmp_path_factory) -> Path:
    """An output dir holding another run's checkpoints (checkpoint-3, checkpoint-6)."""
    out = tmp_path_factory.mktemp("first") / "out"
    run(micro_config(base, out, max_steps=6))
    return out


def _weights_sha(out: Path) -> dict[str, str]:
    return {p.name: sha256_file(p / "adapter_model.safetensors") for p in sorted(out.glob("checkpoint-*"))}


def test_fresh_run_into_another_runs_output_dir_is_refused(base, finished):
    before = _weights_sha(finished)
    proc = run_cli(*cli_args(base, finished, "--max_steps", "3", "--save_steps", "3"))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: --output_dir {finished} already holds checkpoints of another run (checkpoint-3, checkpoint-6); a "
        "fresh run would overwrite them; choose a new --output_dir, continue that run with --resume_from_checkpoint "
        "auto, or pass --overwrite_output_dir to delete them")
    assert _weights_sha(finished) == before


def test_weights_only_resume_into_its_own_output_dir_is_refused(base, finished):
    before = _weights_sha(finished)
    cfg = micro_config(base, finished, max_steps=3, resume_from_checkpoint=str(finished / "checkpoint-6"),
                       weights_only_resume=True)
    with pytest.raises(UserError, match="a weights-only resume starts at step 0 and would overwrite them"):
        run(cfg)
    cfg.overwrite_output_dir = True  # deleting the checkpoint it loads is refused too
    with pytest.raises(UserError, match=r"would delete .*checkpoint-6, the checkpoint this weights-only resume loads"):
        run(cfg)
    assert _weights_sha(finished) == before


def test_overwrite_output_dir_replaces_the_old_run_and_the_summary_names_the_new_one(base, finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    result = run(micro_config(base, out, max_steps=2, save_steps=2, overwrite_output_dir=True))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert result.last_checkpoint == str(out / "checkpoint-2")
    assert find_latest_checkpoint(out, log=lambda m: None) == out / "checkpoint-2"


def _tree_sha(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256): byte-identical means no file changed, added or removed."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_dir_inside_the_resumed_checkpoint_is_refused_and_leaves_it_untouched(base, finished, tmp_path):
    checkpoint = finished / "checkpoint-3"
    before = _tree_sha(checkpoint)
    proc = run_cli(*cli_args(base, checkpoint, "--resume_from_checkpoint", str(checkpoint)))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: --output_dir {checkpoint} is inside the checkpoint {checkpoint}; training there would overwrite "
        f"it; choose an --output_dir outside any checkpoint (e.g. {finished} to continue that run)")
    link = tmp_path / "link"
    link.symlink_to(checkpoint, target_is_directory=True)
    for output_dir in (checkpoint / "nested" / "out", link, link / "out"):  # below it, or reached by a symlink
        cfg = micro_config(base, output_dir, max_steps=4, resume_from_checkpoint=str(checkpoint))
        with pytest.raises(UserError, match=rf"is inside the checkpoint {checkpoint};"):
            run(cfg)
    verify_checkpoint(checkpoint)
    assert _tree_sha(checkpoint) == before


def test_output_dir_in_an_hf_checkpoint_is_refused_but_a_run_dir_named_like_one_is_not(tmp_path):
    from dylora_moe.training.output_dir import check_output_dir_location

    hf_checkpoint = tmp_path / "hf-run" / "checkpoint-7"
    hf_checkpoint.mkdir(parents=True)
    (hf_checkpoint / "trainer_state.json").write_text("{}")
    with pytest.raises(UserError, match=rf"is inside the checkpoint {hf_checkpoint};"):
        check_output_dir_location(hf_checkpoint / "out")
    run_dir = tmp_path / "checkpoint-1"  # a run's output dir: its own trainer_state.json and checkpoints
    (run_dir / "checkpoint-3").mkdir(parents=True)
    (run_dir / "trainer_state.json").write_text("{}")
    check_output_dir_location(run_dir)


def test_overwrite_output_dir_removes_a_symlinked_checkpoint_but_not_its_target(base, finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    target = Path(shutil.copytree(finished / "checkpoint-6", tmp_path / "elsewhere" / "checkpoint-6"))
    before = _tree_sha(target)
    (out / "checkpoint-9").symlink_to(target, target_is_directory=True)
    result = run(micro_config(base, out, max_steps=2, save_steps=2, overwrite_output_dir=True))
    assert result.global_step == 2
    assert not (out / "checkpoint-9").is_symlink() and not (out / "checkpoint-9").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert _tree_sha(target) == before
    verify_checkpoint(target)


def test_second_run_into_a_busy_output_dir_gets_one_line_and_sigkill_leaves_no_stale_lock(base, tmp_path):
    from dylora_moe.training.run_lock import LOCK_NAME, run_lock

    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "dylora_moe", *cli_args(base, out, "--num_epochs", "50")],
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:  # training has started: the lock is held
            if is_loss_line(line):
                break
        second = run_cli(*cli_args(base, out, "--max_steps", "2"))
        assert second.returncode == 2
        assert one_error_line(second) == (
            f"error: --output_dir {out} is in use by a run still training (process {first.pid} holds "
            f"{out / LOCK_NAME}); wait for it to finish, or choose another --output_dir")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    with run_lock(out):  # the kernel released the dead run's lock: a resume is not blocked
        pass


POISON_AT_STEP_5 = textwrap.dedent("""
    import math, sys
    from transformers import TrainerCallback
    import dylora_moe.training.run as run_module
    from dylora_moe.cli import main

    class Poison(TrainerCallback):  # the update of step 5 turns non-finite, like a learning rate far too high
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 4:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.fill_(math.nan)

    real = run_module.train
    run_module.train = lambda cfg, **kw: real(cfg, extra_callbacks=[Poison()])
    sys.exit(main(sys.argv[1:]))
""")


def test_diverged_training_stops_with_one_line_and_saves_nothing_of_it(base, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", POISON_AT_STEP_5, *cli_args(base, out, "--save_steps", "3")],
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        "error: training diverged at step 5: a trainable weight (expert or gate) is not finite; this step was not "
        f"saved and the last checkpoint {out / 'checkpoint-3'} is intact; resume from it with a lower "
        "--learning_rate (now 0.005)")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert find_latest_checkpoint(out, log=lambda m: None) == out / "checkpoint-3"


def test_bad_numeric_flag_is_one_line_from_a_real_subprocess(tmp_path):
    started = time.monotonic()
    proc = run_cli("train", "--output_dir", str(tmp_path / "out"), "--learning_rate", "nan")
    assert proc.returncode == 2
    assert one_error_line(proc) == "error: --learning_rate must be a finite number, got nan"
    assert not (tmp_path / "out").exists()
    print(f"refused in {time.monotonic() - started:.1f} s")


def test_regular_file_as_checkpoint_store_is_refused_before_training(tmp_path):
    store = tmp_path / "store.txt"
    store.write_text("not a store")
    proc = run_cli("train", "--output_dir", str(tmp_path / "out"), "--checkpoint_store", str(store))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: --checkpoint_store {store} is a file, not a checkpoint store directory; give a directory "
        "(new or holding index.json) or a gs://, s3://, wandb:// URI")
    assert not (tmp_path / "out").exists()


def test_moved_local_base_with_the_same_weights_resumes(base, tmp_path):
    old = Path(shutil.copytree(base, tmp_path / "base-old"))
    out = tmp_path / "out"
    run(micro_config(str(old), out, max_steps=2, save_steps=2))
    moved = old.rename(tmp_path / "base-new")
    result = run(micro_config(str(moved), out, max_steps=3, save_steps=3, resume_from_checkpoint="auto"))
    assert result.global_step == 3
    verify_checkpoint(out / "checkpoint-3")
