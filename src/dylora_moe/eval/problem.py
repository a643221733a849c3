"""One benchmark problem, whatever the benchmark: what to prompt with and what to test against."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """`prompt` goes to the model; `reference` is the benchmark's own solution (what the tests must accept)."""

    benchmark: str
    task_id: str
    prompt: str
    reference: str
    test: str
    entry_point: str = ""
    test_setup: str = ""
    stop: tuple[str, ...] = field(default_factory=tuple)
