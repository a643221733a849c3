"""`--attn_implementation` reaches the base's loading; values this machine cannot run are one line."""

from __future__ import annotations

import pytest
import torch

from dylora_moe.cli import main
from dylora_moe.errors import UserError
from dylora_moe.model.loading import load_base_model, load_model_for_inference
from micro import save_micro_base


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_micro_base(tmp_path_factory.mktemp("attn") / "base")


@pytest.mark.parametrize("name", ["sdpa", "eager"])
def test_the_chosen_kernel_is_loaded(base_dir, name):
    model, _ = load_base_model(base_dir, log=lambda m: None, attn_implementation=name)
    assert model.config._attn_implementation == name


def test_kernels_give_the_same_logits(base_dir):
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    logits = {}
    for name in ("sdpa", "eager"):
        model, _ = load_model_for_inference(base_dir, base_only=True, log=lambda m: None, attn_implementation=name)
        with torch.no_grad():
            logits[name] = model(input_ids=ids).logits
    assert torch.allclose(logits["sdpa"], logits["eager"], atol=1e-5)


def test_unknown_kernel_is_one_line(base_dir):
    with pytest.raises(UserError, match="not one of sdpa, eager, flash_attention_2, flex_attention"):
        load_base_model(base_dir, attn_implementation="fast")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine may run flash attention")
def test_flash_attention_without_a_gpu_is_one_line(base_dir, capsys):
    code = main(["eval", "--model", base_dir, "--base-model", "--attn_implementation", "flash_attention_2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs an NVIDIA GPU" in err[0] and "sdpa" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="flex attention trains on GPUs")
def test_flex_attention_training_on_cpu_is_one_line(base_dir, capsys):
    code = main(["train", "--model_name", base_dir, "--attn_implementation", "flex_attention", "--max_steps", "1",
                 "--report_to", "none", "--output_dir", str(__import__("pathlib").Path(base_dir).parent / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "cannot train on CPU" in err[-1]


def test_unset_kernel_is_transformers_choice_in_every_command(base_dir):
    from dylora_moe.cli import build_parser

    for argv in (["train"], ["eval", "--model", "m"], ["generate", "--model", "m"]):
        assert build_parser().parse_args(argv).attn_implementation is None
    model, _ = load_base_model(base_dir, log=lambda m: None)
    assert model.config._attn_implementation == "sdpa"  # what transformers picks for Llama
    model, _ = load_model_for_inference(base_dir, base_only=True, log=lambda m: None)
    assert model.config._attn_implementation == "sdpa"


def test_kernel_the_architecture_lacks_names_the_ones_it_has(tmp_path):
    """Falcon has no flex attention: the advice names what it does support here, not the value that failed."""
    from families import save_family_base

    falcon = save_family_base("falcon", tmp_path / "falcon")
    from transformers.utils import is_flash_attn_2_available

    accepted = "sdpa or eager or flash_attention_2" if is_flash_attn_2_available() else "sdpa or eager"
    with pytest.raises(UserError) as refused:
        load_base_model(falcon, log=lambda m: None, attn_implementation="flex_attention")
    assert str(refused.value) == (
        "the base model cannot use --attn_implementation flex_attention: FalconForCausalLM does not support an "
        f"attention implementation through torch's flex_attention; use --attn_implementation {accepted}, or leave "
        "it unset (transformers then picks sdpa where the architecture supports it, else eager)")
