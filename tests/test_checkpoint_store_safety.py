"""Untrusted store contents: names that would become paths outside the cache, symlinks in a published checkpoint,
and temporaries a killed download leaves in the cache. Local store, the real CLI in a subprocess, and a real
child process killed with SIGKILL mid-download (gs:// and s3:// are in test_checkpoint_stores_cloud.py, W&B in
test_wandb_sdk_online.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ckpt_helpers import make_checkpoint
from train_helpers import SRC, one_error_line, run_cli

from dylora_moe.checkpoint.manifest import COMPLETE_MARKER, MANIFEST_NAME, CheckpointError, verify_checkpoint
from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore
from dylora_moe.checkpoint.stores.uri import open_store
from dylora_moe.errors import UserError

# (version name in index.json, the reason in the error line); ABS is replaced by the victim's absolute path
UNSAFE_VERSIONS = [
    ("v0/../../../victim", "contains a path separator"),
    ("ABS", "contains a path separator"),
    ("v0/x", "contains a path separator"),
    ("v0\\..\\..\\..\\victim", "contains a path separator"),
    ("v0\x00", "contains NUL"),
    ("", "empty"),
    ("..", "'..' is not a name"),
    ("v0\n", "contains a control character"),
    ("best", "expected v0, v1, …"),
    (7, "not a string: int"),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))


def _victim(tmp_path: Path) -> Path:
    """A directory the user owns: checkpoint files they are working on (so a download of it verifies, but is not a
    finished copy to reuse) plus their own notes, which the publish of a download would delete."""
    victim = tmp_path / "victim"
    shutil.copytree(make_checkpoint(tmp_path / "victim-src", 5), victim)
    (victim / COMPLETE_MARKER).unlink()
    (victim / "notes.txt").write_text("the user's notes\n")
    return victim


def _victim_intact(victim: Path) -> bool:
    notes = (victim / "notes.txt").read_text() == "the user's notes\n"
    return notes and verify_checkpoint(victim, require_complete=False) is not None


def _tamper_index(root: Path, version, alias: str = "evil") -> None:
    """Rewrite a store's index.json as a hostile store owner would: v0 renamed, an alias pointing at it."""
    index = json.loads((root / "index.json").read_text())
    index["versions"][0]["version"] = version
    index["versions"][0]["digest"] = ""
    index["aliases"] = {alias: version}
    (root / "index.json").write_text(json.dumps(index))


def _store_with_v0(tmp_path: Path) -> tuple[FsspecStore, Path]:
    # three levels deep, like the cache's <cache>/<store>/<version>: 'v0/../../../victim' then means tmp/victim
    # in the store and in the cache alike, so before the fix the download verified and replaced the victim
    root = tmp_path / "a" / "store"
    store = FsspecStore(str(root))
    store.publish(make_checkpoint(tmp_path / "out", 10))
    return store, root


@pytest.mark.parametrize("version,problem", UNSAFE_VERSIONS, ids=[repr(v) for v, _ in UNSAFE_VERSIONS])
def test_unsafe_version_names_in_a_local_store_are_one_error_and_touch_nothing(tmp_path, version, problem):
    victim = _victim(tmp_path)
    store, root = _store_with_v0(tmp_path)
    version = str(victim) if version == "ABS" else version
    _tamper_index(root, version)
    for action in (lambda s: s.download("evil", log=lambda m: None), lambda s: s.list_versions(),
                   lambda s: s.download(None, tmp_path / "dest", log=lambda m: None)):
        with pytest.raises(UserError) as info:
            action(FsspecStore(str(root)))
        assert str(info.value) == (
            f"{root}/index.json: unsafe version name {version!r} ({problem}); refused before it is used as a path "
            "— the store or checkpoint is damaged or not trustworthy")
    assert _victim_intact(victim)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("field,value,expected", [
    ("size", "big", "has size 'big', expected a byte count"),
    ("size", -1, "has size -1, expected a byte count"),
    ("metadata", "x", "has metadata of type str, expected a mapping"),
    ("digest", 5, "has a digest that is not text"),
])
def test_badly_typed_fields_of_a_store_index_are_one_line(tmp_path, field, value, expected):
    _, root = _store_with_v0(tmp_path)
    index = json.loads((root / "index.json").read_text())
    index["versions"][0][field] = value
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError) as info:
        FsspecStore(str(root)).list_versions()
    assert str(info.value) == f"{root}/index.json: version v0 {expected}; the store is damaged"


def test_auto_resume_from_a_store_whose_step_is_not_a_number_still_finds_the_checkpoint(tmp_path):
    from dylora_moe.checkpoint.resolve import newest_in_store

    _, root = _store_with_v0(tmp_path)
    index = json.loads((root / "index.json").read_text())
    index["versions"][0]["metadata"]["global_step"] = "ten"
    (root / "index.json").write_text(json.dumps(index))
    step, path, label = newest_in_store(str(root), None, log=lambda m: None)
    assert (step, label) == (-1, f"{root}:v0") and verify_checkpoint(path)


@pytest.mark.parametrize("alias", ["../x", "a/b", "", "\x00", ".."])
def test_unsafe_alias_in_a_store_index_is_refused(tmp_path, alias):
    store, root = _store_with_v0(tmp_path)
    _tamper_index(root, "v0", alias=alias)
    with pytest.raises(UserError, match="^" + re.escape(f"{root}/index.json: unsafe alias {alias!r} (")):
        FsspecStore(str(root)).list_versions()


def test_download_version_refuses_a_hand_made_unsafe_version(tmp_path):
    """The cache path itself is guarded, not only the listing: a VersionInfo built by other code is checked."""
    from dylora_moe.checkpoint.stores.base import VersionInfo

    victim = _victim(tmp_path)
    store, _root = _store_with_v0(tmp_path)
    with pytest.raises(UserError, match=r"unsafe version name '/"):
        store.download_version(VersionInfo(version=str(victim)), log=lambda m: None)
    assert _victim_intact(victim)


@pytest.mark.parametrize("version", ["v0/../../../victim", "ABS", "v0\x00"], ids=["dotdot", "absolute", "nul"])
def test_checkpoints_verify_cli_refuses_unsafe_version_and_keeps_the_victim(tmp_path, version):
    victim = _victim(tmp_path)
    _store, root = _store_with_v0(tmp_path)
    version = str(victim) if version == "ABS" else version
    _tamper_index(root, version)
    proc = run_cli("checkpoints", "verify", f"{root}:evil")
    assert proc.returncode == 2
    problem = "contains NUL" if "\x00" in version else "contains a path separator"
    assert one_error_line(proc) == (
        f"error: {root}/index.json: unsafe version name {version!r} ({problem}); refused before it is used as a "
        "path — the store or checkpoint is damaged or not trustworthy")
    assert _victim_intact(victim)


@pytest.mark.parametrize("link", ["trainer_state.json", MANIFEST_NAME, "experts"])
def test_local_publish_refuses_a_symlink_in_the_checkpoint(tmp_path, link):
    """A manifest file (or a directory on its way) that is a symlink names the link; nothing is published."""
    ckpt = make_checkpoint(tmp_path / "out", 10)
    host = tmp_path / "host"
    shutil.copytree(ckpt, host)  # same bytes: the manifest still verifies, only the link is wrong
    (ckpt / link).rename(tmp_path / "moved")
    (ckpt / link).symlink_to(host / link)
    store = FsspecStore(str(tmp_path / "store"))
    with pytest.raises(UserError) as info:
        store.publish(ckpt, ["best"])
    assert str(info.value) == (
        f"cannot publish {ckpt}: {link} is a symbolic link (to {host / link}); a store upload takes only the "
        "checkpoint's own files — replace the link by a copy of the file")
    assert store.list_versions() == []


def test_local_publish_uploads_only_the_manifest_files(tmp_path):
    ckpt = make_checkpoint(tmp_path / "out", 10)
    (tmp_path / "secret.txt").write_text("host secret\n")
    (ckpt / "extra.log").write_text("not in the manifest\n")
    (ckpt / "link.txt").symlink_to(tmp_path / "secret.txt")  # not in the manifest: ignored, not uploaded
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(ckpt)
    stored = sorted(p.relative_to(tmp_path / "store" / "v0").as_posix()
                    for p in (tmp_path / "store" / "v0").rglob("*") if p.is_file())
    assert stored == ["adapter.safetensors", "experts/expert_0.bin", MANIFEST_NAME, "trainer_state.json"]


_SLOW_DOWNLOAD = """
import pathlib, sys, time
from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore

store = FsspecStore(sys.argv[1])
original = store.fs.get_file

def first_file_then_hang(rpath, lpath, *args, **kwargs):
    original(rpath, lpath, *args, **kwargs)
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(3600)

store.fs.get_file = first_file_then_hang
store.download("v0", log=lambda m: None)
"""


def _wait_for(path: Path, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child download never started"
        time.sleep(0.05)


def test_killed_download_temp_is_cleaned_by_the_next_download_a_live_one_is_not(tmp_path):
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "out", 10))
    store.publish(make_checkpoint(tmp_path / "out", 20))
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", _SLOW_DOWNLOAD, store.uri, str(ready)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(ready, child)
        cache = store.cache_dir_for(store.resolve("v0")).parent
        live_tmp = cache / f".tmp-v0-{child.pid}"
        assert live_tmp.is_dir()
        dead_old = cache / ".old-v1-99999999"  # a publish into the cache killed between its two renames
        dead_old.mkdir()
        logs: list[str] = []
        store.download("v1", log=logs.append)  # the child is alive and downloading v0: its temp stays
        assert live_tmp.is_dir() and not dead_old.exists()
        assert f"removed {dead_old.name}: left by an interrupted download" in logs
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert live_tmp.is_dir()  # what SIGKILL leaves behind
        logs.clear()
        got = store.download("v0", log=logs.append)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not live_tmp.exists()
    assert f"removed {live_tmp.name}: left by an interrupted download" in logs
    assert verify_checkpoint(got)["metadata"]["global_step"] == 10
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith((".lock-", ".verified-"))) == ["v0", "v1"]


def test_stale_temp_of_another_store_in_the_cache_is_cleaned_too(tmp_path):
    """The next download into the cache cleans every store's leftovers, not only its own store's."""
    first = FsspecStore(str(tmp_path / "s1"))
    first.publish(make_checkpoint(tmp_path / "out", 10))
    other = FsspecStore(str(tmp_path / "s2"))
    other.publish(make_checkpoint(tmp_path / "out", 20))
    other_cache = other.cache_dir_for(other.resolve("v0")).parent
    leftover = other_cache / ".tmp-v0-99999999"
    (leftover / "experts").mkdir(parents=True)
    (leftover / COMPLETE_MARKER).write_text("x")
    first.download(log=lambda m: None)
    assert not leftover.exists()


def test_open_store_names_are_checked_for_wandb_collections():
    with pytest.raises(UserError, match=r"unsafe W&B entity '\.\.'"):
        open_store("wandb://../proj/ckpt:v0")
    with pytest.raises(CheckpointError):
        open_store("wandb://ent/proj/..:v0")
