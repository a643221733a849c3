"""Local files (json, jsonl, parquet), the real shared files, and the one-line error for hub names offline."""

from __future__ import annotations

import json

import pytest

from dylora_moe.data import loading
from dylora_moe.data.loading import load_source
from dylora_moe.data.registry import parse_datasets
from dylora_moe.errors import UserError

ROWS = [{"instruction": "Add.", "input": "", "output": "a + b"}, {"instruction": "Neg.", "input": "x", "output": "-x"}]


def _load(text: str):
    return load_source(parse_datasets(text)[0])


def test_shared_mbpp_and_code_alpaca_files(shared_data):
    mbpp = _load(f"mbpp={shared_data / 'mbpp.jsonl'}")
    assert len(mbpp.rows) == 974 and mbpp.row_format.name == "mbpp"
    assert mbpp.identity["kind"] == "file" and mbpp.identity["file"] == "mbpp.jsonl"
    assert len(mbpp.identity["sha256"]) == 64
    alpaca = _load(f"code_alpaca={shared_data / 'code_alpaca_2k.json'}")
    assert len(alpaca.rows) == 2017 and alpaca.row_format.name == "alpaca"


@pytest.mark.parametrize("suffix", ["json", "jsonl", "parquet"])
def test_local_file_formats(tmp_path, suffix):
    path = tmp_path / f"rows.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(ROWS))
    elif suffix == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    src = _load(f"mine={path}")
    assert src.rows == ROWS and src.row_format.name == "alpaca"


def test_json_lines_saved_as_json(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    assert _load(f"code_alpaca={path}").rows == ROWS


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        _load(f"mbpp={tmp_path / 'nope.jsonl'}")
    assert str(err.value) == f"dataset 'mbpp': file {tmp_path / 'nope.jsonl'} does not exist; give a json, jsonl or parquet file"


def test_file_lacking_the_names_columns(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"query": "q", "answer": "a"}) + "\n")
    with pytest.raises(UserError) as err:
        _load(f"code_alpaca={path}")
    assert str(err.value) == ("dataset 'code_alpaca': rows.jsonl lacks column(s) instruction, output of the alpaca "
                              "format (found: answer, query); bind the file to a name whose format it has")


def test_unknown_layout_for_custom_name(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    with pytest.raises(UserError, match=r"^dataset 'mine': cannot tell the format of rows.jsonl \(columns: completion, prompt\)"):
        _load(f"mine={path}")


OFFLINE_LINE = ("dataset 'code_alpaca' comes from the Hugging Face hub (sahil2801/CodeAlpaca-20k), which is offline "
                "or unreachable; bind it to a local file instead: --datasets \"code_alpaca=path/to/file.jsonl\" "
                "(json, jsonl or parquet), or put code_alpaca.jsonl in a directory named by DYLORA_DATA_DIR")


def _online(monkeypatch) -> None:
    """Pretend the hub is reachable; no test ever opens a connection to it."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: True)


def test_offline_hub_name_fails_at_once_with_one_line(monkeypatch):
    import datasets

    def never(*a, **k):
        raise AssertionError("the hub must not be tried when offline")

    monkeypatch.setattr(datasets, "load_dataset", never)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        _load("code_alpaca")
    assert str(err.value) == OFFLINE_LINE and "\n" not in str(err.value)


def test_unreachable_hub_gives_the_same_line(monkeypatch):
    import datasets

    _online(monkeypatch)

    class ConnectTimeout(Exception):  # what httpx raises, by name
        pass

    def unreachable(*a, **k):
        try:
            raise ConnectTimeout("timed out")
        except ConnectTimeout as exc:
            raise RuntimeError("could not fetch") from exc

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(UserError) as err:
        _load("code_alpaca")
    assert str(err.value) == OFFLINE_LINE


def test_hub_mbpp_loads_all_splits_of_the_full_config(monkeypatch):
    import datasets

    _online(monkeypatch)
    calls = []

    def fake(hub_id, config, split):
        calls.append((hub_id, config, split))
        return datasets.Dataset.from_list([{"task_id": len(calls), "text": "t", "code": "c", "test_list": ["a"]}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    src = _load("mbpp")
    assert calls == [("google-research-datasets/mbpp", "full", s) for s in ("train", "validation", "test", "prompt")]
    assert [r["task_id"] for r in src.rows] == [1, 2, 3, 4]
    assert src.identity == {"kind": "hub", "hub_id": "google-research-datasets/mbpp", "config": "full",
                            "splits": ["train", "validation", "test", "prompt"]}


def test_other_hub_errors_are_not_hidden(monkeypatch):
    import datasets

    _online(monkeypatch)

    def broken(*a, **k):
        raise KeyError("schema")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(KeyError):
        _load("evol_instruct")
    assert loading.hub_offline() is False


def test_probe_failure_fails_at_once_and_marks_offline(monkeypatch):
    import socket

    import datasets

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    targets = []

    def refuse(address, timeout):
        targets.append((address, timeout))
        raise ConnectionRefusedError("refused")

    def never(*a, **k):
        raise AssertionError("datasets must not be asked when the probe failed")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(UserError) as err:
        _load("code_alpaca")
    assert str(err.value) == OFFLINE_LINE
    assert targets == [(("127.0.0.1", 9), 3.0)]
    assert loading.hub_offline() is True


def test_registry_names_load_from_the_local_mirror_as_a_bound_file_would(shared_data, tmp_path, monkeypatch):
    """DYLORA_DATA_DIR/mbpp.jsonl stands in for the hub; the same source as `mbpp=that file`, offline."""
    from seed_data import write_seed_mirror

    mirror = write_seed_mirror(shared_data, tmp_path / "mirror", rows=3)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("DYLORA_DATA_DIR", str(mirror))
    for name, fmt in (("code_alpaca", "alpaca"), ("mbpp", "mbpp"), ("evol_instruct", "alpaca"),
                      ("code_feedback", "query_answer")):
        source = _load(name)
        assert source.row_format.name == fmt and len(source.rows) == (5 if name == "mbpp" else 3)
        bound = _load(f"{name}={next(mirror.glob(name + '.*'))}")
        assert source.identity == bound.identity and source.rows == bound.rows
    with pytest.raises(UserError) as err:  # not mirrored: still the hub's one line
        _load("python_codes_25k")
    assert "python_codes_25k.jsonl in a directory named by DYLORA_DATA_DIR" in str(err.value)


def test_local_mirror_that_is_not_a_directory_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DYLORA_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as err:
        parse_datasets("code_alpaca")
    assert str(err.value) == (f"DYLORA_DATA_DIR={tmp_path / 'nowhere'} is not a directory; point it at a directory "
                              "of NAME.jsonl files (e.g. code_alpaca.jsonl) or unset it")
