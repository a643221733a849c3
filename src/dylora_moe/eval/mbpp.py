"""MBPP test split (task ids 11-510): the problem text and its tests, prompted as in training.

The prompt is `format_prompt(*mbpp_instruction(row))` from `dylora_moe.data`, the exact template the model
was trained on. The program is the extracted code, then `test_setup_code`, then every assert of `test_list`.
"""

from __future__ import annotations

import json
from pathlib import Path

from dylora_moe.errors import UserError
from dylora_moe.eval.problem import Problem

NAME = "mbpp"
TEST_TASK_IDS = range(11, 511)
HUB_DATASET = "google-research-datasets/mbpp"
STOP = ("\n### ",)  # the next section header of the training template


def _rows_from_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"MBPP file {path} does not exist; expected a JSONL/JSON file of MBPP rows "
                        "(task_id, text, code, test_list, test_setup_code); pass an existing --mbpp_path")
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"MBPP file {path} is not valid JSON/JSONL ({exc}); expected one MBPP row per line") from exc


def _rows_from_hub() -> list[dict]:
    try:
        from datasets import load_dataset

        return list(load_dataset(HUB_DATASET, "full", split="test"))
    except Exception as exc:  # offline, no cache, hub error: all mean the same to the user
        raise UserError(
            f"MBPP could not be loaded from the Hugging Face hub ({HUB_DATASET}: {type(exc).__name__}); "
            "expected network access or a cached copy; pass --mbpp_path FILE with the MBPP JSONL instead"
        ) from exc


def _clean(text: str) -> str:
    return (text or "").replace("\r\n", "\n")


def load(limit: int | None = None, path: str | Path | None = None) -> list[Problem]:
    """Test-split problems in task-id order, from `path` (JSONL/JSON) or else the hub."""
    from dylora_moe.data.mbpp import mbpp_instruction
    from dylora_moe.data.prompting import format_prompt

    rows = _rows_from_file(Path(path)) if path else _rows_from_hub()
    rows = sorted((r for r in rows if int(r["task_id"]) in TEST_TASK_IDS), key=lambda r: int(r["task_id"]))
    if not rows:
        raise UserError(f"no MBPP test-split tasks (ids 11-510) in {path or HUB_DATASET}; "
                        "expected the full MBPP file with 974 tasks")
    problems = [
        Problem(
            benchmark=NAME, task_id=f"mbpp/{int(r['task_id'])}", prompt=format_prompt(*mbpp_instruction(r)),
            reference=_clean(r["code"]), test="\n".join(_clean(t) for t in r["test_list"]),
            test_setup=_clean(r.get("test_setup_code", "")), stop=STOP,
        )
        for r in rows
    ]
    return problems[:limit] if limit is not None else problems


def prompt(problem: Problem) -> str:
    return problem.prompt


def extract_code(text: str) -> str:
    """The code of a response: the first fenced block if there is one (closed or not), else the text."""
    if "```" not in text:
        return text.strip("\n")
    after = text.split("```", 1)[1]
    first_line, _, body = after.partition("\n")
    if first_line.strip() and not first_line.strip().isidentifier():  # "```def f(): ..." on one line
        body = after
    return body.split("```", 1)[0].strip("\n")


def postprocess(problem: Problem, completion: str) -> str:
    from dylora_moe.eval.generation import truncate_at_stop

    return extract_code(truncate_at_stop(completion, problem.stop))


def build_program(problem: Problem, completion: str) -> str:
    """The code, then the task's setup code, then every assert of its test list."""
    return f"{completion}\n\n{problem.test_setup}\n\n{problem.test}\n"
