"""evaluate() end to end with a micro Llama, the results JSON, the table, the W&B hook and the CLI."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers_tokenizer import make_test_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from dylora_moe.cli import main
from dylora_moe.errors import UserError
from dylora_moe.eval.runner import evaluate, parse_ks
from dylora_moe.eval.table import format_table
from dylora_moe.eval.wandb_hook import log_to_wandb
from micro import save_micro_base


@pytest.fixture(scope="module")
def pair():
    tokenizer = make_test_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def test_evaluate_writes_per_problem_results(pair, shared_data: Path, tmp_path: Path) -> None:
    model, tokenizer = pair
    model.train()
    out = tmp_path / "res" / "results.json"
    results = evaluate(model, tokenizer, "humaneval,mbpp", limit=2, max_new_tokens=6, batch_size=2,
                       mbpp_path=shared_data / "mbpp.jsonl", output=out, log_wandb=False)
    assert model.training  # the caller's mode is restored
    assert json.loads(out.read_text()) == results
    assert list(results["benchmarks"]) == ["humaneval", "mbpp"]
    assert results["config"]["k"] == [1] and results["config"]["limit"] == 2
    he = results["benchmarks"]["humaneval"]
    assert he["num_problems"] == 2 and he["n"] == 1
    assert he["pass@k"] == {"pass@1": 0.0}  # a random micro model solves nothing
    assert [p["task_id"] for p in he["problems"]] == ["HumanEval/0", "HumanEval/1"]
    first = he["problems"][0]
    assert set(first) == {"task_id", "num_samples", "num_correct", "pass@k", "completions", "results"}
    assert len(first["completions"]) == 1 and first["results"][0]["status"] in {"failed", "timed out"}
    assert [p["task_id"] for p in results["benchmarks"]["mbpp"]["problems"]] == ["mbpp/11", "mbpp/12"]


def test_parse_ks() -> None:
    assert parse_ks("10,1,1", 10) == [1, 10]
    assert parse_ks(1, 1) == [1]
    with pytest.raises(UserError, match=r"^pass@k needs 1 <= k <= n, got k=1,5 with n=2; raise --n"):
        parse_ks("1,5", 2)
    with pytest.raises(UserError, match=r"^--k 'a' is not a comma-separated list of integers"):
        parse_ks("a", 1)


RESULTS = {
    "config": {},
    "benchmarks": {
        "humaneval": {"num_problems": 164, "n": 10, "pass@k": {"pass@1": 0.1234, "pass@10": 0.5}},
        "mbpp": {"num_problems": 500, "n": 10, "pass@k": {"pass@1": 0.25, "pass@10": 1.0}},
    },
}


def test_table() -> None:
    assert format_table(RESULTS).splitlines() == [
        "benchmark  problems   n  pass@1  pass@10",
        "---------  --------  --  ------  -------",
        "humaneval       164  10  12.34%   50.00%",
        "mbpp            500  10  25.00%  100.00%",
    ]


def test_wandb_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[dict] = []
    summary: dict = {}
    fake = types.ModuleType("wandb")
    fake.run = None
    fake.Table = lambda columns, data: ("table", tuple(columns), tuple(map(tuple, data)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert log_to_wandb(RESULTS) is False  # no active run: nothing happens
    fake.run = types.SimpleNamespace(log=logged.append, summary=summary)
    assert log_to_wandb(RESULTS) is True
    assert logged[0]["eval/humaneval/pass@10"] == 0.5 and logged[0]["eval/mbpp/pass@1"] == 0.25
    assert logged[0]["eval/pass_at_k"][2][0] == ("humaneval", "pass@1", 0.1234, 164, 10)
    assert summary == {"eval/humaneval/pass@1": 0.1234, "eval/humaneval/pass@10": 0.5,
                       "eval/mbpp/pass@1": 0.25, "eval/mbpp/pass@10": 1.0}


def test_cli_eval(pair, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    calls: list = []

    def load_model_for_inference(source, base_only=False, device=None, dtype=None, quantization=None,
                                 attn_implementation=None):
        calls.append((source, base_only, device, dtype))
        return pair

    fake = types.ModuleType("dylora_moe.model.loading")
    fake.load_model_for_inference = load_model_for_inference
    monkeypatch.setitem(sys.modules, "dylora_moe.model.loading", fake)
    out = tmp_path / "r.json"
    code = main(["eval", "--model", "gpt2-tiny", "--base-model", "--benchmarks", "humaneval", "--limit", "1",
                 "--max_new_tokens", "4", "--output", str(out)])
    assert code == 0
    assert calls == [("gpt2-tiny", True, None, None)]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "benchmark  problems  n  pass@1",
        "---------  --------  -  ------",
        "humaneval         1  1   0.00%",
        f"results: {out}",
    ]
    saved = json.loads(out.read_text())
    assert saved["config"]["model"] == "gpt2-tiny" and saved["config"]["base_model"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--benchmarks", "apps"], "error: unknown benchmark 'apps'; expected a comma-separated list of humaneval, mbpp"),
        (["--k", "1,10"], "error: pass@k needs 1 <= k <= n, got k=1,10 with n=1; raise --n (with --temperature > 0) "
                          "or lower --k"),
        (["--n", "5"], "error: --n 5 with greedy decoding (--temperature 0) gives 5 identical samples; set "
                       "--temperature > 0 (e.g. 0.8) for pass@k with k > 1, or use --n 1"),
    ],
)
def test_cli_user_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--model", "x", *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [message]


def test_training_callback_uses_the_model_in_memory(pair, tmp_path: Path) -> None:
    from dylora_moe.eval.callback import BenchmarkEvalCallback

    model, tokenizer = pair
    lines: list[str] = []
    callback = BenchmarkEvalCallback(tokenizer, "humaneval", tmp_path, when="epoch", log=lines.append,
                                     limit=1, max_new_tokens=4, log_wandb=False)
    state = types.SimpleNamespace(is_world_process_zero=True, global_step=7, epoch=1.0)
    callback.on_train_end(None, state, None, model=model)  # when="epoch": the end of training does nothing
    assert not (tmp_path / "eval_results_final.json").exists()
    callback.on_epoch_end(None, state, None, model=model)
    saved = json.loads((tmp_path / "eval_results_epoch1.json").read_text())
    assert saved["config"]["global_step"] == 7 and saved == callback.results
    assert lines[0].startswith("benchmarks at epoch1 (step 7):\nbenchmark  problems  n  pass@1\n")
    with pytest.raises(UserError, match=r"^eval timing 'always' is not known; expected 'end' or 'epoch'$"):
        BenchmarkEvalCallback(tokenizer, "humaneval", tmp_path, when="always")


@pytest.mark.parametrize("timeout", ["inf", "nan", "1e300", "0", "-1"])
def test_cli_timeout_out_of_range_fails_before_any_work(timeout: str, shared_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    # the tiny base would load and generate first, then crash on the timeout and lose the completions
    out = tmp_path / "r.json"
    code = main(["eval", "--model", "tiny", "--base-model", "--benchmarks", "mbpp", "--mbpp_path",
                 str(shared_data / "mbpp.jsonl"), "--limit", "1", "--timeout", timeout, "--output", str(out)])
    assert code == 2
    shown = repr(float(timeout))
    assert capsys.readouterr().err.splitlines() == [
        f"error: --timeout {shown} is out of range; expected seconds per program with 0 < --timeout <= 3600"]
    assert not out.exists()


def test_cli_n_is_bounded_before_any_work(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # a billion samples per problem would grow the request list until the OOM killer ends the run
    out = tmp_path / "r.json"
    code = main(["eval", "--model", "tiny", "--base-model", "--benchmarks", "mbpp", "--mbpp_path",
                 str(shared_data / "mbpp.jsonl"), "--limit", "1", "--n", "1000000000", "--temperature", "0.8",
                 "--output", str(out)])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --n 1000000000 is too large; expected 1 <= --n <= 1000 samples per problem"]
    assert not out.exists()


def test_completions_are_saved_before_execution(pair, shared_data: Path, tmp_path: Path) -> None:
    # an interrupt (or any error) while the programs run must not lose the generated completions
    model, tokenizer = pair
    kwargs = dict(limit=2, max_new_tokens=6, batch_size=2, mbpp_path=shared_data / "mbpp.jsonl", log_wandb=False)
    full = evaluate(model, tokenizer, "mbpp", **kwargs)

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage.endswith("execute"):
            raise KeyboardInterrupt

    out = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, tokenizer, "mbpp", output=out, progress=interrupt, **kwargs)
    saved = json.loads(out.read_text())["benchmarks"]["mbpp"]
    assert saved["status"] == "generated; not executed (the run stopped before execution finished)"
    assert [(p["task_id"], p["completions"]) for p in saved["problems"]] == [
        (p["task_id"], p["completions"]) for p in full["benchmarks"]["mbpp"]["problems"]]


def test_a_prompt_past_learned_positions_is_not_run_and_the_eval_goes_on(tmp_path: Path, capsys) -> None:
    """Test-tokenizer prompts: HumanEval/0 228 tokens, /1 341, /2 207. With 256 learned positions and 40 new tokens,
    /0 and /1 cannot be generated (either would crash the whole eval), /2 is; /0 would fit with 28 new tokens."""
    base = save_micro_base(tmp_path / "gpt2", kind="gpt2", positions=256)
    out = tmp_path / "r.json"
    assert main(["eval", "--model", base, "--base-model", "--benchmarks", "humaneval", "--limit", "3",
                 "--max_new_tokens", "40", "--output", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "HumanEval/1" in line]
    assert err == ["humaneval: 2 of 3 problems not generated, scored as failed (HumanEval/0: 228-token prompt, "
                   "HumanEval/1: 341-token prompt); with --max_new_tokens 40 they need more than this model's 256 "
                   "learned positions (n_positions); --max_new_tokens 28 or less fits 1 of them; 1 of them is too "
                   "long for this model at any --max_new_tokens"]
    humaneval = json.loads(out.read_text())["benchmarks"]["humaneval"]
    assert humaneval["not_run"] == ["HumanEval/0", "HumanEval/1"]
    assert [p["results"][0]["status"] for p in humaneval["problems"][:2]] == ["not run", "not run"]
    assert humaneval["problems"][1]["results"][0]["reason"] == (
        "not generated: the prompt is 341 tokens and --max_new_tokens 40 makes 381 positions, but this model has 256 "
        "(n_positions in its config) and cannot go past them (its position embeddings are learned)")
    assert humaneval["problems"][2]["results"][0]["status"] in {"failed", "timed out"}  # generated and run
    assert humaneval["num_problems"] == 3 and humaneval["pass@k"] == {"pass@1": 0.0}
