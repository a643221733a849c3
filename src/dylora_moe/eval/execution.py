"""Execute many programs in parallel, each in its own sandboxed process.

Threads only wait on child processes (no GIL contention), so `workers` threads keep `workers` programs
running. A crash or an infinite loop in one program ends as that program's "failed"/"timed out" result; it
never blocks the pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from dylora_moe.eval.sandbox import ExecutionResult, SandboxConfig, run_program


def default_workers() -> int:
    """One program per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def execute_programs(
    programs: Sequence[str],
    config: SandboxConfig | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ExecutionResult]:
    """Results in the order of `programs`; `progress(done, total)` is called as programs finish."""
    config = config or SandboxConfig()
    results: list[ExecutionResult | None] = [None] * len(programs)
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        futures = {pool.submit(run_program, program, config): i for i, program in enumerate(programs)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(done, len(programs))
    return [r for r in results if r is not None]
