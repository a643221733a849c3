"""Wall time to execute all 164 canonical HumanEval programs in the sandbox, against a bare baseline.

Baseline, in the same process: 164 `python -c pass` subprocesses, two at a time — the floor for "one fresh
interpreter per program". Both sandbox layers run: the Python guard alone (the fallback) and the namespace
sandbox (bubblewrap + seccomp); the last lines give programs/second and the ratios, namespaces / guard last.

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
    seconds, all_passed = {}, True
    for layer in ("python-guard", "namespaces"):
        config = SandboxConfig(timeout_s=20.0, isolation=layer)
        execute_programs(programs[:2], config, workers=args.workers)  # the one-off probe is not per program
        started = time.perf_counter()
        results = execute_programs(programs, config, workers=args.workers)
        seconds[layer] = time.perf_counter() - started
        passed = sum(r.passed for r in results)
        all_passed &= passed == len(programs)
        print(f"sandbox ({layer}): {len(programs)} canonical HumanEval programs, {passed} passed, "
              f"{seconds[layer]:.2f} s, {len(programs) / seconds[layer]:.1f} programs/s ({args.workers} workers)")
    baseline_s = bare_baseline(len(programs), args.workers)
    print(f"baseline: {len(programs)} bare `python -c pass` subprocesses, {args.workers} at a time, {baseline_s:.2f} s")
    for layer, value in seconds.items():
        print(f"ratio sandbox ({layer}) / baseline: {value / baseline_s:.2f}")
    print(f"ratio namespaces / python-guard: {seconds['namespaces'] / seconds['python-guard']:.2f}")
    return 0 if all_passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
