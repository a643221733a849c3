"""The continuity probe: every checkpoint scores fixed training sequences; a resume scores them again."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dylora_moe.checkpoint.manifest import publish_atomically, read_manifest, verify_checkpoint, write_manifest
from dylora_moe.errors import UserError
from dylora_moe.report.history import normalise
from dylora_moe.report.summary import summary_blocks, to_markdown
from dylora_moe.training.continuity import PROBE_NAME, PROBE_SEQUENCES, TOLERANCE
from dylora_moe.training.run import train
from train_helpers import micro_config, run, run_cli

LINE = re.compile(r"^\[resume\] continuity: probe loss (\d+\.\d+) at save \(cpu, float32\) -> (\d+\.\d+) here "
                  r"\(cpu, float32\): Δ (\S+)$")


def _resume(cfg) -> tuple[object, list[str]]:
    lines: list[str] = []
    return train(cfg, log=lines.append), lines


def _continuity_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("[resume] continuity")]


@pytest.fixture(scope="module")
def interrupted(base, tmp_path_factory) -> Path:
    """A micro run stopped after 3 steps (its checkpoint-3 carries a probe); copied per test."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    run(micro_config(base, out, max_steps=6), stop_at=3)
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_resume_on_the_same_machine_logs_the_probe_and_continues(base, interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    probe = json.loads((out / "checkpoint-3" / PROBE_NAME).read_text())
    assert PROBE_NAME in read_manifest(out / "checkpoint-3")["files"]
    assert len(probe["sequences"]) == PROBE_SEQUENCES and all(len(s["input_ids"]) <= 256 for s in probe["sequences"])
    assert probe["device"] == "cpu" and probe["precision"] == "float32" and probe["threads"] >= 1

    result, lines = _resume(micro_config(base, out, max_steps=6, resume_from_checkpoint="latest"))

    (line,) = _continuity_lines(lines)
    match = LINE.match(line)
    assert match, line
    assert abs(float(match[3])) <= TOLERANCE * float(match[1])
    assert result.global_step == 6
    (event,) = [e for e in result.log_history if e.get("event") == "resume"]
    assert event["probe_loss_saved"] == probe["loss"] and event["probe_within_tolerance"] is True
    # every later checkpoint scores the same ids
    assert json.loads((out / "checkpoint-6" / PROBE_NAME).read_text())["sequences"] == probe["sequences"]
    # the report's resume table carries both losses
    markdown = to_markdown(summary_blocks(normalise(result.log_history), {}, "run", "trainer_state.json"))
    here = event["probe_loss_here"]
    assert f"| {probe['loss']:.5f} -> {here:.5f} (Δ {here - probe['loss']:.3g}) |" in markdown


def _scale_a_norm(base_dir: Path) -> None:
    """Scale the final layer norm's weight: same files, names, shapes; the base fingerprint hashes matrices only."""
    weights = base_dir / "model.safetensors"
    state = load_file(str(weights))
    state["model.norm.weight"] = state["model.norm.weight"] * 3.0
    save_file(state, str(weights), metadata={"format": "pt"})


def test_a_changed_norm_weight_is_refused_by_the_probe_and_accepted_with_the_flag(base, tmp_path):
    own_base = Path(shutil.copytree(base, tmp_path / "base"))
    out = tmp_path / "run"
    run(micro_config(str(own_base), out, max_steps=6), stop_at=3)
    _scale_a_norm(own_base)

    with pytest.raises(UserError) as refused:
        _resume(micro_config(str(own_base), out, max_steps=6, resume_from_checkpoint="latest"))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"continuity probe of {out / 'checkpoint-3'}: probe loss ")
    assert "base fingerprint, precision, quantization, device and versions all match" in message  # fingerprint: same
    assert message.endswith("pass --accept_probe_drift to resume anyway")

    result, lines = _resume(micro_config(str(own_base), out, max_steps=6, resume_from_checkpoint="latest",
                                         accept_probe_drift=True))
    (line,) = _continuity_lines(lines)
    assert line.endswith("(beyond the tolerance, accepted by --accept_probe_drift)")
    assert result.global_step == 6


def _reseal(checkpoint: Path, change) -> None:
    """Change a checkpoint's files and seal it again as the trainer would (a checkpoint another version wrote)."""
    resealed = checkpoint.parent / ".tmp-reseal"
    shutil.copytree(checkpoint, resealed)
    change(resealed)
    write_manifest(resealed, read_manifest(checkpoint)["metadata"])
    publish_atomically(resealed, checkpoint)
    verify_checkpoint(checkpoint)


def test_a_checkpoint_without_a_probe_resumes_unchecked_in_one_line(base, interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    checkpoint = out / "checkpoint-3"
    _reseal(checkpoint, lambda d: (d / PROBE_NAME).unlink())

    result, lines = _resume(micro_config(base, out, max_steps=6, resume_from_checkpoint=str(checkpoint)))

    assert _continuity_lines(lines) == [
        f"[resume] continuity: {checkpoint} has no {PROBE_NAME} (saved before continuity probes existed): "
        "continuity is not checked for this resume"]
    assert result.global_step == 6
    markdown = to_markdown(summary_blocks(normalise(result.log_history), {}, "run", "trainer_state.json"))
    assert "| not checked |" in markdown


def test_a_probe_of_another_format_is_refused_before_training(base, interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    checkpoint = out / "checkpoint-3"
    _reseal(checkpoint, lambda d: (d / PROBE_NAME).write_text(json.dumps({"format": "other/9", "loss": 1.0})))

    with pytest.raises(UserError) as refused:
        _resume(micro_config(base, out, max_steps=6, resume_from_checkpoint="latest"))

    assert str(refused.value) == (
        f"checkpoint {checkpoint}: {PROBE_NAME} is not a dylora-moe-continuity-probe/1 file (sequences of token ids "
        "and a loss); pass --accept_probe_drift to resume without the continuity check")
    assert not (out / "checkpoint-4").exists()


def test_checkpoints_verify_probe_scores_a_good_checkpoint(interrupted):
    checkpoint = interrupted / "checkpoint-3"
    saved = json.loads((checkpoint / PROBE_NAME).read_text())["loss"]

    proc = run_cli("checkpoints", "verify", "--probe", str(checkpoint))

    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.splitlines()[-1]
    assert line.startswith(f"continuity: probe loss {saved:.5f} at save (cpu, float32) -> {saved:.5f} here "), line
    assert re.search(r"Δ \S+$", line)


def test_checkpoints_verify_probe_fails_beyond_the_tolerance(base, tmp_path):
    own_base = Path(shutil.copytree(base, tmp_path / "base"))
    run(micro_config(str(own_base), tmp_path / "run", max_steps=3))
    _scale_a_norm(own_base)

    proc = run_cli("checkpoints", "verify", "--probe", str(tmp_path / "run" / "checkpoint-3"))

    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (error,) = re.findall(r"error: [^\r\n]*", proc.stderr)
    assert error.startswith("error: continuity probe of ") and error.endswith("a resume here needs --accept_probe_drift")


def test_scoring_the_probe_leaves_random_streams_and_train_mode_alone(base):
    from dylora_moe.model.config import DyLoRAConfig
    from dylora_moe.model.loading import build_model
    from dylora_moe.training.continuity import score

    model, _ = build_model(base, DyLoRAConfig(num_experts=2, lora_r=4, lora_dropout=0.5), log=lambda m: None)
    model.train()
    before = torch.random.get_rng_state()
    loss = score(model, [{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8]}])
    assert torch.equal(torch.random.get_rng_state(), before)
    assert model.training
    assert loss == score(model, [{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8]}])
