"""Quantized frozen bases (bitsandbytes 4-bit NF4 / 8-bit) on a micro Llama, on CPU: training moves the
experts, 4-bit runs resume exactly, checkpoints cross between the base quantized and not (and are refused on
other weights), and bad quantization input is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from micro import save_micro_base
from train_helpers import adapter_weights, max_weight_diff, micro_config, run, run_cli, step_losses

pytest.importorskip("bitsandbytes")

from dylora_moe.errors import UserError  # noqa: E402
from dylora_moe.model.adapter_io import adapter_state_dict, load_adapter  # noqa: E402
from dylora_moe.model.config import DyLoRAConfig  # noqa: E402
from dylora_moe.model.loading import build_model, load_model_for_inference  # noqa: E402
from dylora_moe.model.quantization import Quantization, is_quantized_linear  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FOUR_BIT = Quantization(bits=4)


class AdapterSnapshots(TrainerCallback):
    """The trainable state at the start and the end of a run, and the type of an adapted projection's base."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {k: v.clone() for k, v in adapter_state_dict(model).items()}
        self.base_layer = type(model.adapted_layers()[0][1].base).__name__

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = adapter_state_dict(model)


def train_quiet(cfg, callbacks=None):
    from dylora_moe.training.run import train

    return train(cfg, log=lambda m: None, extra_callbacks=callbacks)


@pytest.fixture(scope="module")
def four_bit_run(base, tmp_path_factory):
    """An uninterrupted 4-bit run (12 steps, a checkpoint every 3)."""
    return run(micro_config(base, tmp_path_factory.mktemp("nf4"), load_in_4bit=True))


@pytest.fixture(scope="module")
def other_base(tmp_path_factory) -> str:
    """Same architecture and names, other weights."""
    return save_micro_base(tmp_path_factory.mktemp("other") / "micro", seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("flag, layer", [("load_in_4bit", "Linear4bit"), ("load_in_8bit", "Linear8bitLt")])
def test_training_on_a_quantized_base_changes_every_expert(base, tmp_path, flag, layer):
    snapshots = AdapterSnapshots()
    result = train_quiet(micro_config(base, tmp_path, max_steps=3, save_steps=3, **{flag: True}), [snapshots])
    assert snapshots.base_layer == layer
    changed = {k for k in snapshots.before if k != "maturity"
               if not torch.equal(snapshots.before[k], snapshots.after[k])}
    assert changed == set(snapshots.before) - {"maturity"}  # every expert's A and B and every gate moved
    losses = step_losses(result)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    manifest = json.loads((Path(result.last_checkpoint) / "manifest.json").read_text())
    assert manifest["metadata"]["base_quantization"]["method"] == f"bnb-{flag[8:]}"
    saved = adapter_weights(result.last_checkpoint)
    assert all(t.dtype == torch.float32 for k, t in saved.items() if k != "maturity")  # adapter-only, fp32


@pytest.mark.slow
def test_4bit_stop_and_resume_equals_uninterrupted(base, four_bit_run, tmp_path):
    first = run(micro_config(base, tmp_path, load_in_4bit=True), stop_at=5)
    assert first.global_step == 5
    resumed = run(micro_config(base, tmp_path, load_in_4bit=True, resume_from_checkpoint="latest"))
    expected, got = step_losses(four_bit_run), step_losses(resumed)
    assert resumed.global_step == four_bit_run.global_step == 12
    for step in range(6, 13):
        assert abs(got[step] - expected[step]) <= 1e-6, (step, got[step], expected[step])
    assert max_weight_diff(adapter_weights(resumed.last_checkpoint),
                           adapter_weights(four_bit_run.last_checkpoint)) <= 1e-6
    manifest = json.loads((Path(resumed.last_checkpoint) / "manifest.json").read_text())
    assert manifest["metadata"]["base_quantization"] == {
        "method": "bnb-4bit", "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_4bit_checkpoint_loads_on_the_full_precision_base_and_back(base, four_bit_run, tmp_path, dtype):
    checkpoint = four_bit_run.last_checkpoint
    saved = adapter_weights(checkpoint)
    full, _ = load_model_for_inference(checkpoint, dtype=dtype)  # same base, not quantized: accepted
    assert not any(is_quantized_linear(m) for m in full.modules())
    assert max_weight_diff(adapter_state_dict(full), saved) == 0.0
    quantized, _ = load_model_for_inference(checkpoint, quantization=FOUR_BIT)
    ids = torch.randint(3, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    # the same experts on the base rounded to NF4 or not: the logits agree to the rounding, not exactly
    gap = (_logits(full, ids) - _logits(quantized, ids)).abs().max().item()
    assert 0 < gap < 0.2 * _logits(full, ids).abs().max().item()


@pytest.mark.slow
def test_full_precision_checkpoint_loads_on_the_same_base_in_4bit(base, tmp_path):
    fp32_run = run(micro_config(base, tmp_path, max_steps=3, save_steps=3))
    back, _ = load_model_for_inference(fp32_run.last_checkpoint, quantization=FOUR_BIT)
    assert any(is_quantized_linear(m) for m in back.modules())
    assert max_weight_diff(adapter_state_dict(back), adapter_weights(fp32_run.last_checkpoint)) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("quantization", [None, FOUR_BIT], ids=["fp32", "4bit"])
def test_4bit_checkpoint_is_refused_on_other_weights(four_bit_run, other_base, quantization):
    checkpoint = four_bit_run.last_checkpoint
    config = DyLoRAConfig.load(checkpoint)
    model, _ = build_model(other_base, config, quantization=quantization)
    with pytest.raises(UserError, match="was trained on other weights than the base"):
        load_adapter(model, checkpoint)


# ---------------------------------------------------------------- bad input: one line each

def _cli(args: list[str], prelude: str = "", cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    code = f"{prelude}\nimport sys\nfrom dylora_moe.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_missing_bitsandbytes_is_one_line(base, tmp_path):
    block = "import sys\nsys.modules['bitsandbytes'] = None  # as if it were not installed"
    done = _cli(["train", "--model_name", base, "--load_in_4bit", "--output_dir", str(tmp_path / "out"),
                 "--report_to", "none"], prelude=block)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --load_in_4bit needs the bitsandbytes package, which is not installed; "
        "pip install 'dylora-moe[qlora]' (or pip install bitsandbytes)")
    assert not (tmp_path / "out").exists()  # refused before anything was loaded or written


def test_base_already_quantized_by_another_method_is_refused(tmp_path):
    directory = Path(save_micro_base(tmp_path / "gptq"))
    config = json.loads((directory / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as error:
        build_model(str(directory), DyLoRAConfig(), quantization=Quantization(bits=8))
    assert str(error.value) == (
        f"base model {str(directory)!r} cannot be quantized with --load_in_8bit: it is already quantized (gptq); "
        "load its unquantized weights, or drop --load_in_8bit")


def test_4bit_with_bf16_on_a_machine_without_bf16_is_one_line(base, tmp_path, monkeypatch):
    # no such hardware here: the capability probe is the seam (a GPU before Ampere answers False)
    monkeypatch.setattr("dylora_moe.model.quantization.bf16_supported", lambda: False)
    with pytest.raises(UserError) as error:
        train_quiet(micro_config(base, tmp_path, load_in_4bit=True, bf16=True))
    assert str(error.value) == (
        "--load_in_4bit with --bf16 computes in bfloat16, which this CPU does not support; "
        "pass --fp16 or --bnb_4bit_compute_dtype float16 (or float32) instead")


@pytest.mark.parametrize("flags, message", [
    (dict(load_in_4bit=True, load_in_8bit=True), "--load_in_4bit and --load_in_8bit were both given; choose one"),
    (dict(load_in_8bit=True, bnb_4bit_compute_dtype="bfloat16"),
     "--bnb_4bit_compute_dtype only applies with --load_in_4bit; add it or drop the option"),
    (dict(load_in_4bit=True, bnb_4bit_compute_dtype="int8"),
     "--bnb_4bit_compute_dtype must be one of float32, bfloat16, float16, got 'int8'"),
])
def test_bad_quantization_flags_are_one_line(base, tmp_path, flags, message):
    with pytest.raises(UserError) as error:
        train_quiet(micro_config(base, tmp_path, **flags))
    assert str(error.value) == message


def test_an_evaluation_forward_leaves_the_4bit_base_differentiable(base):
    """bitsandbytes repacks 4-bit weights for a backward-less CPU kernel on the first eval-mode forward (on CPUs
    with AVX512-BF16); the loader turns that off, so the gradients after an evaluation are the ones before."""
    from micro import batch

    model, _ = build_model(base, DyLoRAConfig(num_experts=2, lora_r=4, lora_dropout=0.0), quantization=FOUR_BIT)
    inputs = {k: v.clamp_max(400) for k, v in batch(seed=3).items()}

    def expert_grads() -> list[torch.Tensor]:
        model.train()
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        return [p.grad.clone() for p in model.expert_parameters(0)]

    before = expert_grads()
    model.eval()
    with torch.no_grad():
        model(input_ids=inputs["input_ids"])
    after = expert_grads()
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.slow
def test_eval_cli_runs_a_4bit_checkpoint_on_the_4bit_base(four_bit_run, tmp_path, capsys, shared_data):
    from dylora_moe.cli import main

    out = tmp_path / "res.json"
    code = main(["eval", "--model", four_bit_run.last_checkpoint, "--load_in_4bit", "--benchmarks", "mbpp",
                 "--mbpp_path", str(shared_data / "mbpp.jsonl"), "--limit", "1", "--max_new_tokens", "8",
                 "--output", str(out)])
    assert code == 0
    assert len(json.loads(out.read_text())["benchmarks"]["mbpp"]["problems"]) == 1
    model, _ = load_model_for_inference(four_bit_run.last_checkpoint, quantization=FOUR_BIT)
    ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(1))
    cached = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.slow
def test_generate_cli_completes_on_the_4bit_base(four_bit_run):
    """`dylora-moe generate --load_in_4bit` in a real subprocess gives the greedy completion of the checkpoint on
    the 4-bit base, as computed in this process."""
    from dylora_moe.eval.generation import GenerationConfig
    from dylora_moe.eval.single_prompt import complete, prompt_ids

    done = run_cli("generate", "--model", four_bit_run.last_checkpoint, "--load_in_4bit", "--raw", "--prompt",
                   "def add(a, b):", "--max_new_tokens", "6", "--json")
    assert done.returncode == 0, done.stderr
    loaded = [line for line in done.stderr.splitlines() if line.startswith("[model]")]
    assert len(loaded) == 1 and "Linear layers in bnb-4bit nf4 (bitsandbytes), computing in float32" in loaded[0]
    model, tokenizer = load_model_for_inference(four_bit_run.last_checkpoint, log=lambda m: None,
                                                quantization=FOUR_BIT)
    assert is_quantized_linear(model.adapted_layers()[0][1].base)
    expected = complete(model, tokenizer, prompt_ids(tokenizer, "def add(a, b):", raw=True),
                        GenerationConfig(max_new_tokens=6))
    result = json.loads(done.stdout)
    assert result["completion"] == expected.text and result["new_tokens"] == expected.new_tokens >= 1


NF4 = {"method": "bnb-4bit", "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


@pytest.mark.parametrize("saved, current, expected", [
    (NF4, None, "note: the checkpoint was trained on the base in bnb-4bit nf4 and resumes on it in full precision; "
                "allowed, but the losses will not continue exactly as the interrupted run's would have"),
    (None, {"method": "bnb-8bit"}, "note: the checkpoint was trained on the base in full precision and resumes on "
                                   "it in bnb-8bit; allowed, but the losses will not continue exactly as the "
                                   "interrupted run's would have"),
    ("bnb-8bit", NF4, "note: the checkpoint was trained on the base in bnb-8bit and resumes on it in bnb-4bit nf4; "
                      "allowed, but the losses will not continue exactly as the interrupted run's would have"),
    (NF4, dict(NF4, compute_dtype="bfloat16"), None),  # the compute dtype is a run setting, like --bf16
    (NF4, dict(NF4), None),
    (None, None, None),
])
def test_a_resume_across_base_quantization_is_one_line(saved, current, expected):
    from dylora_moe.model.quantization import quantization_change_line

    assert quantization_change_line(saved, current) == expected


@pytest.mark.slow
def test_resuming_a_4bit_checkpoint_in_full_precision_says_so_once(base, four_bit_run, tmp_path):
    from dylora_moe.training.run import train

    lines: list[str] = []
    cfg = micro_config(base, tmp_path, max_steps=13, resume_from_checkpoint=four_bit_run.last_checkpoint)
    result = train(cfg, log=lines.append)
    assert result.global_step == 13  # allowed: the same weights, within the fingerprint's tolerance
    notes = [line for line in lines if "was trained on the base in bnb-4bit nf4" in line]
    assert len(notes) == 1 and "resumes on it in full precision" in notes[0]
