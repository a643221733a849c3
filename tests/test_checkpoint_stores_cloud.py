"""gs:// and s3:// stores against real protocol servers on loopback (gcp-storage-emulator, moto)."""

from __future__ import annotations

import os
import socket

import pytest
from ckpt_helpers import make_checkpoint

from dylora_moe.checkpoint.manifest import COMPLETE_MARKER, CheckpointError, verify_checkpoint
from dylora_moe.checkpoint.resolve import fetch_checkpoint
from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore
from dylora_moe.checkpoint.stores.uri import open_store

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # else each first bucket access waits 60 s


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clear_fsspec_instances() -> None:
    """fsspec caches filesystem objects by their arguments; the endpoint comes from the environment."""
    import gcsfs
    import s3fs

    gcsfs.GCSFileSystem.clear_instance_cache()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def gcs_server():
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="ckpts")
    server.start()
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    _clear_fsspec_instances()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    _clear_fsspec_instances()
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in fake}
    os.environ.update(fake)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="ckpts")
    _clear_fsspec_instances()  # a cached S3FileSystem would still talk to an earlier module's (stopped) server
    yield endpoint
    server.stop()
    _clear_fsspec_instances()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(params=["gs", "s3"])
def remote_uri(request, tmp_path, monkeypatch):
    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))
    request.getfixturevalue("gcs_server" if request.param == "gs" else "s3_server")
    return f"{request.param}://ckpts/{request.node.name.replace('[', '-').rstrip(']')}/run"


def test_publish_list_download_round_trip(remote_uri, tmp_path):
    store, ref = open_store(remote_uri)
    assert ref is None and isinstance(store, FsspecStore)
    c10, c20 = make_checkpoint(tmp_path / "out", 10), make_checkpoint(tmp_path / "out", 20)
    assert store.publish(c10, ["step-10", "best"]).version == "v0"
    assert store.publish(c20, ["step-20"]).version == "v1"
    assert store.publish(c20, ["final"]).version == "v1"  # identical content: alias only
    fresh, _ = open_store(remote_uri)  # another process's view
    assert [(v.version, v.aliases) for v in fresh.list_versions()] == [
        ("v0", ["best", "step-10"]),
        ("v1", ["final", "latest", "step-20"]),
    ]
    got = fetch_checkpoint(f"{remote_uri}:best", log=lambda m: None)
    manifest = verify_checkpoint(got)
    assert manifest["metadata"]["global_step"] == 10
    assert (got / "adapter.safetensors").read_bytes() == (c10 / "adapter.safetensors").read_bytes()
    assert not fresh.fs.exists(f"{fresh.root}/staging") or fresh.fs.ls(f"{fresh.root}/staging") == []


def test_reader_mid_upload_and_corruption(remote_uri, tmp_path, monkeypatch):
    store, _ = open_store(remote_uri)
    store.publish(make_checkpoint(tmp_path / "out", 10))
    seen = []
    original_put = FsspecStore._put

    def put_and_read(self, local, remote):
        original_put(self, local, remote)
        seen.append([v.version for v in open_store(remote_uri)[0].list_versions()])

    monkeypatch.setattr(FsspecStore, "_put", put_and_read)
    store.publish(make_checkpoint(tmp_path / "out", 20))
    monkeypatch.undo()
    assert seen == [["v0"]] * 4
    assert [v.version for v in store.list_versions()] == ["v0", "v1"]
    store.fs.pipe_file(f"{store.root}/v1/trainer_state.json", b'{"global_step": 21}\n')  # same size
    with pytest.raises(CheckpointError, match=r":v1 failed verification: file trainer_state\.json fails its sha256"):
        store.download("v1", tmp_path / "dl", log=lambda m: None)
    assert not (tmp_path / "dl").exists()


@pytest.mark.parametrize("name", ["v0/../../../victim", "ABS", "v0\x00", ""],
                         ids=["dotdot", "absolute", "nul", "empty"])
def test_unsafe_version_name_in_a_remote_index_is_one_error_and_touches_nothing(remote_uri, tmp_path, name):
    """The bucket owner writes index.json: its version names must not choose a local directory to replace."""
    import json

    victim = tmp_path / "victim"  # <cache>/<store>/v0/../../../victim is this directory
    victim.mkdir()
    (victim / "notes.txt").write_text("the user's notes\n")
    name = str(victim) if name == "ABS" else name
    store, _ = open_store(remote_uri)
    source = make_checkpoint(tmp_path / "out", 10)
    store.publish(source)
    if name.startswith("v0/") and remote_uri.startswith("s3://"):  # S3 keys are literal: the owner serves a whole
        # checkpoint under that name, which (before names were checked) replaced the victim; the GCS emulator
        # refuses such object names
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.name != COMPLETE_MARKER:
                store.fs.put_file(str(path), f"{store.root}/{name}/{path.relative_to(source).as_posix()}")
    index = json.loads(store.fs.cat_file(f"{store.root}/index.json"))
    index["versions"][0]["version"] = name
    index["versions"][0]["digest"] = ""
    index["aliases"] = {"evil": name}
    store.fs.pipe_file(f"{store.root}/index.json", json.dumps(index).encode())
    problem = {"v0\x00": "contains NUL", "": "empty"}.get(name, "contains a path separator")
    expected = (f"{remote_uri}/index.json: unsafe version name {name!r} ({problem}); refused before it is used as a "
                "path — the store or checkpoint is damaged or not trustworthy")
    with pytest.raises(CheckpointError) as info:
        fetch_checkpoint(f"{remote_uri}:evil", log=lambda m: None)
    assert str(info.value) == expected
    with pytest.raises(CheckpointError) as info:
        open_store(remote_uri)[0].download(None, tmp_path / "dest", log=lambda m: None)
    assert str(info.value) == expected
    assert sorted(victim.iterdir()) == [victim / "notes.txt"]
    assert (victim / "notes.txt").read_text() == "the user's notes\n"
    assert not (tmp_path / "dest").exists()


def test_remote_publish_refuses_a_symlinked_manifest_file(remote_uri, tmp_path):
    ckpt = make_checkpoint(tmp_path / "out", 10)
    host = tmp_path / "host-copy.json"
    host.write_bytes((ckpt / "trainer_state.json").read_bytes())  # same bytes: only the link is wrong
    (ckpt / "trainer_state.json").unlink()
    (ckpt / "trainer_state.json").symlink_to(host)
    store, _ = open_store(remote_uri)
    with pytest.raises(CheckpointError) as info:
        store.publish(ckpt, ["best"])
    assert str(info.value) == (
        f"cannot publish {ckpt}: trainer_state.json is a symbolic link (to {host}); a store upload takes only the "
        "checkpoint's own files — replace the link by a copy of the file")
    assert store.list_versions() == [] and not store.fs.exists(f"{store.root}/staging")
