"""`dylora-moe generate` end to end: a real subprocess on a trained micro checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dylora_moe.eval.generation import GenerationConfig
from dylora_moe.eval.single_prompt import complete, prompt_ids
from dylora_moe.model.loading import load_model_for_inference
from micro import save_micro_base
from train_helpers import micro_config, run

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTION = "Write a function that adds two numbers."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    base = save_micro_base(root / "base")
    return run(micro_config(base, root / "out", max_steps=2, mature_after_steps=1)).last_checkpoint


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dylora_moe", "generate", *args], input=stdin or "",
                          capture_output=True, text=True, env=env, timeout=300)


def _reference(checkpoint: str, max_new_tokens: int) -> str:
    """The trained model's greedy continuation of the templated prompt, in this process."""
    model, tokenizer = load_model_for_inference(checkpoint, log=lambda m: None)
    ids = torch.tensor([prompt_ids(tokenizer, INSTRUCTION)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_generate_streams_the_templated_greedy_completion(checkpoint):
    streamed = _cli("--model", checkpoint, "--prompt", INSTRUCTION, "--max_new_tokens", "12")
    assert streamed.returncode == 0, streamed.stderr
    scripted = _cli("--model", checkpoint, "--max_new_tokens", "12", "--json", stdin=INSTRUCTION)
    assert scripted.returncode == 0, scripted.stderr
    result = json.loads(scripted.stdout)
    expected = _reference(checkpoint, 12)
    assert result["completion"] == expected and streamed.stdout.rstrip("\n") == expected
    assert 1 <= result["new_tokens"] <= 12 and result["tokens_per_second"] > 0
    assert "tokens/s" in streamed.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_generate_raw_prompt_file_and_bad_input(checkpoint, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("def add(a, b):")
    raw = _cli("--model", checkpoint, "--prompt-file", str(prompt), "--raw", "--max_new_tokens", "4", "--json")
    assert raw.returncode == 0 and json.loads(raw.stdout)["prompt"] == "def add(a, b):"
    missing = _cli("--model", checkpoint, "--prompt-file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        missing.stderr.strip()] and "cannot read --prompt-file" in missing.stderr
    flash = _cli("--model", checkpoint, "--prompt", "x", "--attn_implementation", "flash_attention_2")
    if not torch.cuda.is_available():
        assert flash.returncode == 2 and len(flash.stderr.strip().splitlines()) == 1


def test_generation_stops_at_eos(tmp_path):
    model, tokenizer = load_model_for_inference(save_micro_base(tmp_path / "base"), base_only=True,
                                                log=lambda m: None)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 0
        model.lm_head.weight[tokenizer.eos_token_id] += 10 * model.model.norm.weight.sign()  # always the argmax
    pieces: list[str] = []
    result = complete(model, tokenizer, prompt_ids(tokenizer, INSTRUCTION), GenerationConfig(max_new_tokens=20),
                      on_text=pieces.append)
    assert result.stopped_at_eos and result.new_tokens < 20
