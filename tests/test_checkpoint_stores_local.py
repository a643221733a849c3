"""Local-directory store: versions, aliases, dedup, verified cached downloads, corruption, mid-upload readers."""

from __future__ import annotations

import json
import shutil

import pytest
from ckpt_helpers import make_checkpoint

from dylora_moe.checkpoint.manifest import COMPLETE_MARKER, CheckpointError, is_complete, verify_checkpoint
from dylora_moe.checkpoint.resolve import fetch_checkpoint
from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore
from dylora_moe.checkpoint.stores.uri import open_store, split_ref
from dylora_moe.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_versions_aliases_and_identical_content(tmp_path):
    out = tmp_path / "out"
    store = FsspecStore(str(tmp_path / "store"))
    assert store.list_versions() == []
    c10, c20 = make_checkpoint(out, 10), make_checkpoint(out, 20)
    v0 = store.publish(c10, ["step-10", "best"])
    assert (v0.version, v0.aliases) == ("v0", ["best", "latest", "step-10"])
    assert v0.metadata["global_step"] == 10 and v0.size == 256 * 11 + 20 + 9
    v1 = store.publish(c20, ["latest", "step-20"])
    assert (v1.version, v1.aliases) == ("v1", ["latest", "step-20"])
    again = store.publish(c10, ["final"])  # identical content: no new version, alias added, latest stays
    assert again.version == "v0"
    assert [(v.version, v.aliases) for v in store.list_versions()] == [
        ("v0", ["best", "final", "step-10"]),
        ("v1", ["latest", "step-20"]),
    ]
    assert store.resolve(None).version == "v1"
    assert store.resolve("latest").version == "v1"
    assert store.resolve("best").version == "v0"
    assert store.resolve("v1").metadata["global_step"] == 20
    with pytest.raises(CheckpointError, match=r"version or alias 'v7' not found in .*store; existing versions: "
                       r"v0 \(best, final, step-10\), v1 \(latest, step-20\)$"):
        store.resolve("v7")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["index.json", "staging", "v0", "v1"]
    assert list((tmp_path / "store" / "staging").iterdir()) == []


def test_download_verifies_and_uses_cache(tmp_path):
    store = FsspecStore(str(tmp_path / "store"))
    ckpt = make_checkpoint(tmp_path / "out", 10)
    store.publish(ckpt)
    logs: list[str] = []
    first = store.download("latest", log=logs.append)
    assert first.parent.parent == tmp_path / "cache" and first.name == "v0"
    assert is_complete(first) and _files(first).keys() == _files(ckpt).keys()
    assert {k: v for k, v in _files(first).items() if k != COMPLETE_MARKER} == {
        k: v for k, v in _files(ckpt).items() if k != COMPLETE_MARKER
    }
    shutil.rmtree(tmp_path / "store" / "v0")  # a cache hit must not touch the store
    assert store.download(None, log=logs.append) == first
    assert logs[-1] == f"using verified copy of {store.uri}:v0 at {first}"
    (first / "trainer_state.json").write_text("tampered")  # a cached copy that no longer verifies is refetched
    with pytest.raises(CheckpointError, match="manifest.json is missing in the store"):
        store.download(None, log=logs.append)


def _age(ckpt, seconds: float = 10.0) -> None:
    """Move every file's mtime into the past: a cache copy written well before this resume."""
    import os
    import time

    past = time.time_ns() - int(seconds * 1e9)
    for path in ckpt.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(past, past))


def test_cache_hit_rehashes_only_after_a_change(tmp_path, monkeypatch):
    """A cached copy verified since its files last changed is reused without hashing; a change, even of the
    same size, means a full verification, and a copy that fails it is fetched again."""
    from dylora_moe.checkpoint.stores import base

    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "out", 10))
    cached = store.download("v0", log=lambda m: None)
    _age(cached)  # the stamp no longer matches: the next hit verifies in full and stamps again
    verified = []
    monkeypatch.setattr(base, "verify_checkpoint", lambda path, **kw: verified.append(path) or verify_checkpoint(
        path, **kw))
    logs: list[str] = []
    assert store.download("v0", log=logs.append) == cached and verified == [cached]
    assert store.download("v0", log=logs.append) == cached and verified == [cached]  # no second hashing
    assert logs == [f"using verified copy of {store.uri}:v0 at {cached}"] * 2

    expert = cached / "experts" / "expert_0.bin"
    original = expert.read_bytes()
    expert.write_bytes(bytes(len(original)))  # same size, other bytes
    verified.clear()
    logs.clear()
    assert store.download("v0", log=logs.append) == cached
    assert verified[0] == cached and expert.read_bytes() == original  # verified, failed, fetched again
    assert logs[-1].startswith(f"downloaded {store.uri}:v0 ")


def test_corrupted_file_in_store_is_named_and_nothing_published(tmp_path):
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "out", 10))
    blob = tmp_path / "store" / "v0" / "experts" / "expert_0.bin"
    blob.write_bytes(b"expert-19")  # same size, other bytes
    dest = tmp_path / "dl"
    with pytest.raises(CheckpointError) as info:
        store.download("v0", dest, log=lambda m: None)
    assert str(info.value) == (
        f"download of {store.uri}:v0 failed verification: file experts/expert_0.bin fails its sha256 check (corrupted)"
    )
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_reader_during_upload_sees_only_finished_versions(tmp_path, monkeypatch):
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "out", 10), ["step-10"])
    new = make_checkpoint(tmp_path / "out", 20)
    seen = []
    original_put = FsspecStore._put

    def put_and_read(self, local, remote):
        original_put(self, local, remote)
        reader = FsspecStore(str(tmp_path / "store"))  # an independent reader, mid-upload
        latest = reader.resolve("latest")
        path = reader.download("latest", tmp_path / f"reader-{len(seen)}", log=lambda m: None)
        seen.append((latest.version, json.loads((path / "trainer_state.json").read_text())["global_step"]))

    monkeypatch.setattr(FsspecStore, "_put", put_and_read)
    store.publish(new, ["step-20"])
    assert seen == [("v0", 10)] * 4  # 3 files + manifest uploaded, the reader saw v0 every time
    monkeypatch.undo()
    assert FsspecStore(str(tmp_path / "store")).resolve("latest").version == "v1"


def test_interrupted_upload_leftover_is_invisible_and_replaced(tmp_path):
    root = tmp_path / "store"
    store = FsspecStore(str(root))
    store.publish(make_checkpoint(tmp_path / "out", 10))
    (root / "v1").mkdir()
    (root / "v1" / "junk.bin").write_bytes(b"half")
    assert [v.version for v in store.list_versions()] == ["v0"]
    info = store.publish(make_checkpoint(tmp_path / "out", 20))
    assert info.version == "v1" and not (root / "v1" / "junk.bin").exists()
    assert verify_checkpoint(store.download("v1", log=lambda m: None))["metadata"]["global_step"] == 20


def test_publish_refuses_incomplete_checkpoint(tmp_path):
    ckpt = make_checkpoint(tmp_path / "out", 10)
    (ckpt / COMPLETE_MARKER).unlink()
    with pytest.raises(CheckpointError, match="is incomplete"):
        FsspecStore(str(tmp_path / "store")).publish(ckpt)
    assert not (tmp_path / "store" / "index.json").exists()


def test_download_refuses_non_checkpoint_destination(tmp_path):
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "out", 10))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(CheckpointError, match="is not empty; choose an empty or new directory"):
        store.download(None, tmp_path / "mine", log=lambda m: None)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"


def test_uri_parsing(tmp_path):
    assert split_ref("gs://bucket/runs/a:best") == ("gs://bucket/runs/a", "best")
    assert split_ref("s3://bucket/p") == ("s3://bucket/p", None)
    assert split_ref("/data/store:v3") == ("/data/store", "v3")
    assert split_ref("file:///data/store:latest") == ("file:///data/store", "latest")
    store, ref = open_store(f"file://{tmp_path}/s:v2")
    assert (store.root, ref) == (f"{tmp_path}/s", "v2")
    with pytest.raises(UserError, match=r"unsupported checkpoint store URI 'ftp://x/y'"):
        open_store("ftp://x/y")


def test_fetch_checkpoint_forms(tmp_path):
    out = tmp_path / "out"
    c10 = make_checkpoint(out, 10)
    c20 = make_checkpoint(out, 20)
    (c20 / COMPLETE_MARKER).unlink()
    logs: list[str] = []
    assert fetch_checkpoint(c10, log=logs.append) == c10
    assert fetch_checkpoint(out, log=logs.append) == c10
    assert logs == ["skipping checkpoint-20: incomplete (no COMPLETE marker) — a save was interrupted"]
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(c10, ["best"])
    got = fetch_checkpoint(f"{tmp_path}/store:best", log=logs.append)
    assert verify_checkpoint(got)["metadata"]["global_step"] == 10
    with pytest.raises(CheckpointError, match="is not a checkpoint, an output directory"):
        fetch_checkpoint(tmp_path / "nothing-here", log=logs.append)
    logs.clear()
    assert fetch_checkpoint(c20, log=logs.append) == c20  # named directly: its manifest verifies it in full
    assert logs == [f"checkpoint {c20} has no COMPLETE marker (as when fetched with W&B's own tools); verified by "
                    "its manifest.json instead: all 3 files present with matching sha256"]
    (c20 / "experts" / "expert_0.bin").write_bytes(b"changed")
    with pytest.raises(CheckpointError, match=r"checkpoint-20: file experts/expert_0\.bin has size 7"):
        fetch_checkpoint(c20, log=logs.append)
    (c20 / "manifest.json").unlink()  # a save interrupted before its manifest: no fallback
    with pytest.raises(CheckpointError, match="is not a checkpoint, an output directory"):
        fetch_checkpoint(c20, log=logs.append)


def test_concurrent_cache_downloads_fetch_once(tmp_path, monkeypatch):
    import threading

    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "out", 10))
    fetches = []
    original = FsspecStore._fetch

    def counting_fetch(self, info, dest):
        fetches.append(info.version)
        original(self, info, dest)

    monkeypatch.setattr(FsspecStore, "_fetch", counting_fetch)
    results = []
    threads = [threading.Thread(target=lambda: results.append(FsspecStore(store.uri).download(log=lambda m: None)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fetches == ["v0"] and len(set(results)) == 1 and is_complete(results[0])
