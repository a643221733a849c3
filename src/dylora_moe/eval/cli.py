"""`dylora-moe eval --model PATH|URI --benchmarks humaneval,mbpp`: a thin layer over `runner.evaluate`."""

from __future__ import annotations

import argparse

from dylora_moe.library_output import add_verbose_flag
from dylora_moe.processes import log_stderr


def add_model_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """--model and --base-model, shared by the commands that run a trained checkpoint."""
    parser.add_argument("--model", required=True, metavar="PATH|URI",
                        help="checkpoint directory or store URI (wandb://, gs://, s3://); with --base-model, a "
                        "base model name or directory")
    parser.add_argument("--base-model", "--base_model", dest="base_model", action="store_true",
                        help=f"{verb} with the bare base model (no experts), for comparison")


def add_attn_argument(parser: argparse.ArgumentParser) -> None:
    from dylora_moe.model.attention import ATTN_IMPLEMENTATIONS, DEFAULT_ATTN_IMPLEMENTATION

    parser.add_argument("--attn_implementation", "--attn-implementation", dest="attn_implementation",
                        default=DEFAULT_ATTN_IMPLEMENTATION, metavar="NAME",
                        help=f"attention kernel: {', '.join(ATTN_IMPLEMENTATIONS)} (default "
                        f"{DEFAULT_ATTN_IMPLEMENTATION})")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="HumanEval / MBPP pass@k with sandboxed execution",
        description="Generate completions with a checkpoint (directory or store URI) or a bare base model, run "
        "each against the benchmark's own tests in a sandboxed process, and report pass@k.",
    )
    add_model_arguments(parser, "evaluate")
    parser.add_argument("--benchmarks", default="humaneval", help="comma-separated: humaneval,mbpp")
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    parser.add_argument("--n", type=int, default=1, help="samples per problem (n > 1 needs --temperature > 0)")
    parser.add_argument("--k", default="1", help="comma-separated k values for pass@k, each <= n (default 1)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="eval_results.json", metavar="FILE",
                        help="JSON with per-problem completions and results (default eval_results.json)")
    parser.add_argument("--mbpp_path", default=None, metavar="FILE",
                        help="MBPP JSONL (e.g. mbpp.jsonl) instead of the Hugging Face hub")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per program (default 10)")
    parser.add_argument("--memory_mb", type=int, default=1024, help="address-space cap per program (MiB)")
    parser.add_argument("--workers", type=int, default=None, help="programs run in parallel (default: CPUs)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: best available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the loader's)")
    from dylora_moe.model.quantization import add_quantization_flags

    add_quantization_flags(parser)
    add_attn_argument(parser)
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
    if args.timeout <= 0 or args.memory_mb < 64 or (args.workers is not None and args.workers < 1):
        raise UserError(f"expected --timeout > 0, --memory_mb >= 64 and --workers >= 1, got {args.timeout}, "
                        f"{args.memory_mb}, {args.workers}")
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
        mbpp_path=args.mbpp_path, sandbox=SandboxConfig(timeout_s=args.timeout, memory_mb=args.memory_mb),
        workers=args.workers, output=args.output, progress=_progress,
        metadata={"model": args.model, "base_model": bool(args.base_model)},
    )
    print(format_table(results))
    print(f"results: {args.output}")
    return 0
