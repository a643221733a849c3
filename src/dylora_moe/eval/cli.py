"""`dylora-moe eval --model PATH|URI --benchmarks humaneval,mbpp`: a thin layer over `runner.evaluate`."""

from __future__ import annotations

import argparse

from dylora_moe.flags import add_dataclass_flags
from dylora_moe.library_output import add_verbose_flag
from dylora_moe.processes import log_stderr


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from dylora_moe.config_file import add_config_flag
    from dylora_moe.eval.options import EvalOptions

    parser = subparsers.add_parser(
        "eval",
        help="HumanEval / MBPP pass@k with sandboxed execution",
        description="Generate completions with a checkpoint (directory or store URI) or a bare base model, run "
        "each against the benchmark's own tests in a sandboxed process, and report pass@k.",
    )
    add_config_flag(parser)
    add_dataclass_flags(parser, EvalOptions)
    add_verbose_flag(parser)
    parser.set_defaults(func=_run)


def _progress(stage: str, done: int, total: int) -> None:
    if done == total or done % 50 == 0:
        log_stderr(f"{stage}: {done}/{total}")


def _run(args: argparse.Namespace) -> int:
    from dylora_moe.errors import UserError
    from dylora_moe.eval.benchmarks import parse_benchmarks
    from dylora_moe.eval.generation import GenerationConfig
    from dylora_moe.eval.runner import evaluate, parse_ks
    from dylora_moe.eval.sandbox import SandboxConfig
    from dylora_moe.eval.table import format_table
    from dylora_moe.model.quantization import quantization_from_args

    # validate everything cheap before loading a model
    benchmarks = parse_benchmarks(args.benchmarks)
    parse_ks(args.k, args.n)
    GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                     n=args.n, batch_size=args.batch_size)
    sandbox = SandboxConfig(timeout_s=args.timeout, memory_mb=args.memory_mb)
    if args.memory_mb < 64 or (args.workers is not None and args.workers < 1):
        raise UserError(f"expected --memory_mb >= 64 and --workers >= 1, got {args.memory_mb}, {args.workers}")
    quantization = quantization_from_args(args)
    from dylora_moe.writable import check_writable_file

    check_writable_file(args.output, "--output")  # before the evaluation whose results it would lose
    try:
        from dylora_moe.model.loading import load_model_for_inference
    except ImportError as exc:
        raise UserError("model loading (dylora_moe.model.loading) is not available in this installation; "
                        "expected a dylora-moe build with the model package; reinstall dylora-moe") from exc

    model, tokenizer = load_model_for_inference(args.model, base_only=args.base_model, device=args.device,
                                                dtype=args.dtype, quantization=quantization,
                                                attn_implementation=args.attn_implementation)
    results = evaluate(
        model, tokenizer, benchmarks, n=args.n, k=args.k, limit=args.limit, temperature=args.temperature,
        top_p=args.top_p, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
        mbpp_path=args.mbpp_path, sandbox=sandbox,
        workers=args.workers, output=args.output, progress=_progress, log=log_stderr,
        metadata={"model": args.model, "base_model": bool(args.base_model)},
    )
    print(format_table(results))
    print(f"results: {args.output}")
    return 0
