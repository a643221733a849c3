"""Code benchmarks (HumanEval, MBPP) with pass@k and sandboxed execution.

Entry points: `runner.evaluate(model, tokenizer, ...)`, `runner.score_completions(...)`,
`execution.execute_programs(...)`, `sandbox.run_program(...)`, `passk.pass_at_k(n, c, k)` and, for training,
`callback.BenchmarkEvalCallback`. Nothing is imported here so `dylora-moe --help` stays fast.
"""
