"""Checkpoints that match their manifest but do not load, downloads that must not replace anything, and the
`checkpoints` commands' messages on paths that are not what they expect. Real CLI subprocesses."""

from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from ckpt_helpers import make_checkpoint
from safetensors.torch import load_file, save_file

from dylora_moe.checkpoint.manifest import find_latest_checkpoint, publish_atomically, read_manifest, write_manifest
from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore
from train_helpers import micro_config, one_error_line, run, run_cli

ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory) -> Path:
    """A real run's output dir with checkpoint-2 and checkpoint-4."""
    out = tmp_path_factory.mktemp("trained") / "out"
    run(micro_config(base, out, max_steps=4, save_steps=2, eval_steps=2))
    return out


def _nan_adapter(path: Path) -> None:
    tensors = load_file(str(path))
    key = next(k for k in sorted(tensors) if ".lora_B." in k)
    tensors[key] = torch.full_like(tensors[key], math.nan)
    save_file(tensors, str(path))


class _Evil:
    def __reduce__(self):
        return (print, ("the pickle ran",))


# a file written wrongly and then re-manifested by some tool: its bytes match the manifest
DAMAGE = {
    "rng_state_0.pth": lambda p: p.write_bytes(pickle.dumps(_Evil())),
    "trainer_state.json": lambda p: p.write_text('{"global_step": 4,'),
    ADAPTER: lambda p: p.write_bytes(b"\x00" * 64),
    "optimizer.pt": lambda p: p.write_bytes(b"not a torch file"),
}
PARSE_ERRORS = {"rng_state_0.pth": "does not parse (UnpicklingError: ", "trainer_state.json": "does not parse "
                "(JSONDecodeError: ", ADAPTER: "does not parse (SafetensorError: ", "optimizer.pt": "does not parse ("}


def _remanifested_copy(trained: Path, dest: Path, name: str, damage) -> Path:
    out = dest / "out"
    shutil.copytree(trained, out)
    ckpt = out / "checkpoint-4"
    staging = out / ".staging"
    shutil.copytree(ckpt, staging)
    damage(staging / name)
    write_manifest(staging, read_manifest(ckpt)["metadata"])
    publish_atomically(staging, ckpt)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_unparsable_file_fails_verify_and_auto_falls_back(trained, tmp_path, name):
    out = _remanifested_copy(trained, tmp_path, name, DAMAGE[name])
    proc = run_cli("checkpoints", "verify", str(out / "checkpoint-4"))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.startswith(f"error: checkpoint {out / 'checkpoint-4'}: file {name} {PARSE_ERRORS[name]}"), line
    assert "the pickle ran" not in proc.stdout + proc.stderr
    logs: list[str] = []
    assert find_latest_checkpoint(out, log=logs.append) == out / "checkpoint-2"
    assert logs[0].startswith(f"skipping checkpoint-4: corrupt — checkpoint {out / 'checkpoint-4'}: file {name} "
                              "does not parse")


@pytest.mark.slow
def test_nan_experts_are_never_the_checkpoint_auto_resumes(base, trained, tmp_path):
    out = _remanifested_copy(trained, tmp_path, ADAPTER, _nan_adapter)
    proc = run_cli("checkpoints", "verify", str(out / "checkpoint-4"))
    assert proc.returncode == 2
    assert "holds non-finite values (NaN/inf) in " in one_error_line(proc)
    result = run(micro_config(base, out, max_steps=4, save_steps=2, eval_steps=2, resume_from_checkpoint="auto"))
    assert result.global_step == 4  # resumed from checkpoint-2 and redid steps 3-4
    assert find_latest_checkpoint(out, log=lambda m: None) == out / "checkpoint-4"
    assert all(t.isfinite().all() for t in load_file(str(out / "checkpoint-4" / ADAPTER)).values())


def test_download_never_replaces_a_non_empty_destination(tmp_path):
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "a", 10))
    other_run = make_checkpoint(tmp_path / "b", 99)  # another run's checkpoint dir, plus a file of the user's
    (other_run / "notes.txt").write_text("mine")
    before = sorted(p.name for p in other_run.iterdir())
    proc = run_cli("checkpoints", "download", str(tmp_path / "store"), str(other_run))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: download destination {other_run} is not empty; choose an empty or new directory (it holds another "
        "checkpoint, which a download never replaces)")
    assert sorted(p.name for p in other_run.iterdir()) == before
    assert read_manifest(other_run)["metadata"]["global_step"] == 99
    again = run_cli("checkpoints", "download", str(tmp_path / "store"), str(tmp_path / "new"))
    assert again.returncode == 0, again.stderr
    assert run_cli("checkpoints", "download", str(tmp_path / "store"), str(tmp_path / "new")).returncode == 0  # reused


def test_checkpoints_list_on_a_regular_file_and_on_a_missing_path(tmp_path):
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    proc = run_cli("checkpoints", "list", str(regular))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: store {regular} is a file, not a checkpoint store directory; give a directory (new or "
        "holding index.json) or a gs://, s3://, wandb:// URI")
    missing = tmp_path / "nope"
    proc = run_cli("checkpoints", "list", str(missing))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: store {missing} does not exist; give an existing store directory or a gs://, s3://, wandb:// URI")


def test_verify_on_an_output_dir_names_its_checkpoints(tmp_path):
    out = tmp_path / "out"
    make_checkpoint(out, 10)
    make_checkpoint(out, 20)
    proc = run_cli("checkpoints", "verify", str(out))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: {out} is a training output directory, not a checkpoint; verify one of its 2 checkpoints, e.g. "
        f"{out / 'checkpoint-20'}")


def test_checkpoint_without_manifest_is_skipped_for_that_reason(tmp_path):
    make_checkpoint(tmp_path, 10)
    (make_checkpoint(tmp_path, 20) / "manifest.json").unlink()
    logs: list[str] = []
    assert find_latest_checkpoint(tmp_path, log=logs.append) == tmp_path / "checkpoint-10"
    assert logs == ["skipping checkpoint-20: no manifest.json (not written by dylora-moe, or damaged)"]
