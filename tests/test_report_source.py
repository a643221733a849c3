"""Which trainer_state.json a report reads for a dir, a checkpoint or a store URI."""

from __future__ import annotations

import os
import sys
import types

import pytest
import report_synthetic as syn

from dylora_moe.errors import UserError
from dylora_moe.report.source import locate_state


def _checkpoint(root, step, complete=True, global_step=None):
    path = syn.write_state(root / f"checkpoint-{step}", history=[{"step": step, "loss": 1.0}],
                           global_step=global_step or step).parent
    if complete:
        (path / "COMPLETE").write_text("complete\n")
    return path


def test_newest_complete_checkpoint_beats_an_older_final_state(tmp_path):
    syn.write_state(tmp_path, global_step=80)
    _checkpoint(tmp_path, 40)
    _checkpoint(tmp_path, 100)
    _checkpoint(tmp_path, 120, complete=False)  # interrupted save: ignored
    state, local = locate_state(tmp_path)
    assert state == tmp_path / "checkpoint-100" / "trainer_state.json"
    assert local == tmp_path


def test_final_state_beats_older_checkpoints(tmp_path):
    final = syn.write_state(tmp_path, global_step=120)
    _checkpoint(tmp_path, 100)
    assert locate_state(str(tmp_path))[0] == final


def test_a_checkpoint_dir_or_state_file_is_used_directly(tmp_path):
    ckpt = _checkpoint(tmp_path, 50)
    assert locate_state(ckpt)[0] == ckpt / "trainer_state.json"
    assert locate_state(ckpt / "trainer_state.json")[0] == ckpt / "trainer_state.json"


def test_missing_source_is_one_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError) as info:
        locate_state(missing)
    assert str(info.value) == (
        f"report source {missing} does not exist; expected an output dir, a checkpoint dir or a store URI "
        "(wandb://, gs://, s3://, file://); check the path"
    )


def test_dir_without_any_state_is_one_user_error(tmp_path):
    _checkpoint(tmp_path, 10, complete=False)
    with pytest.raises(UserError) as info:
        locate_state(tmp_path)
    assert str(info.value) == (
        f"no trainer_state.json in {tmp_path} nor in a complete checkpoint-<step>/ (one with a COMPLETE marker); "
        "pass the output dir or a checkpoint dir of a run that has saved at least once"
    )


def test_unreadable_state_is_a_user_error(tmp_path):
    (tmp_path / "trainer_state.json").write_text("{not json")
    with pytest.raises(UserError, match=r"trainer_state.json is not readable JSON"):
        locate_state(tmp_path)
    (tmp_path / "trainer_state.json").write_text('{"log_history": 3}')
    with pytest.raises(UserError, match=r"is not a trainer state; expected a JSON object with a 'log_history' list"):
        locate_state(tmp_path)


def test_store_uri_without_the_resolver_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "dylora_moe.checkpoint.resolve", None)  # import now fails
    with pytest.raises(UserError) as info:
        locate_state("gs://bucket/run/checkpoint-100")
    message = str(info.value)
    assert message.startswith("cannot open store URI gs://bucket/run/checkpoint-100: "
                              "dylora_moe.checkpoint.resolve is not available (")
    assert message.endswith("download the checkpoint and pass its local directory instead")
    assert "\n" not in message


def test_store_uri_goes_through_fetch_checkpoint(monkeypatch, tmp_path):
    ckpt = _checkpoint(tmp_path, 70)
    calls = []
    fake = types.ModuleType("dylora_moe.checkpoint.resolve")
    fake.fetch_checkpoint = lambda uri: (calls.append(uri), os.fspath(ckpt))[1]
    monkeypatch.setitem(sys.modules, "dylora_moe.checkpoint.resolve", fake)
    state, local = locate_state("wandb://team/proj/ckpt:v2")
    assert calls == ["wandb://team/proj/ckpt:v2"]
    assert (state, local) == (ckpt / "trainer_state.json", ckpt)


def test_local_store_dir_and_bare_wandb_path_go_through_the_resolver(monkeypatch, tmp_path):
    ckpt = _checkpoint(tmp_path / "cache", 30)
    store = tmp_path / "store"
    store.mkdir()
    (store / "index.json").write_text("{}")
    calls = []
    fake = types.ModuleType("dylora_moe.checkpoint.resolve")
    fake.fetch_checkpoint = lambda uri: (calls.append(uri), ckpt)[1]
    monkeypatch.setitem(sys.modules, "dylora_moe.checkpoint.resolve", fake)
    assert locate_state(store)[0] == ckpt / "trainer_state.json"
    assert locate_state("team/proj/run-ckpt:best")[0] == ckpt / "trainer_state.json"
    assert calls == [str(store), "team/proj/run-ckpt:best"]


def test_file_uri_through_the_real_resolver(tmp_path):
    pytest.importorskip("dylora_moe.checkpoint.resolve")
    from dylora_moe.checkpoint.manifest import publish_atomically, write_manifest

    staging = tmp_path / "staging"
    syn.write_state(staging, global_step=60)
    (staging / "adapter.safetensors").write_bytes(b"weights")
    write_manifest(staging, {"global_step": 60})
    ckpt = publish_atomically(staging, tmp_path / "out" / "checkpoint-60")
    state, _local = locate_state(f"file://{ckpt}")
    assert state == ckpt / "trainer_state.json"


def test_store_failure_that_is_not_a_user_error_becomes_one_line(monkeypatch):
    def unreachable(uri):
        raise OSError("Cannot connect to host example.invalid:443\nsecond line")

    fake = types.ModuleType("dylora_moe.checkpoint.resolve")
    fake.fetch_checkpoint = unreachable
    monkeypatch.setitem(sys.modules, "dylora_moe.checkpoint.resolve", fake)
    with pytest.raises(UserError) as info:
        locate_state("s3://bucket/run")
    assert str(info.value) == (
        "cannot open store URI s3://bucket/run: OSError: Cannot connect to host example.invalid:443; "
        "check the URI, the network and the credentials, or pass a local checkpoint directory"
    )
