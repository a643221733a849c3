"""`dylora-moe generate --model CKPT|URI`: complete one prompt with a trained checkpoint, streamed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dylora_moe.flags import add_dataclass_flags
from dylora_moe.library_output import add_verbose_flag
from dylora_moe.processes import log_stderr


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from dylora_moe.config_file import add_config_flag
    from dylora_moe.eval.options import GenerateOptions

    parser = subparsers.add_parser(
        "generate",
        help="complete one prompt with a checkpoint (streamed; tokens/s on stderr)",
        description="Generate from a checkpoint (directory or store URI) or, with --base-model, a bare base. The "
        "prompt (--prompt, --prompt-file or stdin) is wrapped in the training prompt template unless --raw.",
    )
    add_config_flag(parser)
    add_dataclass_flags(parser, GenerateOptions)
    add_verbose_flag(parser)
    parser.set_defaults(func=_run)


def read_prompt(args: argparse.Namespace) -> str:
    from dylora_moe.errors import UserError

    if args.prompt is not None:
        text = args.prompt
    elif args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read --prompt-file {args.prompt_file}: {exc.strerror}; "
                            "expected a readable text file") from None
    elif not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        raise UserError("no prompt: pass --prompt TEXT, --prompt-file FILE, or pipe the prompt on stdin")
    if not text.strip():
        raise UserError("the prompt is empty; expected some text in --prompt, --prompt-file or stdin")
    return text


def _checkpoint_uses_chat_template(directory: Path) -> bool:
    """Whether the run that wrote this checkpoint prompted with the tokenizer's chat template."""
    from dylora_moe.checkpoint.manifest import RUN_CONFIG_NAME

    path = directory / RUN_CONFIG_NAME
    if not path.is_file():
        return False
    return bool(json.loads(path.read_text()).get("data", {}).get("use_chat_template", False))


def _run(args: argparse.Namespace) -> int:
    from dylora_moe.eval.generation import GenerationConfig
    from dylora_moe.eval.single_prompt import complete, prompt_ids
    from dylora_moe.model.attention import check_attn_implementation
    from dylora_moe.model.loading import is_adapter_dir, load_model_for_inference
    from dylora_moe.model.quantization import quantization_from_args

    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed)
    check_attn_implementation(args.attn_implementation)
    text = read_prompt(args)
    source = args.model
    chat = False
    if not args.base_model:
        directory = Path(source)
        if not is_adapter_dir(directory):
            from dylora_moe.checkpoint.resolve import fetch_checkpoint

            directory = fetch_checkpoint(source, log=log_stderr)
        source, chat = str(directory), _checkpoint_uses_chat_template(directory)
    model, tokenizer = load_model_for_inference(source, base_only=args.base_model, device=args.device,
                                                dtype=args.dtype, log=log_stderr,
                                                quantization=quantization_from_args(args),
                                                attn_implementation=args.attn_implementation)
    chat = chat and bool(getattr(tokenizer, "chat_template", None))
    ids = prompt_ids(tokenizer, text, raw=args.raw, chat=chat)

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = complete(model, tokenizer, ids, config, on_text=None if args.json else stream)
    if args.json:
        print(json.dumps({"prompt": text, "completion": result.text, "new_tokens": result.new_tokens,
                          "seconds": round(result.seconds, 4), "tokens_per_second": round(result.tokens_per_second, 2),
                          "stopped_at_eos": result.stopped_at_eos}))
    else:
        print()
        end = "stopped at EOS" if result.stopped_at_eos else f"reached --max_new_tokens {args.max_new_tokens}"
        log_stderr(f"[generate] {result.new_tokens} tokens in {result.seconds:.2f} s "
             f"({result.tokens_per_second:.1f} tokens/s), {end}")
    return 0
