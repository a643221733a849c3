"""Library API: generate completions, execute them in the sandbox, score pass@k, write the JSON.

`evaluate(model, tokenizer, ...)` is what the CLI and the trainer call; `score_completions(...)` does the
execution and scoring alone, so given completions (or reference solutions) can be checked without a model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dylora_moe.errors import UserError
from dylora_moe.eval.benchmarks import get_benchmark, parse_benchmarks
from dylora_moe.eval.execution import execute_programs
from dylora_moe.eval.generation import (GenerationConfig, encode_prompts, generate_completions, learned_positions,
                                        position_overflow)
from dylora_moe.eval.passk import pass_at_k, pass_at_ks
from dylora_moe.eval.problem import Problem
from dylora_moe.eval.sandbox import ExecutionResult, SandboxConfig, isolation_for
from dylora_moe.files import atomic_write_text

Progress = Callable[[str, int, int], None]  # (stage, done, total)
NOT_RUN = "not run"  # the status of a problem whose prompt the model cannot take: scored as failed, never executed


def parse_ks(k: int | str | Sequence[int], n: int) -> list[int]:
    """'1,10' -> [1, 10]; every k must satisfy 1 <= k <= n (pass@k needs at least k samples)."""
    if isinstance(k, int):
        ks = [k]
    elif isinstance(k, str):
        try:
            ks = [int(x) for x in k.split(",") if x.strip()]
        except ValueError as exc:
            raise UserError(f"--k {k!r} is not a comma-separated list of integers; expected e.g. --k 1,10") from exc
    else:
        ks = [int(x) for x in k]
    ks = sorted(set(ks))
    bad = [x for x in ks if not 1 <= x <= n]
    if not ks or bad:
        raise UserError(f"pass@k needs 1 <= k <= n, got k={','.join(map(str, ks)) or '(none)'} with n={n}; "
                        f"raise --n (with --temperature > 0) or lower --k")
    return ks


def score_completions(
    benchmark: str,
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    ks: Sequence[int],
    sandbox: SandboxConfig | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    not_run: Mapping[int, str] | None = None,
) -> dict:
    """Execute every (problem, completion) program and summarise: pass@k overall and per problem.
    `not_run` (problem index -> why): problems scored as failed without executing anything."""
    module = get_benchmark(benchmark)
    if len(completions) != len(problems):
        raise ValueError(f"{len(completions)} completion lists for {len(problems)} problems")
    not_run = not_run or {}
    programs = [module.build_program(p, c) for i, (p, cs) in enumerate(zip(problems, completions)) if i not in not_run
                for c in cs]
    isolation = isolation_for(sandbox or SandboxConfig())  # probes once; warns once when it falls back
    started = time.perf_counter()
    outcomes = iter(execute_programs(
        programs, sandbox, workers, (lambda d, t: progress(f"{benchmark}: execute", d, t)) if progress else None))
    per_problem, counts = [], []
    for i, (problem, cs) in enumerate(zip(problems, completions)):
        results = [ExecutionResult(NOT_RUN, not_run[i]) if i in not_run else next(outcomes) for _ in cs]
        correct = sum(r.passed for r in results)
        counts.append((len(cs), correct))
        per_problem.append({
            "task_id": problem.task_id,
            "num_samples": len(cs),
            "num_correct": correct,
            "pass@k": {f"pass@{k}": pass_at_k(len(cs), correct, k) for k in ks},
            "completions": list(cs),
            "results": [r.to_dict() for r in results],
        })
    n = min((c[0] for c in counts), default=0)
    return {
        "num_problems": len(problems),
        "n": n,
        "pass@k": pass_at_ks(counts, ks),
        "execution_seconds": round(time.perf_counter() - started, 3),
        "sandbox": isolation.to_dict(),
        "not_run": [problems[i].task_id for i in sorted(not_run)],
        "problems": per_problem,
    }


def evaluate(
    model,
    tokenizer,
    benchmarks: str | Sequence[str] = ("humaneval",),
    n: int = 1,
    k: int | str | Sequence[int] = 1,
    limit: int | None = None,
    temperature: float = 0.0,
    top_p: float = 0.95,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    seed: int | None = 0,
    mbpp_path: str | os.PathLike | None = None,
    sandbox: SandboxConfig | None = None,
    workers: int | None = None,
    output: str | os.PathLike | None = None,
    log_wandb: bool = True,
    metadata: dict | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Generate, execute and score; returns (and with `output`, writes) the results dict.

    A problem whose prompt + `max_new_tokens` does not fit a model with learned positions (GPT-2) would crash the
    whole evaluation; it is not generated, scored as failed (status "not run"), listed in "not_run", and `log`
    gets one line per benchmark saying which and what would fit.

    Shape: {"config": {...}, "benchmarks": {name: {"num_problems", "n", "pass@k": {"pass@1": ...},
    "execution_seconds", "generation_seconds", "problems": [...per-problem results...]}}}.
    """
    names = parse_benchmarks(benchmarks)
    ks = parse_ks(k, n)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}; omit it to run every problem")
    generation = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
                                  batch_size=batch_size, seed=seed)
    isolation_for(sandbox or SandboxConfig())  # a sandbox that cannot run fails here, not after generation
    results: dict = {
        "config": {"benchmarks": names, "n": n, "k": ks, "limit": limit, "temperature": temperature,
                   "top_p": top_p, "max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed,
                   **(metadata or {})},
        "benchmarks": {},
    }
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for name in names:
            module = get_benchmark(name)
            problems = module.load(limit=limit, path=mbpp_path if name == "mbpp" else None)
            prompts = [module.prompt(p) for p in problems]
            not_run = _not_generable(name, problems, encode_prompts(tokenizer, prompts), max_new_tokens,
                                     learned_positions(model), log)
            started = time.perf_counter()
            kept = [i for i in range(len(problems)) if i not in not_run]
            generated = generate_completions(
                model, tokenizer, [prompts[i] for i in kept], generation, stop=problems[0].stop if problems else (),
                progress=(lambda d, t, name=name: progress(f"{name}: generate", d, t)) if progress else None,
            )
            raw = [[""] * n for _ in problems]
            for i, cs in zip(kept, generated):
                raw[i] = cs
            generation_seconds = round(time.perf_counter() - started, 3)
            completions = [[module.postprocess(p, c) for c in cs] for p, cs in zip(problems, raw)]
            results["benchmarks"][name] = _unexecuted(problems, completions, generation_seconds)
            if output is not None:  # an error or interrupt while the programs run must not lose the completions
                write_results(results, output)
            scored = score_completions(name, problems, completions, ks, sandbox, workers, progress, not_run)
            scored["generation_seconds"] = generation_seconds
            results["benchmarks"][name] = scored
            results["sandbox"] = scored["sandbox"]
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    if output is not None:
        write_results(results, output)
    if log_wandb:
        from dylora_moe.eval.wandb_hook import log_to_wandb

        log_to_wandb(results)
    return results


def _unexecuted(problems: Sequence[Problem], completions: Sequence[Sequence[str]], generation_seconds: float) -> dict:
    """A benchmark's entry between generation and execution (`score_completions` can finish it later)."""
    return {"status": "generated; not executed (the run stopped before execution finished)",
            "num_problems": len(problems), "generation_seconds": generation_seconds,
            "problems": [{"task_id": p.task_id, "completions": list(cs)} for p, cs in zip(problems, completions)]}


def _not_generable(benchmark: str, problems: Sequence[Problem], prompt_ids: Sequence[Sequence[int]],
                   max_new_tokens: int, limit: tuple[int, str] | None, log: Callable[[str], None]) -> dict[int, str]:
    """Problem index -> why it cannot be generated (prompt + max_new_tokens past the model's learned positions);
    logs one line naming them and the --max_new_tokens that would fit them all."""
    reasons = {i: f"not generated: {overflow}" for i, ids in enumerate(prompt_ids)
               if (overflow := position_overflow(len(ids), max_new_tokens, limit))}
    if reasons:
        positions, field = limit
        named = ", ".join(f"{problems[i].task_id}: {len(prompt_ids[i])}-token prompt" for i in list(reasons)[:3])
        more = f" and {len(reasons) - 3} more" if len(reasons) > 3 else ""
        fixable = [len(prompt_ids[i]) for i in reasons if len(prompt_ids[i]) < positions]
        fixes = [f"--max_new_tokens {positions - max(fixable)} or less fits "
                 + ("them all" if len(fixable) == len(reasons) else f"{len(fixable)} of them")] if fixable else []
        if len(fixable) < len(reasons):
            hopeless = len(reasons) - len(fixable)
            fixes.append(f"{hopeless} of them {'is' if hopeless == 1 else 'are'} too long for this model at any "
                         "--max_new_tokens")
        log(f"{benchmark}: {len(reasons)} of {len(problems)} problems not generated, scored as failed ({named}{more}); "
            f"with --max_new_tokens {max_new_tokens} they need more than this model's {positions} learned positions "
            f"({field}); {'; '.join(fixes)}")
    return reasons


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write the results JSON atomically (a partial file never replaces a good one)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(target, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
