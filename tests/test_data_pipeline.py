"""build_datasets on the real shared files: split/subset determinism, mixing, statistics, fingerprints."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers_tokenizer import make_test_tokenizer

from dylora_moe.data.config import DataConfig
from dylora_moe.data.mbpp import mbpp_instruction, mbpp_split
from dylora_moe.data.pipeline import build_datasets
from dylora_moe.data.prompting import format_prompt
from dylora_moe.errors import UserError


@pytest.fixture(scope="module")
def tok():
    return make_test_tokenizer()


@pytest.fixture(scope="module")
def files(shared_data):
    return {"mbpp": shared_data / "mbpp.jsonl", "code_alpaca": shared_data / "code_alpaca_2k.json"}


def _cfg(files, **kw) -> DataConfig:
    base = dict(datasets=f"code_alpaca={files['code_alpaca']},mbpp={files['mbpp']}", max_seq_length=256,
                max_examples_per_dataset=300)
    return DataConfig(**{**base, **kw})


def _rows(ds) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(tuple(r["input_ids"]), tuple(r["labels"])) for r in ds]


def test_columns_labels_and_stats(tok, files):
    data = build_datasets(_cfg(files), tok)
    assert data.sources == ["code_alpaca", "mbpp"]
    assert data.train.column_names == ["input_ids", "labels"] and data.eval.column_names == ["input_ids", "labels"]
    s = data.stats
    assert s["sources"]["code_alpaca"]["rows"] == 2017 and s["sources"]["code_alpaca"]["used"] == 300
    assert s["sources"]["mbpp"]["rows"] == 974 and s["sources"]["mbpp"]["examples"] == 374
    assert s["sources"]["mbpp"]["used"] == 300
    assert s["sources"]["code_alpaca"]["train"] + s["sources"]["code_alpaca"]["eval"] == 300
    assert s["sources"]["code_alpaca"]["eval"] + s["sources"]["mbpp"]["eval"] == 30  # 5% of 600
    for split, ds in (("train", data.train), ("eval", data.eval)):
        st = s[split]
        assert st["kept"] == len(ds) == st["examples"] - st["dropped_truncated"] - st["dropped_prompt_too_long"]
        for row in ds:
            ids, labels = row["input_ids"], row["labels"]
            assert len(ids) == len(labels) <= 256 and labels[0] == -100
            assert tok.pad_token_id not in labels
        n_full = sum(1 for r in ds if len(r["input_ids"]) < 256)
        assert sum(1 for r in ds if r["labels"][-1] == tok.eos_token_id) >= n_full
    assert s["train"]["truncated"] > 0  # 256 tokens of the tiny tokenizer cut some examples


def test_eval_goes_through_the_training_path(tok, files):
    data = build_datasets(_cfg(files, datasets=f"mbpp={files['mbpp']}"), tok)
    text = tok.decode(data.eval[0]["input_ids"])
    assert text.startswith("### Instruction:\n") and "\n\n### Response:\n" in text
    assert "Your code should pass these tests:\nassert " in text


def test_mbpp_benchmark_tasks_are_never_trained_on(tok, files):
    data = build_datasets(_cfg(files, datasets=f"mbpp={files['mbpp']}", max_examples_per_dataset=None,
                               max_seq_length=4096, eval_fraction=0.0), tok)
    rows = [json.loads(line) for line in files["mbpp"].read_text().splitlines()]
    prompt_of = {tuple(tok(format_prompt(*mbpp_instruction(r)))["input_ids"]): r["task_id"] for r in rows}
    seen = set()
    for ids in data.train["input_ids"]:
        for n in range(len(ids)):
            if tuple(ids[:n]) in prompt_of:
                seen.add(prompt_of[tuple(ids[:n])])
                break
    assert len(seen) == len(data.train) == 374
    assert {mbpp_split(t) for t in seen} == {"train"} and len(data.eval) == 0


def test_split_is_shuffled_and_deterministic(tok, files):
    a = build_datasets(_cfg(files), tok)
    b = build_datasets(_cfg(files), tok)
    assert _rows(a.train) == _rows(b.train) and _rows(a.eval) == _rows(b.eval) and a.fingerprint == b.fingerprint
    # both sources reach the eval split (upstream's unshuffled tail was always the last dataset)
    assert a.stats["sources"]["code_alpaca"]["eval"] > 0 and a.stats["sources"]["mbpp"]["eval"] > 0
    c = build_datasets(_cfg(files, seed=7), tok)
    assert _rows(c.eval) != _rows(a.eval) and c.fingerprint != a.fingerprint


def test_subsets_are_seeded_random_and_independent(tok, files):
    full = build_datasets(_cfg(files), tok)
    sub = build_datasets(_cfg(files, training_subset=10.0, eval_subset=50.0), tok)
    again = build_datasets(_cfg(files, training_subset=10.0, eval_subset=50.0), tok)
    assert _rows(sub.train) == _rows(again.train) and _rows(sub.eval) == _rows(again.eval)
    full_train, full_eval = _rows(full.train), _rows(full.eval)
    assert sub.stats["train"]["examples"] == round(full.stats["train"]["examples"] * 0.10)
    assert sub.stats["eval"]["examples"] == 15
    assert set(_rows(sub.train)) <= set(full_train) and set(_rows(sub.eval)) <= set(full_eval)
    assert _rows(sub.train) != full_train[: len(sub.train)]  # not the head
    # the eval split does not move when only the training subset changes
    only_train = build_datasets(_cfg(files, training_subset=10.0), tok)
    assert _rows(only_train.eval) == full_eval


def test_interleave_uses_exact_proportions(tok, files):
    cfg = _cfg(files, mixing="interleave", mix_weights="code_alpaca=0.75,mbpp=0.25", max_seq_length=1024)
    data = build_datasets(cfg, tok)
    s = data.stats["sources"]
    assert (s["code_alpaca"]["train"], s["mbpp"]["train"]) == (285, 95)  # 285 = all alpaca train rows
    assert (s["code_alpaca"]["eval"], s["mbpp"]["eval"]) == (15, 15)
    assert _rows(build_datasets(cfg, tok).train) == _rows(data.train)


@pytest.mark.parametrize("kw,message", [
    (dict(mixing="interleave", mix_weights="code_alpaca=1"),
     "--mix_weights must give one weight per dataset (code_alpaca, mbpp); unknown: -; missing: mbpp"),
    (dict(mix_weights="mbpp=1"), "--mix_weights only applies with --mixing interleave; add --mixing interleave or drop it"),
    (dict(training_subset=0), "--training_subset must be a percentage in (0, 100], got 0; e.g. --training_subset 10 "
                              "keeps a random 10%"),
    (dict(eval_fraction=1.0), "--eval_fraction must be in [0, 1), got 1.0; e.g. 0.05 holds out 5% for eval"),
])
def test_config_errors(tok, files, kw, message):
    with pytest.raises(UserError) as err:
        build_datasets(_cfg(files, **kw), tok)
    assert str(err.value) == message


def test_drop_truncated(tok, files):
    keep = build_datasets(_cfg(files, max_seq_length=128), tok)
    drop = build_datasets(_cfg(files, max_seq_length=128, drop_truncated=True), tok)
    t = keep.stats["train"]["truncated"]
    assert t > 0 and drop.stats["train"]["dropped_truncated"] == t
    assert len(drop.train) == len(keep.train) - t
    assert all(r["labels"][-1] == tok.eos_token_id for r in drop.train)


def test_fingerprint_changes_when_any_input_changes(tok, files, tmp_path):
    small = dict(max_examples_per_dataset=60)
    base = build_datasets(_cfg(files, **small), tok).fingerprint
    variants = {
        "seed": dict(seed=1), "max_seq_length": dict(max_seq_length=200), "training_subset": dict(training_subset=50.0),
        "eval_subset": dict(eval_subset=50.0), "eval_fraction": dict(eval_fraction=0.1),
        "train_on_prompt": dict(train_on_prompt=True), "drop_truncated": dict(drop_truncated=True),
        "mixing": dict(mixing="interleave"), "cap": dict(max_examples_per_dataset=61),
        "names": dict(datasets=f"alpaca={files['code_alpaca']},mbpp={files['mbpp']}"),
        "order": dict(datasets=f"mbpp={files['mbpp']},code_alpaca={files['code_alpaca']}"),
        "sources": dict(datasets=f"code_alpaca={files['code_alpaca']}"),
    }
    prints = {k: build_datasets(_cfg(files, **{**small, **v}), tok).fingerprint for k, v in variants.items()}
    assert base not in prints.values() and len(set(prints.values())) == len(prints)
    # file content (one row changed), not location, identifies a file
    rows = json.loads(files["code_alpaca"].read_text())
    moved = tmp_path / "moved" / "code_alpaca_2k.json"
    moved.parent.mkdir()
    moved.write_bytes(files["code_alpaca"].read_bytes())
    assert build_datasets(_cfg(files, **small, datasets=f"code_alpaca={moved},mbpp={files['mbpp']}"), tok).fingerprint == base
    rows[-1]["output"] += " "
    moved.write_text(json.dumps(rows))
    assert build_datasets(_cfg(files, **small, datasets=f"code_alpaca={moved},mbpp={files['mbpp']}"), tok).fingerprint != base
    # template and tokenizer
    chat_tok = make_test_tokenizer()
    chat_tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert build_datasets(_cfg(files, **small, use_chat_template=True), chat_tok).fingerprint != base
    assert build_datasets(_cfg(files, **small), make_test_tokenizer(vocab_size=400)).fingerprint != base


def test_fingerprint_is_stable_across_fresh_tokenizers(tok, files):
    a = build_datasets(_cfg(files, max_examples_per_dataset=40), tok)
    b = build_datasets(_cfg(files, max_examples_per_dataset=40), make_test_tokenizer())
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert set(a.stats["fingerprint_inputs"]) == {"config", "sources", "template", "tokenizer", "train", "eval"}


def test_dataconfig_defaults():
    assert dataclasses.asdict(DataConfig()) == {
        "datasets": "stdlib", "max_seq_length": 256, "training_subset": 100.0, "eval_subset": 100.0,
        "eval_fraction": 0.05, "seed": 42, "train_on_prompt": False, "use_chat_template": False,
        "drop_truncated": False, "mixing": "concat", "mix_weights": None, "max_examples_per_dataset": None,
        "max_dropped_fraction": 0.5}


def test_a_datasets_held_out_rows_do_not_depend_on_mixing_or_other_datasets(tok, files):
    """Each dataset is split by its own seeded stream: the same eval rows with concat or interleave, and when
    another dataset is added (a resumed run with a new dataset never trains on earlier eval rows)."""
    alone = build_datasets(_cfg(files, datasets=f"mbpp={files['mbpp']}"), tok)
    concat = build_datasets(_cfg(files), tok)
    interleaved = build_datasets(_cfg(files, mixing="interleave"), tok)
    mbpp_eval = set(_rows(alone.eval))
    assert len(mbpp_eval) == 15
    assert mbpp_eval <= set(_rows(concat.eval)) and mbpp_eval <= set(_rows(interleaved.eval))
    assert set(_rows(concat.eval)) == set(_rows(interleaved.eval))
    assert not mbpp_eval & set(_rows(concat.train))
