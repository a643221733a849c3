"""How the embedded tiny base was made: a small Llama-architecture code model trained offline.

A byte-level BPE tokenizer is trained with `tokenizers` and the model is pretrained briefly on the Python
standard library of the running interpreter. The build is seeded, but its bits depend on the machine (CPU
kernels, thread count, the interpreter's stdlib), so it is run once and its output is shipped with the
package (`tiny_shipped.py`); this script reproduces that artifact's recipe:

    python -m dylora_moe.model.tiny --out DIR [--seed N]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import torch

TINY_VERSION = "2"
VOCAB_SIZE = 4096
SEQ_LEN = 256
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<unk>"]
BUILD_REPORT = "tiny_build.json"


def stdlib_source_files() -> list[Path]:
    """Sorted .py files of the running interpreter's standard library (tests and site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip"}
    files = [
        p for p in sorted(root.rglob("*.py")) if not (set(p.relative_to(root).parts[:-1]) & skip)
    ]
    return files


def _read_corpus(max_bytes: int) -> list[str]:
    texts, total = [], 0
    for path in stdlib_source_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    return texts


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _model_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _blocks(tokenizer, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // SEQ_LEN
    return torch.tensor(ids[: n * SEQ_LEN]).view(n, SEQ_LEN)


@torch.no_grad()
def _mean_loss(model, blocks: torch.Tensor) -> float:
    model.eval()
    losses = [model(input_ids=blocks[i : i + 8], labels=blocks[i : i + 8]).loss.item() for i in range(0, len(blocks), 8)]
    return float(sum(losses) / len(losses))


def build_tiny_base(target: Path, steps: int = 240, corpus_bytes: int = 6_000_000, seed: int = 0,
                    log=print) -> dict:
    """Train tokenizer and model, write an HF model directory to `target`; returns the build report."""
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    started = time.time()
    torch.manual_seed(seed)
    random.seed(seed)
    texts = _read_corpus(corpus_bytes)
    log(f"[tiny] training a {VOCAB_SIZE}-token BPE tokenizer on {sum(map(len, texts)) / 1e6:.1f} MB of stdlib source")
    tokenizer = _train_tokenizer(texts)
    blocks = _blocks(tokenizer, texts)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    held_out, train = blocks[order[:64]], blocks[order[64:]]
    model = LlamaForCausalLM(_model_config(tokenizer))
    untrained_loss = _mean_loss(model, held_out)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = 20
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    model.train()
    batch_size = 8
    progress = tqdm(range(steps), desc="[tiny] pretraining on stdlib", unit="step")
    for step in progress:
        index = torch.randint(0, len(train), (batch_size,))
        batch = train[index]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 10 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
    report = {
        "version": TINY_VERSION,
        "seed": seed,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens_seen": steps * batch_size * SEQ_LEN,
        "held_out_loss_untrained": round(untrained_loss, 4),
        "held_out_loss_trained_float32": round(_mean_loss(model, held_out), 4),
    }
    report = write_artifact(model, tokenizer, held_out, report, target)
    report["build_seconds"] = round(time.time() - started, 1)
    log(
        f"[tiny] built {report['parameters'] / 1e6:.1f}M-parameter base in {report['build_seconds']} s: held-out loss "
        f"{report['held_out_loss_untrained']} (untrained) -> {report['held_out_loss_trained']} ({target})"
    )
    return report


def write_artifact(model, tokenizer, held_out: torch.Tensor, report: dict, target: Path) -> dict:
    """Round the weights to bfloat16 (half the size; the base is frozen in use), measure the held-out loss of
    exactly what is saved, and write model, tokenizer and `tiny_build.json` with every file's sha256."""
    model = model.to(torch.bfloat16).to(torch.float32)
    report = {**report, "dtype": "bfloat16", "held_out_loss_trained": round(_mean_loss(model, held_out), 4)}
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    report["sha256"] = {p.name: sha256_of(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / BUILD_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return report


def held_out_blocks(tokenizer, seed: int = 0, corpus_bytes: int = 6_000_000) -> torch.Tensor:
    """The 64 blocks a build with `seed` holds out (for re-measuring a saved base)."""
    blocks = _blocks(tokenizer, _read_corpus(corpus_bytes))
    return blocks[torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))[:64]]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the tiny base into a directory")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--corpus_bytes", type=int, default=6_000_000)
    args = parser.parse_args()
    build_tiny_base(Path(args.out), steps=args.steps, corpus_bytes=args.corpus_bytes, seed=args.seed)
