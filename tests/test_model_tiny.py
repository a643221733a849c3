"""The embedded tiny base: shipped, verified by sha256 on every load, the same weights whatever CPU kernels a
machine picks; the build script still produces a verifiable artifact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dylora_moe.errors import UserError
from dylora_moe.model.base_fingerprint import base_fingerprint, same_base
from dylora_moe.model.loading import load_base_model
from dylora_moe.model.tiny import BUILD_REPORT, build_tiny_base, sha256_of
from dylora_moe.model.tiny_shipped import SHIPPED_DIR, verify_tiny_base
from train_helpers import ALPACA

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_the_shipped_base_matches_its_recorded_sha256_and_loads_as_float32():
    report = verify_tiny_base(SHIPPED_DIR)
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(report["sha256"])
    model, tokenizer = load_base_model("tiny", log=lambda m: None)
    assert {p.dtype for p in model.parameters()} == {__import__("torch").float32}
    assert len(tokenizer) == model.config.vocab_size == 4096
    assert report["held_out_loss_trained"] < report["held_out_loss_untrained"] - 2  # it learned something


def test_a_damaged_copy_is_one_line_naming_the_file(tmp_path):
    copy = tmp_path / "tiny_base"
    shutil.copytree(SHIPPED_DIR, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        verify_tiny_base(copy)
    message = str(info.value)
    assert message.startswith(f"the embedded tiny base is damaged: {copy / 'model.safetensors'} has sha256 ")
    assert "\n" not in message and "reinstall dylora-moe" in message


@pytest.mark.slow
def test_the_build_script_writes_an_artifact_that_verifies(tmp_path):
    report = build_tiny_base(tmp_path / "built", steps=2, corpus_bytes=200_000, seed=1, log=lambda m: None)
    assert verify_tiny_base(tmp_path / "built") == json.loads((tmp_path / "built" / BUILD_REPORT).read_text())
    assert report["dtype"] == "bfloat16" and report["seed"] == 1
    assert report["sha256"]["model.safetensors"] == sha256_of(tmp_path / "built" / "model.safetensors")
    model, _ = load_base_model(str(tmp_path / "built"), log=lambda m: None)
    assert not same_base(base_fingerprint(load_base_model("tiny", log=lambda m: None)[0]), base_fingerprint(model))


def _train(out: Path, capability: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WANDB_API_KEY", None)
    args = ["train", "--model_name", "tiny", "--output_dir", str(out), "--save_steps", "2", "--eval_steps", "100",
            "--logging_steps", "1", "--train_batch_size", "2", "--report_to", "none", "--datasets",
            f"code_alpaca={ALPACA}", "--max_seq_length", "64", "--max_examples_per_dataset", "24",
            "--eval_fraction", "0.2", *extra]
    return subprocess.run([sys.executable, "-m", "dylora_moe", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_checkpoint_on_tiny_resumes_under_other_cpu_kernels(tmp_path):
    """Another machine picks other kernels (instruction set, threads); the shipped base is the same bits, so
    the fingerprint check passes and the run continues."""
    first = _train(tmp_path / "out", "default", "--max_steps", "2")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    resumed = _train(tmp_path / "out", "avx2", "--max_steps", "4", "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "other weights" not in resumed.stdout + resumed.stderr
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
