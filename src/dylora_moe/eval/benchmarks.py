"""The benchmark registry: name -> module with load/prompt/postprocess/build_program."""

from __future__ import annotations

from types import ModuleType

from dylora_moe.errors import UserError

NAMES = ("humaneval", "mbpp")
PLUS_NAMES = ("humaneval+", "mbpp+")


def get_benchmark(name: str) -> ModuleType:
    """The module implementing benchmark `name`; a UserError naming the choices otherwise."""
    key = name.strip().lower()
    if key == "humaneval":
        from dylora_moe.eval import humaneval

        return humaneval
    if key == "mbpp":
        from dylora_moe.eval import mbpp

        return mbpp
    if key in PLUS_NAMES:
        raise UserError(
            f"benchmark {name!r} (EvalPlus) is not supported in this build: its data is downloaded by `evalplus` "
            "at run time and its tests compare outputs against the reference rather than run asserts; "
            f"use one of {', '.join(NAMES)}"
        )
    raise UserError(f"unknown benchmark {name!r}; expected a comma-separated list of {', '.join(NAMES)}")


def parse_benchmarks(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """'humaneval,mbpp' -> ['humaneval', 'mbpp'], validated, duplicates dropped, order kept."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        if not item.strip():
            continue
        get_benchmark(item)
        if item.strip().lower() not in names:
            names.append(item.strip().lower())
    if not names:
        raise UserError(f"no benchmark given; expected a comma-separated list of {', '.join(NAMES)}")
    return names
