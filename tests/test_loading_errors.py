"""A base model directory that cannot load is one line naming the file and the fix, for train, eval and generate,
and for a checkpoint whose base is such a directory: real subprocesses on a micro Llama saved by transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import transformers

from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.loading import build_model
from train_helpers import ALPACA, one_error_line, run_cli


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = {k: v for k, v in json.loads(path.read_text()).items() if k not in changes or changes[k] is not None}
    config.update({k: v for k, v in changes.items() if v is not None})
    path.write_text(json.dumps(config))


def _replace_contents(directory: Path, name: str) -> None:
    for path in directory.iterdir():
        path.unlink()
    (directory / name).write_text("not a model")


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# name -> (how to break a copy of the base, the error line after "error: "; {d} is the directory)
BREAKS = {
    "unknown model_type": (lambda d: _edit_config(d, model_type="foo"),
                           "{d}/config.json: model_type 'foo' is not known to transformers "
                           f"{transformers.__version__}; upgrade transformers or pass a directory of a supported "
                           "architecture"),
    "not a causal LM": (lambda d: _edit_config(d, model_type="vit"),
                        "{d}/config.json: model_type 'vit' is not a causal language model in transformers "
                        f"{transformers.__version__}; pass a decoder-only base (one AutoModelForCausalLM loads)"),
    "no model_type": (lambda d: _edit_config(d, model_type=None),
                      "{d}/config.json has no model_type; expected the config.json that save_pretrained writes; "
                      "re-download or re-save the model"),
    "config not JSON": (lambda d: (d / "config.json").write_text('{"model_type": "llama",'),
                        "{d}/config.json is not valid JSON (Expecting property name enclosed in double quotes: "
                        "line 1 column 24); re-download or re-save the model"),
    "tokenizer.json cut": (lambda d: _truncate(d / "tokenizer.json", 500),
                           "{d}/tokenizer.json is not valid JSON (Unterminated string starting at: line 27 column 7); "
                           "re-download or re-save the model"),
    "no config.json": (lambda d: (d / "config.json").unlink(),
                       "{d} is not a model directory: it has no config.json; expected a Hugging Face model directory "
                       "(config.json, weights, tokenizer); pass one, a hub id, or 'tiny'"),
    "header cut": (lambda d: _truncate(d / "model.safetensors", 1000),
                   "{d}/model.safetensors is truncated or corrupt (Error while deserializing header: invalid header "
                   "length); re-download or re-save it"),
    "tail cut": (lambda d: _truncate(d / "model.safetensors", (d / "model.safetensors").stat().st_size - 100),
                 "{d}/model.safetensors is truncated or corrupt (Error while deserializing header: incomplete "
                 "metadata, file not fully covered); re-download or re-save it"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(),
                   "{d} has no weights file (model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                   "pytorch_model.bin.index.json); re-download or re-save the model"),
    "no tokenizer": (lambda d: [(d / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")],
                     "{d} has no tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model, "
                     "vocab.json, vocab.txt or spiece.model); save the tokenizer into the model directory "
                     "(tokenizer.save_pretrained)"),
    "not a model": (lambda d: _replace_contents(d, "notes.txt"),
                    "{d} is not a model directory: it has no config.json; expected a Hugging Face model directory "
                    "(config.json, weights, tokenizer); pass one, a hub id, or 'tiny'"),
}


def _broken(base: str, tmp_path: Path, name: str) -> Path:
    directory = tmp_path / "broken-base"
    shutil.copytree(base, directory)
    BREAKS[name][0](directory)
    return directory


def _expected(name: str, directory: Path) -> str:
    return "error: " + BREAKS[name][1].format(d=directory)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BREAKS))
def test_generate_on_a_broken_base_is_one_line(base, tmp_path, name):
    directory = _broken(base, tmp_path, name)
    proc = run_cli("generate", "--base-model", "--model", str(directory), "--prompt", "x", "--max_new_tokens", "2")
    assert proc.returncode == 2 and one_error_line(proc) == _expected(name, directory)


@pytest.mark.slow
def test_a_missing_shard_is_named(base, tmp_path):
    from transformers import AutoModelForCausalLM

    directory = tmp_path / "sharded"
    shutil.copytree(base, directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    (directory / "model.safetensors").unlink()
    model.save_pretrained(directory, max_shard_size="200KB")
    shards = sorted(directory.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()
    proc = run_cli("generate", "--base-model", "--model", str(directory), "--prompt", "x", "--max_new_tokens", "2")
    assert proc.returncode == 2
    assert one_error_line(proc) == (f"error: {shards[1]} is missing (listed in model.safetensors.index.json); "
                                    "re-download it")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unknown model_type", "tail cut"])
def test_train_on_a_broken_base_is_one_line(base, tmp_path, name):
    directory = _broken(base, tmp_path, name)
    proc = run_cli("train", "--model_name", str(directory), "--output_dir", str(tmp_path / "out"), "--report_to",
                   "none", "--datasets", f"code_alpaca={ALPACA}", "--max_examples_per_dataset", "8")
    assert proc.returncode == 2 and one_error_line(proc) == _expected(name, directory)


@pytest.mark.slow
def test_eval_on_a_broken_base_is_one_line(base, tmp_path):
    directory = _broken(base, tmp_path, "config not JSON")
    proc = run_cli("eval", "--base-model", "--model", str(directory), "--limit", "1",
                   "--output", str(tmp_path / "results.json"))
    assert proc.returncode == 2 and one_error_line(proc) == _expected("config not JSON", directory)


@pytest.fixture()
def adapter_on_broken_base(base, tmp_path):
    """A saved adapter (dylora_config.json + weights) whose base directory is broken after the adapter was saved."""
    from dylora_moe.model.adapter_io import save_adapter

    directory = tmp_path / "base-of-checkpoint"
    shutil.copytree(base, directory)
    model, _ = build_model(str(directory), DyLoRAConfig(num_experts=2, lora_r=4), log=lambda m: None)
    save_adapter(model, tmp_path / "checkpoint")
    BREAKS["unknown model_type"][0](directory)
    return tmp_path / "checkpoint", directory


@pytest.mark.slow
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_a_checkpoint_whose_base_is_broken_is_one_line(adapter_on_broken_base, tmp_path, command):
    checkpoint, directory = adapter_on_broken_base
    extra = ["--prompt", "x"] if command == "generate" else ["--limit", "1", "--output", str(tmp_path / "r.json")]
    proc = run_cli(command, "--model", str(checkpoint), *extra)
    assert proc.returncode == 2
    assert one_error_line(proc) == (f"error: base model of checkpoint {checkpoint}: "
                                    + BREAKS["unknown model_type"][1].format(d=directory))


@pytest.mark.slow
def test_a_checkpoint_whose_base_is_gone_is_one_line(adapter_on_broken_base):
    checkpoint, directory = adapter_on_broken_base
    shutil.rmtree(directory)
    proc = run_cli("generate", "--model", str(checkpoint), "--prompt", "x")  # the tests run with HF_HUB_OFFLINE=1
    assert proc.returncode == 2 and one_error_line(proc) == (
        f"error: base model of checkpoint {checkpoint}: '{directory}' is not a local directory and the Hugging Face "
        "hub is offline (HF_HUB_OFFLINE=1); put the base model back at that path (the checkpoint's "
        "dylora_config.json records it)")
