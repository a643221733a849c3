"""Benchmarks on real trained checkpoints: the CLI loads a checkpoint and generates with the trained routing."""

from __future__ import annotations

import json

import pytest
import torch

from dylora_moe.cli import main
from dylora_moe.model.loading import load_model_for_inference
from micro import save_micro_base
from train_helpers import micro_config, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    base = save_micro_base(root / "base")
    result = run(micro_config(base, root / "out", max_steps=2, mature_after_steps=1,
                              eval_benchmarks="mbpp", eval_benchmarks_limit=2, eval_max_new_tokens=8,
                              eval_mbpp_path=str(__import__("conftest").SHARED_DATA / "mbpp.jsonl")))
    return root, result


def test_training_runs_benchmarks_on_the_trained_weights(trained):
    root, result = trained
    results = json.loads((root / "out" / "eval_results_final.json").read_text())
    assert results["config"]["global_step"] == 2
    mbpp = results["benchmarks"]["mbpp"]
    assert len(mbpp["problems"]) == 2 and "pass@1" in mbpp["pass@k"]


def test_loaded_checkpoint_generates_like_the_trained_model(trained):
    root, result = trained
    model, tokenizer = load_model_for_inference(result.last_checkpoint)
    assert model.is_sparse and model.maturity.tolist() == [True] * 4
    ids = torch.tensor([tokenizer("def add(a, b):")["input_ids"]])
    first = model.generate(input_ids=ids, max_new_tokens=10, do_sample=False, use_cache=True)
    second = model.generate(input_ids=ids, max_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(first, second)


def test_eval_cli_on_a_checkpoint_writes_json(trained, tmp_path, capsys):
    root, result = trained
    out = tmp_path / "res.json"
    code = main(["eval", "--model", result.last_checkpoint, "--benchmarks", "humaneval", "--limit", "2",
                 "--max_new_tokens", "8", "--output", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert len(data["benchmarks"]["humaneval"]["problems"]) == 2
    assert "humaneval" in capsys.readouterr().out
