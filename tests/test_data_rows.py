"""Odd data files: unusable rows are counted and a mostly unusable source refused; rows that are not objects,
a JSON object instead of a list, a bad line, a directory — each one line that names what is wrong and where."""

from __future__ import annotations

import json

import pytest
from helpers_tokenizer import make_test_tokenizer

from dylora_moe.data.config import DataConfig
from dylora_moe.data.loading import load_source
from dylora_moe.data.pipeline import build_datasets
from dylora_moe.data.registry import parse_datasets
from dylora_moe.errors import UserError
from train_helpers import cli_args, one_error_line, run_cli

GOOD = {"instruction": "Add two numbers.", "input": "", "output": "def add(a, b):\n    return a + b"}


@pytest.fixture(scope="module")
def tok():
    return make_test_tokenizer()


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _load(text: str):
    return load_source(parse_datasets(text)[0])


def _error(text: str) -> str:
    with pytest.raises(UserError) as err:
        _load(text)
    return str(err.value)


def test_dropped_rows_are_counted_per_source_and_reason(tok, tmp_path):
    from dylora_moe.data.pipeline import dropped_rows_lines

    rows = [GOOD] * 90 + [{"instruction": "Say hi.", "output": None}] * 6 + [{"instruction": "", "output": "x"}] * 4
    data = build_datasets(DataConfig(datasets=f"mine={_jsonl(tmp_path / 'r.jsonl', rows)}", eval_fraction=0.1), tok)
    assert data.stats["sources"]["mine"]["dropped"] == {"empty instruction": 4, "empty response": 6}
    assert dropped_rows_lines(data.stats) == ["mine: 10 of 100 rows dropped as unusable (4 empty instruction, "
                                              "6 empty response)"]


@pytest.mark.slow
def test_a_source_that_loses_most_rows_is_refused_by_the_cli(base, tmp_path):
    rows = [GOOD] + [{"instruction": "Say hi.", "input": ""}] * 99  # 99 rows without `output`
    data = _jsonl(tmp_path / "rows.jsonl", rows)
    proc = run_cli(*cli_args(base, tmp_path / "out", "--datasets", f"mine={data}"))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        "error: dataset 'mine': 99 of 100 rows are unusable (99 empty response), more than --max_dropped_fraction "
        "0.5; check the file's columns, or pass --max_dropped_fraction 1 to train on the 1 usable row(s)")


def test_told_otherwise_the_usable_rows_train(tok, tmp_path):
    rows = [GOOD] * 3 + [{"instruction": "Say hi.", "output": None}] * 7
    cfg = DataConfig(datasets=f"mine={_jsonl(tmp_path / 'r.jsonl', rows)}", eval_fraction=0.0, max_dropped_fraction=1)
    assert len(build_datasets(cfg, tok).train) == 3


@pytest.mark.parametrize("values, kind", [([1, 2, 3], "a number"), ([[1, 2], [3]], "a list")])
def test_jsonl_rows_that_are_not_objects(tmp_path, values, kind):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in values))
    assert _error(f"mine={path}") == (
        f"dataset 'mine': line 1 of rows.jsonl is {kind}, not a JSON object; expected one object per row with "
        "the dataset's columns (e.g. instruction/output)")


def test_json_object_is_not_taken_as_one_row(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(GOOD, indent=2))
    assert _error(f"mine={path}").startswith("dataset 'mine': rows.json holds one JSON object, not a list of rows")


def test_malformed_line_is_reported_by_its_number(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(GOOD)] * 50 + ['{"instruction": "x", "output" "y"}'] + [json.dumps(GOOD)] * 5
    path.write_text("\n".join(lines) + "\n")
    assert _error(f"mine={path}") == (
        "dataset 'mine': line 51 of rows.jsonl is not valid JSON (Expecting ':' delimiter at column 31); fix or "
        "remove that line")


def test_directory_as_data_file(tmp_path):
    assert _error(f"mine={tmp_path}") == (
        f"dataset 'mine': {tmp_path} is a directory; give a json, jsonl or parquet file")


def test_prompts_too_long_do_not_suggest_a_flag_that_was_not_given(tok, tmp_path):
    rows = [{**GOOD, "instruction": "word " * 200}] * 4
    cfg = DataConfig(datasets=f"mine={_jsonl(tmp_path / 'r.jsonl', rows)}", max_seq_length=16, eval_fraction=0.0)
    with pytest.raises(UserError) as err:
        build_datasets(cfg, tok)
    assert str(err.value) == ("no training examples left after dropping prompts that do not fit at --max_seq_length "
                              "16; raise --max_seq_length")
