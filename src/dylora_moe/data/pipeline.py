"""`build_datasets`: names -> rows -> examples -> seeded split, subsets and mix -> token ids, with statistics.

Order matters for determinism: each source is mapped and capped first, the eval split is taken from the
shuffled pool next, then the subsets; only then is text tokenized, once, through one function for both
splits (so eval text is formatted exactly like training text).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import datasets

from dylora_moe.data.config import DataConfig
from dylora_moe.data.encoding import encode_batch, uses_chat_template
from dylora_moe.data.fingerprint import digest_rows, fingerprint, tokenizer_identity
from dylora_moe.data.loading import LoadedSource, load_source
from dylora_moe.data.prompting import PROMPT_TEMPLATE_VERSION, format_prompt
from dylora_moe.data.registry import parse_datasets
from dylora_moe.data.splitting import cap, interleave, parse_weights, random_subset, rng_for, shuffled_split
from dylora_moe.errors import UserError

log = logging.getLogger(__name__)

FEATURES = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int64")),
                              "labels": datasets.Sequence(datasets.Value("int64"))})

Example = tuple[str, str, str, str]  # (source name, instruction, input, response)


@dataclass
class PreparedData:
    """Tokenized train/eval sets plus what identifies them."""

    train: datasets.Dataset
    eval: datasets.Dataset
    fingerprint: str
    stats: dict = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    train_sources: list[str] = field(default_factory=list)  # the source name of each training row, in order


def build_datasets(cfg: DataConfig, tokenizer) -> PreparedData:
    """Load, map, split, subset, mix and tokenize the datasets named in `cfg.datasets`."""
    cfg.check()
    specs = parse_datasets(cfg.datasets)
    names = [s.name for s in specs]
    loaded = [load_source(s) for s in specs]
    stats: dict = {"sources": {}, "mixing": cfg.mixing}
    per_source: dict[str, list[Example]] = {}
    for src in loaded:
        examples, dropped, considered = _examples(src)
        _check_dropped(cfg, src.spec.name, dropped, considered)
        skipped = sum(dropped.values())
        capped = cap(examples, cfg.max_examples_per_dataset, rng_for(cfg.seed, "cap", src.spec.name))
        if not capped:
            raise UserError(f"dataset '{src.spec.name}' has no usable rows (of {len(src.rows)}); "
                            "check that the file holds instruction/response pairs")
        per_source[src.spec.name] = capped
        stats["sources"][src.spec.name] = {"rows": len(src.rows), "examples": len(examples),
                                           "skipped_empty": skipped, "dropped": dropped, "used": len(capped)}

    train_ex, eval_ex = _split_and_mix(cfg, names, per_source)
    train_ex = random_subset(train_ex, cfg.training_subset, rng_for(cfg.seed, "training_subset"))
    eval_ex = random_subset(eval_ex, cfg.eval_subset, rng_for(cfg.seed, "eval_subset"))
    for name in names:
        stats["sources"][name]["train"] = sum(1 for e in train_ex if e[0] == name)
        stats["sources"][name]["eval"] = sum(1 for e in eval_ex if e[0] == name)

    chat = uses_chat_template(tokenizer, cfg.use_chat_template)
    if cfg.use_chat_template and not chat:
        log.warning("--use_chat_template: the tokenizer has no chat template; using the built-in prompt template")
    stats["template"] = "chat" if chat else "prompt"
    train_ds, stats["train"], train_sha, train_sources = _encode(cfg, tokenizer, train_ex, chat)
    eval_ds, stats["eval"], eval_sha, _ = _encode(cfg, tokenizer, eval_ex, chat)
    if len(train_ds) == 0:
        why = "truncation" if cfg.drop_truncated else "dropping prompts that do not fit"
        raise UserError(f"no training examples left after {why} at --max_seq_length {cfg.max_seq_length}; "
                        "raise --max_seq_length" + (" or drop --drop_truncated" if cfg.drop_truncated else ""))
    for split in ("train", "eval"):
        s = stats[split]
        log.info("data %s: %d examples, %d truncated at %d tokens, %d dropped (%d truncated, %d prompt too long)",
                 split, s["kept"], s["truncated"], cfg.max_seq_length, s["dropped_truncated"] + s["dropped_prompt_too_long"],
                 s["dropped_truncated"], s["dropped_prompt_too_long"])

    inputs = {
        "config": _fingerprinted(cfg, names),  # paths live in the sources' identities
        "sources": [{"name": src.spec.name, **src.identity, "rows": len(src.rows)} for src in loaded],
        "template": _template_identity(tokenizer, chat),
        "tokenizer": tokenizer_identity(tokenizer),
        "train": {"size": len(train_ds), "sha256": train_sha},
        "eval": {"size": len(eval_ds), "sha256": eval_sha},
    }
    stats["fingerprint_inputs"] = inputs
    return PreparedData(train=train_ds, eval=eval_ds, fingerprint=fingerprint(inputs), stats=stats, sources=names,
                        train_sources=train_sources)


def _fingerprinted(cfg: DataConfig, names: list[str]) -> dict:
    """The options that decide the prepared rows (a refusal threshold does not change them)."""
    values = {**cfg.to_dict(), "datasets": names}
    values.pop("max_dropped_fraction", None)
    return values


def _examples(src: LoadedSource) -> tuple[list[Example], dict[str, int], int]:
    """Map rows with the source's format; returns the examples, the unusable rows counted by reason, and how
    many rows were considered (rows the format excludes on purpose, e.g. MBPP's test tasks, are not)."""
    out: list[Example] = []
    dropped = {"empty instruction": 0, "empty response": 0}
    considered = 0
    for row in src.rows:
        mapped = src.row_format.to_example(row)
        if mapped is None:
            continue  # deliberately excluded (e.g. MBPP tasks outside the train split)
        considered += 1
        instruction, inp, response = mapped
        if not instruction.strip() or not response.strip():
            dropped["empty instruction" if not instruction.strip() else "empty response"] += 1
            continue
        out.append((src.spec.name, instruction, inp, response))
    return out, {k: v for k, v in dropped.items() if v}, considered


def _check_dropped(cfg: DataConfig, name: str, dropped: dict[str, int], considered: int) -> None:
    count = sum(dropped.values())
    if considered and count / considered > cfg.max_dropped_fraction:
        raise UserError(
            f"dataset '{name}': {count} of {considered} rows are unusable ({_reasons(dropped)}), more than "
            f"--max_dropped_fraction {cfg.max_dropped_fraction:g}; check the file's columns, or pass "
            f"--max_dropped_fraction 1 to train on the {considered - count} usable row(s)"
        )


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in dropped.items())


def dropped_rows_lines(stats: dict) -> list[str]:
    """One line per source that lost rows: how many, of how many, and why (for the run's log)."""
    lines = []
    for name, s in stats.get("sources", {}).items():
        if s.get("dropped"):
            lines.append(f"{name}: {sum(s['dropped'].values())} of {s['rows']} rows dropped as unusable "
                         f"({_reasons(s['dropped'])})")
    return lines


def _split_and_mix(cfg: DataConfig, names: list[str], per_source: dict[str, list[Example]]):
    """Each dataset is split on its own, by a random stream seeded with its name: a dataset keeps the same held-out
    rows whatever the mixing and whichever other datasets are listed (adding a dataset to a resumed run never
    moves earlier eval rows into training). Then concat pools the training parts, interleave mixes them."""
    train_parts: dict[str, list[Example]] = {}
    eval_pool: list[Example] = []
    for name in names:
        train_parts[name], held = shuffled_split(per_source[name], cfg.eval_fraction, rng_for(cfg.seed, "split", name))
        eval_pool.extend(held)
    rng_for(cfg.seed, "eval_order").shuffle(eval_pool)
    if cfg.mixing == "concat":
        pool = [e for name in names for e in train_parts[name]]
        rng_for(cfg.seed, "concat_order").shuffle(pool)
        return pool, eval_pool
    return interleave(train_parts, parse_weights(cfg.mix_weights, names), rng_for(cfg.seed, "interleave")), eval_pool


def _encode(cfg: DataConfig, tokenizer, examples: list[Example], chat: bool) -> tuple[datasets.Dataset, dict, str, list[str]]:
    """Tokenize one split; returns the dataset, its statistics, the hash of its ids and labels and each kept
    row's source name."""
    encoded = encode_batch(tokenizer, [(ins, inp, resp) for _, ins, inp, resp in examples],
                           max_seq_length=cfg.max_seq_length, train_on_prompt=cfg.train_on_prompt, chat=chat)
    ids, labels, sources = [], [], []
    s = {"examples": len(examples), "kept": 0, "truncated": 0, "dropped_truncated": 0, "dropped_prompt_too_long": 0}
    for example, enc in zip(examples, encoded):
        if enc is None:
            s["dropped_prompt_too_long"] += 1
            continue
        if enc.truncated:
            s["truncated"] += 1
            if cfg.drop_truncated:
                s["dropped_truncated"] += 1
                continue
        ids.append(enc.input_ids)
        labels.append(enc.labels)
        sources.append(example[0])
    s["kept"] = len(ids)
    s["tokens"] = sum(len(x) for x in ids)
    s["label_tokens"] = sum(sum(1 for t in lab if t != -100) for lab in labels)
    dataset = datasets.Dataset.from_dict({"input_ids": ids, "labels": labels}, features=FEATURES)
    return dataset, s, digest_rows(ids, labels), sources


def _template_identity(tokenizer, chat: bool) -> dict:
    if chat:
        return {"kind": "chat", "chat_template": tokenizer.chat_template}
    return {"kind": "prompt", "version": PROMPT_TEMPLATE_VERSION, "text": format_prompt("{instruction}", "{input}")}
