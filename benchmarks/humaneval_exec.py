"""Wall time to execute all 164 canonical HumanEval programs in the sandbox, against a bare baseline.

Baseline, in the same process: 164 `python -c pass` subprocesses, two at a time — the floor for "one fresh
interpreter per program". Last line: the ratio sandbox / baseline.

    .venv/bin/python benchmarks/humaneval_exec.py [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from dylora_moe.eval import humaneval
from dylora_moe.eval.execution import execute_programs
from dylora_moe.eval.sandbox import SandboxConfig


def bare_baseline(count: int, workers: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda _: subprocess.run([sys.executable, "-c", "pass"], check=True), range(count)))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    problems = humaneval.load()
    programs = [humaneval.build_program(p, p.reference) for p in problems]
    started = time.perf_counter()
    results = execute_programs(programs, SandboxConfig(timeout_s=20.0), workers=args.workers)
    sandbox_s = time.perf_counter() - started
    passed = sum(r.passed for r in results)
    baseline_s = bare_baseline(len(programs), args.workers)
    print(f"sandbox: {len(programs)} canonical HumanEval programs, {passed} passed, {sandbox_s:.2f} s "
          f"({args.workers} workers)")
    print(f"baseline: {len(programs)} bare `python -c pass` subprocesses, {args.workers} at a time, {baseline_s:.2f} s")
    print(f"ratio sandbox/baseline: {sandbox_s / baseline_s:.2f}")
    return 0 if passed == len(programs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
