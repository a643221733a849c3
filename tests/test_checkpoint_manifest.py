"""Manifest round trip, corruption detection, atomic publish and partial-checkpoint skipping."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from ckpt_helpers import make_checkpoint, sample_metadata

from dylora_moe.checkpoint.manifest import (
    COMPLETE_MARKER,
    MANIFEST_NAME,
    CheckpointError,
    find_latest_checkpoint,
    is_complete,
    list_checkpoints,
    publish_atomically,
    read_manifest,
    safe_member,
    verify_checkpoint,
    write_manifest,
)
from dylora_moe.errors import UserError


def test_round_trip_lists_every_file_with_size_and_hash(tmp_path):
    ckpt = make_checkpoint(tmp_path, 5)
    manifest = verify_checkpoint(ckpt)
    assert manifest == read_manifest(ckpt)
    assert manifest["format"] == "dylora-moe-checkpoint/1"
    assert sorted(manifest["files"]) == ["adapter.safetensors", "experts/expert_0.bin", "trainer_state.json"]
    assert manifest["files"]["experts/expert_0.bin"] == {
        "size": 8,
        "sha256": hashlib.sha256(b"expert-5").hexdigest(),
    }
    assert manifest["files"]["adapter.safetensors"]["size"] == 256 * 6
    assert manifest["metadata"] == sample_metadata(5)
    assert is_complete(ckpt)
    assert not list(tmp_path.glob(".tmp-*"))


def test_corrupted_byte_names_the_file(tmp_path):
    ckpt = make_checkpoint(tmp_path, 3)
    target = ckpt / "adapter.safetensors"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"file adapter\.safetensors fails its sha256 check") as info:
        verify_checkpoint(ckpt)
    assert isinstance(info.value, UserError)


def test_truncated_and_missing_files_are_named(tmp_path):
    ckpt = make_checkpoint(tmp_path, 3)
    (ckpt / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"file trainer_state\.json has size 2, manifest says 19"):
        verify_checkpoint(ckpt)
    (ckpt / "experts" / "expert_0.bin").unlink()
    with pytest.raises(CheckpointError, match=r"file experts/expert_0\.bin listed in the manifest is missing"):
        verify_checkpoint(ckpt)


def test_extra_file_is_tolerated(tmp_path):
    ckpt = make_checkpoint(tmp_path, 1)
    (ckpt / "notes.txt").write_text("later")
    assert verify_checkpoint(ckpt)["metadata"]["global_step"] == 1


def test_missing_marker_is_not_complete(tmp_path):
    ckpt = make_checkpoint(tmp_path, 2)
    (ckpt / COMPLETE_MARKER).unlink()
    assert not is_complete(ckpt)
    with pytest.raises(CheckpointError, match="is incomplete \\(no COMPLETE marker\\)"):
        verify_checkpoint(ckpt)
    assert verify_checkpoint(ckpt, require_complete=False)["metadata"]["global_step"] == 2


def test_edited_manifest_is_caught_by_marker_hash(tmp_path):
    ckpt = make_checkpoint(tmp_path, 2)
    manifest = json.loads((ckpt / MANIFEST_NAME).read_text())
    manifest["metadata"]["global_step"] = 99
    (ckpt / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="file manifest.json does not match the hash in COMPLETE"):
        verify_checkpoint(ckpt)


def test_unsafe_manifest_path_rejected(tmp_path):
    ckpt = tmp_path / "c"
    ckpt.mkdir()
    (ckpt / MANIFEST_NAME).write_text(
        json.dumps({"format": "dylora-moe-checkpoint/1", "files": {"../x": {"size": 1, "sha256": "0"}}})
    )
    with pytest.raises(CheckpointError, match="unsafe file path in the manifest '../x'"):
        verify_checkpoint(ckpt, require_complete=False)


@pytest.mark.parametrize("rel", ["", "/etc/passwd", "..", "../x", "a/../../x", "a/..", "./../x", "a\x00b", "a\\..\\x",
                                 "a//b", "a/", "x" * 256])
def test_safe_member_refuses_empty_absolute_and_parent_paths(tmp_path, rel):
    with pytest.raises(CheckpointError, match=re.escape(f"where: unsafe file path in the manifest {rel!r}"[:60])):
        safe_member(tmp_path, rel, "where")


def test_safe_member_keeps_paths_inside(tmp_path):
    assert safe_member(tmp_path, "experts/expert_0.bin", "where") == tmp_path / "experts" / "expert_0.bin"
    assert safe_member(tmp_path, "a..b/c", "where") == tmp_path / "a..b" / "c"  # '..' only as a whole component


def test_wrong_format_and_missing_manifest(tmp_path):
    with pytest.raises(CheckpointError, match="has no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"format": "other/9", "files": {}}')
    with pytest.raises(CheckpointError, match="has format 'other/9'; expected 'dylora-moe-checkpoint/1'"):
        read_manifest(tmp_path)


def test_publish_replaces_existing_final_dir(tmp_path):
    make_checkpoint(tmp_path, 7, payload=b"old")
    tmp = tmp_path / ".tmp-checkpoint-7-1"
    tmp.mkdir()
    (tmp / "adapter.safetensors").write_bytes(b"new")
    (tmp / COMPLETE_MARKER).write_text("stale")  # must not survive: only publish marks complete
    write_manifest(tmp, sample_metadata(7))
    final = publish_atomically(tmp, tmp_path / "checkpoint-7")
    assert (final / "adapter.safetensors").read_bytes() == b"new"
    assert not (final / "experts").exists()
    assert verify_checkpoint(final)["files"]["adapter.safetensors"]["size"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-7"]


def test_list_and_find_skip_partial_and_corrupt_newer(tmp_path):
    for step in (10, 20, 30, 40):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-40" / COMPLETE_MARKER).unlink()
    (tmp_path / "checkpoint-30" / "trainer_state.json").write_text('{"global_step": 31}\n')
    (tmp_path / ".tmp-checkpoint-50-123").mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10, 20, 30, 40]
    messages: list[str] = []
    assert find_latest_checkpoint(tmp_path, log=messages.append) == tmp_path / "checkpoint-20"
    assert messages[0] == "skipping checkpoint-40: incomplete (no COMPLETE marker) — a save was interrupted"
    assert messages[1].startswith("skipping checkpoint-30: corrupt — checkpoint ")
    assert messages[1].endswith("file trainer_state.json fails its sha256 check (corrupted)")
    assert find_latest_checkpoint(tmp_path, verify=False, log=messages.append) == tmp_path / "checkpoint-30"


def test_find_in_missing_or_empty_dir(tmp_path):
    assert list_checkpoints(tmp_path / "nope") == []
    assert find_latest_checkpoint(tmp_path, log=lambda m: None) is None


def test_clean_stale_temp_dirs(tmp_path):
    import os

    from dylora_moe.checkpoint.manifest import clean_stale_temp_dirs

    make_checkpoint(tmp_path, 10)
    for name in (".tmp-checkpoint-20-99999999", ".old-checkpoint-10-99999999", f".tmp-checkpoint-30-{os.getpid()}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.bin").write_bytes(b"x")
    logs: list[str] = []
    removed = clean_stale_temp_dirs(tmp_path, log=logs.append)
    assert [p.name for p in removed] == [".old-checkpoint-10-99999999", ".tmp-checkpoint-20-99999999"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".tmp-checkpoint-30-{os.getpid()}", "checkpoint-10"]
    assert logs[1] == "removed .tmp-checkpoint-20-99999999: left by an interrupted checkpoint save"
