"""HumanEval and MBPP: the references pass every problem, empty answers pass none, programs run the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dylora_moe.data.prompting import format_prompt
from dylora_moe.errors import UserError
from dylora_moe.eval import humaneval, mbpp
from dylora_moe.eval.benchmarks import get_benchmark, parse_benchmarks
from dylora_moe.eval.problem import Problem
from dylora_moe.eval.runner import score_completions
from dylora_moe.eval.sandbox import SandboxConfig

SANDBOX = SandboxConfig(timeout_s=20.0)


@pytest.fixture(scope="module")
def humaneval_problems():
    return humaneval.load()


def test_humaneval_loads_all_164_offline(humaneval_problems) -> None:
    assert len(humaneval_problems) == 164
    first = humaneval_problems[0]
    assert first.task_id == "HumanEval/0"
    assert first.entry_point == "has_close_elements"
    assert first.prompt.startswith("from typing import List\n\n\ndef has_close_elements(")
    assert humaneval.prompt(first) == first.prompt  # completion-style: the raw signature + docstring
    assert [p.task_id for p in humaneval.load(limit=3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_humaneval_program_calls_check(humaneval_problems) -> None:
    program = humaneval.build_program(humaneval_problems[0], "    return True\n")
    assert program.endswith("\n\ncheck(has_close_elements)\n")
    assert program.startswith(humaneval_problems[0].prompt + "    return True\n")


def test_humaneval_canonical_solutions_all_pass(humaneval_problems) -> None:
    completions = [[p.reference] for p in humaneval_problems]
    scored = score_completions("humaneval", humaneval_problems, completions, [1], SANDBOX, workers=2)
    failures = [(p["task_id"], p["results"]) for p in scored["problems"] if p["num_correct"] != 1]
    assert failures == []
    assert scored["pass@k"] == {"pass@1": 1.0}
    assert scored["num_problems"] == 164


def test_humaneval_pass_completions_all_fail(humaneval_problems) -> None:
    # the bug this harness exists to avoid: tests defined but never called make `pass` look correct
    completions = [["    pass\n"] for _ in humaneval_problems]
    scored = score_completions("humaneval", humaneval_problems, completions, [1], SANDBOX, workers=2)
    assert scored["pass@k"] == {"pass@1": 0.0}
    assert all(p["results"][0]["status"] == "failed" for p in scored["problems"])


def test_humaneval_postprocess_cuts_at_stop() -> None:
    problem = humaneval.load(limit=1)[0]
    text = "    return False\n\n\ndef helper():\n    pass\n"
    assert humaneval.postprocess(problem, text) == "    return False\n\n"
    assert humaneval.postprocess(problem, "    return 1\nif __name__ == '__main__':\n    x") == "    return 1"


def test_mbpp_loads_the_test_split(shared_data: Path) -> None:
    problems = mbpp.load(path=shared_data / "mbpp.jsonl")
    assert len(problems) == 500
    assert problems[0].task_id == "mbpp/11" and problems[-1].task_id == "mbpp/510"
    assert problems[0].prompt == format_prompt(
        "Write a python function to remove first and last occurrence of a given character from the string.",
        'Your code should pass these tests:\nassert remove_Occ("hello","l") == "heo"\n'
        'assert remove_Occ("abcda","a") == "bcd"\nassert remove_Occ("PHP","P") == "H"',
    )
    assert problems[0].prompt.endswith("### Response:\n")
    assert "\r" not in problems[0].reference
    assert [p.task_id for p in mbpp.load(limit=2, path=shared_data / "mbpp.jsonl")] == ["mbpp/11", "mbpp/12"]


@pytest.mark.slow
def test_mbpp_reference_code_passes_the_test_split(shared_data: Path) -> None:
    problems = mbpp.load(path=shared_data / "mbpp.jsonl")
    scored = score_completions("mbpp", problems, [[p.reference] for p in problems], [1], SANDBOX, workers=2)
    failures = [(p["task_id"], p["results"]) for p in scored["problems"] if p["num_correct"] != 1]
    assert failures == []
    assert scored["pass@k"] == {"pass@1": 1.0}


def test_mbpp_program_runs_setup_then_every_assert(shared_data: Path) -> None:
    problem = mbpp.load(limit=1, path=shared_data / "mbpp.jsonl")[0]
    program = mbpp.build_program(problem, "def remove_Occ(s, ch):\n    return s")
    assert program.count("assert remove_Occ(") == 3
    wrong = score_completions("mbpp", [problem], [["def remove_Occ(s, ch):\n    return s"]], [1], SANDBOX)
    assert wrong["problems"][0]["results"] == [{"status": "failed", "reason": "AssertionError"}]


@pytest.mark.parametrize(
    ("response", "code"),
    [
        ("def f():\n    return 1\n", "def f():\n    return 1"),
        ("Here you go:\n```python\ndef f():\n    return 1\n```\nExplanation...", "def f():\n    return 1"),
        ("```\ndef f():\n    return 1", "def f():\n    return 1"),
        ("def f():\n    return 1\n\n### Instruction:\nmore", "def f():\n    return 1"),
    ],
)
def test_mbpp_postprocess_extracts_code(response: str, code: str) -> None:
    problem = Problem(benchmark="mbpp", task_id="mbpp/0", prompt="", reference="", test="", stop=mbpp.STOP)
    assert mbpp.postprocess(problem, response) == code


def test_mbpp_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^MBPP file .*nope\.jsonl does not exist; expected a JSONL/JSON file"):
        mbpp.load(path=tmp_path / "nope.jsonl")


def test_mbpp_offline_hub_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"pass --mbpp_path FILE with the MBPP JSONL instead$"):
        mbpp.load()


def test_benchmark_names() -> None:
    assert parse_benchmarks("humaneval, MBPP,humaneval") == ["humaneval", "mbpp"]
    assert get_benchmark("mbpp") is mbpp
    with pytest.raises(UserError, match=r"^unknown benchmark 'apps'; expected a comma-separated list of humaneval, mbpp$"):
        parse_benchmarks("humaneval,apps")
    with pytest.raises(UserError, match=r"^benchmark 'humaneval\+' \(EvalPlus\) is not supported in this build"):
        parse_benchmarks("humaneval+")
