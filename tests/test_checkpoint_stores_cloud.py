"""gs:// and s3:// stores against real protocol servers on loopback (gcp-storage-emulator, moto)."""

from __future__ import annotations

import os
import socket

import pytest
from ckpt_helpers import make_checkpoint

from dylora_moe.checkpoint.manifest import CheckpointError, verify_checkpoint
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
