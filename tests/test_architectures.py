"""Every decoder-only family code models are built on trains, resumes exactly and generates with default options.

Each family is its real transformers architecture at toy size (tests/families.py). The defaults under test: the
target modules read from the model's attention, and the attention kernel transformers picks for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.utils import is_flash_attn_2_available

from dylora_moe.checkpoint.manifest import RUN_CONFIG_NAME
from dylora_moe.cli import main
from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.loading import load_model_for_inference
from families import FAMILIES, save_family_base
from train_helpers import ALPACA, adapter_weights, max_weight_diff, micro_config, run, step_losses

# the projections each family's experts sit on by default (the matrix in docs/model.md)
EXPECTED_TARGETS = {
    **{family: ["q_proj", "v_proj"] for family in ("llama", "mistral", "gemma", "gemma2", "gemma3_text", "qwen2",
                                                   "qwen3", "qwen2_moe", "qwen3_moe", "starcoder2", "mixtral")},
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "falcon": ["query_key_value"],
    "deepseek_v2": ["q_proj", "kv_a_proj_with_mqa"],  # MLA without query compression (q_lora_rank None)
    "deepseek_v3": ["q_a_proj", "kv_a_proj_with_mqa"],  # MLA with query compression
}
EAGER_ONLY = {"gemma2"}  # no sdpa (its attention soft-caps the logits): transformers picks eager
STEPS = 3  # a checkpoint at step 2, the resume continues to step 3


def _short_run(base: str, output_dir: Path, **overrides):
    """3 steps of 8 examples (an epoch ends inside step 3), a checkpoint every 2 steps, no evaluation."""
    return run(micro_config(base, output_dir, max_steps=STEPS, save_steps=2, eval_steps=100, max_examples=24,
                            **overrides))


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_resumes_exactly_and_generates_with_defaults(family, tmp_path):
    base = save_family_base(family, tmp_path / "base")
    full = _short_run(base, tmp_path / "full")
    checkpoint = tmp_path / "full" / "checkpoint-2"
    assert DyLoRAConfig.load(checkpoint).target_modules == EXPECTED_TARGETS[family]
    used = json.loads((checkpoint / RUN_CONFIG_NAME).read_text())["attn_implementation"]
    assert used == ("eager" if family in EAGER_ONLY else "sdpa")

    resumed = _short_run(base, tmp_path / "resumed", resume_from_checkpoint=str(checkpoint))
    assert resumed.global_step == full.global_step == STEPS
    expected, got = step_losses(full), step_losses(resumed)
    assert sorted(got) == sorted(expected) == [1, 2, 3]
    assert abs(got[3] - expected[3]) <= 1e-6, (got[3], expected[3])
    assert max_weight_diff(adapter_weights(resumed.last_checkpoint), adapter_weights(full.last_checkpoint)) <= 1e-6

    model, tokenizer = load_model_for_inference(full.last_checkpoint, log=lambda m: None)
    assert model.config._attn_implementation == used
    prompt = tokenizer("def add(a, b):", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 4)


def _cli_train(base: str, out: Path, *extra: str) -> int:
    """`dylora-moe train` with default model options, in this process (the CLI's own subprocess path is tested
    in test_training_cli.py)."""
    return main(["train", "--model_name", base, "--output_dir", str(out), "--max_steps", "1", "--report_to", "none",
                 "--datasets", f"code_alpaca={ALPACA}", "--max_examples_per_dataset", "16", "--max_seq_length", "64",
                 "--train_batch_size", "4", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("family, kernel, targets", [("gemma2", "eager", ["q_proj", "v_proj"]),
                                                     ("falcon", "sdpa", ["query_key_value"])])
def test_cli_defaults_train_gemma2_and_falcon(family, kernel, targets, tmp_path, capsys):
    """The two families the old defaults refused (sdpa forced on Gemma-2; q_proj,v_proj looked for in Falcon)."""
    base = save_family_base(family, tmp_path / "base")
    assert _cli_train(base, tmp_path / "out") == 0, capsys.readouterr().err[-3000:]
    checkpoint = tmp_path / "out" / "checkpoint-1"
    assert DyLoRAConfig.load(checkpoint).target_modules == targets
    assert json.loads((checkpoint / RUN_CONFIG_NAME).read_text())["attn_implementation"] == kernel


def test_refused_kernel_names_the_ones_the_model_accepts(tmp_path, capsys):
    base = save_family_base("gemma2", tmp_path / "base")
    assert _cli_train(base, tmp_path / "out", "--attn_implementation", "sdpa") == 2
    accepted = " or ".join(["eager"] + ["flash_attention_2"] * is_flash_attn_2_available()
                           + ["flex_attention"] * torch.cuda.is_available())
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: the base model cannot use --attn_implementation sdpa: Gemma2ForCausalLM does not support an attention "
        f"implementation through torch.nn.functional.scaled_dot_product_attention yet; use --attn_implementation "
        f"{accepted}, or leave it unset (transformers then picks sdpa where the architecture supports it, else eager)")
    assert not list((tmp_path / "out").glob("checkpoint-*"))
