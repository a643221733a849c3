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
from helpers_tokenizer import make_test_tokenizer
from micro import save_micro_base
from train_helpers import micro_config, one_error_line, run

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


CODE = "def add(a, b):\n    return a + b\n"


def _raw_tokens(text: str) -> int:
    """The prompt's length in tokens as `generate --raw` sends it."""
    return len(make_test_tokenizer()(text, add_special_tokens=True)["input_ids"])


@pytest.fixture(scope="module")
def gpt2_32(tmp_path_factory):
    """A GPT-2 base with 32 learned absolute positions: position 32 would index past its embedding table."""
    return save_micro_base(tmp_path_factory.mktemp("gpt2") / "base", kind="gpt2", positions=32)


@pytest.mark.slow
def test_a_prompt_longer_than_learned_positions_is_refused(gpt2_32):
    prompt = CODE * 3
    tokens = _raw_tokens(prompt)
    assert tokens > 32
    proc = _cli("--base-model", "--model", gpt2_32, "--raw", "--prompt", prompt, "--max_new_tokens", "4")
    assert proc.returncode == 2 and one_error_line(proc) == (
        f"error: the prompt is {tokens} tokens and --max_new_tokens 4 makes {tokens + 4} positions, but this model "
        "has 32 (n_positions in its config) and cannot go past them (its position embeddings are learned); "
        "shorten the prompt to under 32 tokens")


@pytest.mark.slow
def test_new_tokens_may_fill_learned_positions_exactly(gpt2_32):
    tokens = _raw_tokens(CODE)
    fits = _cli("--base-model", "--model", gpt2_32, "--raw", "--prompt", CODE, "--max_new_tokens", str(32 - tokens),
                "--json")
    assert fits.returncode == 0, fits.stderr[-3000:]
    assert json.loads(fits.stdout)["new_tokens"] == 32 - tokens  # the whole table used, no EOS before it
    over = _cli("--base-model", "--model", gpt2_32, "--raw", "--prompt", CODE, "--max_new_tokens", str(33 - tokens))
    assert over.returncode == 2 and one_error_line(over) == (
        f"error: the prompt is {tokens} tokens and --max_new_tokens {33 - tokens} makes 33 positions, but this "
        "model has 32 (n_positions in its config) and cannot go past them (its position embeddings are learned); "
        f"lower --max_new_tokens to at most {32 - tokens}, or shorten the prompt")


@pytest.mark.slow
def test_a_rotary_model_generates_past_its_configured_positions(base):
    prompt = CODE * 25
    tokens = _raw_tokens(prompt)
    assert tokens > 256  # the micro Llama's max_position_embeddings
    proc = _cli("--base-model", "--model", base, "--raw", "--prompt", prompt, "--max_new_tokens", "4", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["new_tokens"] >= 1
