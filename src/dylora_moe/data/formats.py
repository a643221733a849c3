"""Field mappings: each hub format's row -> (instruction, input, response).

Why separate from the registry: a local file bound to a new name (`mine=rows.jsonl`) is mapped by detecting
which of these formats its columns match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dylora_moe.data.mbpp import mbpp_instruction, mbpp_response, mbpp_split, TRAIN_SPLIT

Example = tuple[str, str, str]  # (instruction, input, response)


@dataclass(frozen=True)
class RowFormat:
    """A row layout: the columns it needs and how it maps to an example (None: skip the row)."""

    name: str
    required: tuple[str, ...]
    to_example: Callable[[dict], Example | None]


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _alpaca(row: dict) -> Example | None:
    return _text(row.get("instruction")), _text(row.get("input")), _text(row.get("output"))


def _query_answer(row: dict) -> Example | None:
    return _text(row.get("query")), "", _text(row.get("answer"))


def _sharegpt(row: dict) -> Example | None:
    """First human turn -> instruction, the assistant turn right after it -> response (system turns skipped)."""
    turns = row.get("conversations") or []
    for i, turn in enumerate(turns[:-1]):
        nxt = turns[i + 1]
        if _role(turn) == "user" and _role(nxt) == "assistant":
            return _text(turn.get("value") or turn.get("content")), "", _text(nxt.get("value") or nxt.get("content"))
    return None


def _role(turn: dict) -> str:
    who = str(turn.get("from") or turn.get("role") or "").lower()
    return {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}.get(who, who)


def _mbpp(row: dict) -> Example | None:
    """Only the official train tasks (601-974): the benchmark's test tasks are never trained on."""
    if mbpp_split(row["task_id"]) != TRAIN_SPLIT:
        return None
    instruction, inp = mbpp_instruction(row)
    return instruction, inp, mbpp_response(row)


def _stdlib(row: dict) -> Example | None:
    return _text(row.get("instruction")), _text(row.get("input")), _text(row.get("output"))


ALPACA = RowFormat("alpaca", ("instruction", "output"), _alpaca)
QUERY_ANSWER = RowFormat("query_answer", ("query", "answer"), _query_answer)
SHAREGPT = RowFormat("sharegpt", ("conversations",), _sharegpt)
MBPP = RowFormat("mbpp", ("text", "code", "task_id", "test_list"), _mbpp)
STDLIB = RowFormat("stdlib", ("instruction", "output"), _stdlib)

# detection order for files bound to names outside the registry: most specific first
DETECTABLE: tuple[RowFormat, ...] = (MBPP, SHAREGPT, QUERY_ANSWER, ALPACA)


def detect_format(columns: set[str]) -> RowFormat | None:
    """The first format whose required columns are all present."""
    for fmt in DETECTABLE:
        if set(fmt.required) <= columns:
            return fmt
    return None
