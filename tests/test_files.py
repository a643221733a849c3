"""atomic_write: the target holds the old content or the whole new one, never part of it."""

from __future__ import annotations

import os

import pytest

from dylora_moe.files import atomic_write_bytes, atomic_write_text


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "state.json"
    assert atomic_write_text(target, '{"a": 1}') == target
    atomic_write_bytes(target, b'{"a": 2}')
    assert target.read_bytes() == b'{"a": 2}'
    assert os.listdir(tmp_path) == ["state.json"]  # no temp file left


def test_failure_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # the data is written, the flush to disk fails
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new " * 1000)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_failure_of_the_rename_keeps_no_partial_new_file(tmp_path, monkeypatch):
    target = tmp_path / "index.json"

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write_bytes(target, b"x" * 100)
    assert os.listdir(tmp_path) == []


def test_new_file_gets_the_umask_mode(tmp_path):
    """Like a plain open(): a results file others could read before stays readable (not mkstemp's 0600)."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
