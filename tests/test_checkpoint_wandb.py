"""W&B checkpoint store: fail-fast errors, real-SDK offline staging, and fast store-logic checks against the
in-process fake at the backend seam (the real SDK online is tested in test_wandb_sdk_online.py)."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from ckpt_helpers import make_checkpoint
from fake_wandb import FakeWandbServer

from dylora_moe.checkpoint.manifest import CheckpointError, verify_checkpoint
from dylora_moe.checkpoint.resolve import fetch_checkpoint
from dylora_moe.checkpoint.stores import wandb_store
from dylora_moe.checkpoint.stores.uri import open_store
from dylora_moe.checkpoint.stores.wandb_store import WandbStore, check_wandb_download_preconditions
from dylora_moe.cli import main
from dylora_moe.errors import UserError

FAKE_KEY = "k" * 32 + "dyloraSECRET"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online mode with a (fake) key, and the fake W&B server side installed at the backend seam."""
    server = FakeWandbServer()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(wandb_store, "BACKEND", server)
    return server


def test_malformed_path_error():
    with pytest.raises(UserError) as info:
        check_wandb_download_preconditions("wandb://user/project")
    assert str(info.value) == (
        "Failed to download W&B artifact 'wandb://user/project': malformed path; expected entity/project/name:version "
        "(for example user/project/best-dylora-model-full:v0 or :latest)"
    )


def test_offline_mode_error(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(UserError) as info:
        check_wandb_download_preconditions("user/project/best-dylora-model-full:v0")
    assert str(info.value) == (
        "Failed to download W&B artifact user/project/best-dylora-model-full:v0: resuming from W&B needs online "
        "mode but WANDB_MODE=offline; unset WANDB_MODE (or set WANDB_MODE=online)"
    )


def test_missing_key_error_via_cli(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com:8443")
    code = main(["checkpoints", "download", "user/project/best-dylora-model-full:latest", str(tmp_path / "d")])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: Failed to download W&B artifact user/project/best-dylora-model-full:latest: WANDB_API_KEY is not "
        "set and `wandb login` has no key for https://wandb.example.com:8443; export WANDB_API_KEY=<key from "
        "https://wandb.ai/authorize> or run `wandb login`\n"
    )
    # what `wandb login` writes for that server: host:port, found the way the SDK finds it
    (tmp_path / "netrc").write_text("machine wandb.example.com:8443\n  login user\n  password " + "s" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_store.wandb_has_credentials()


def test_uri_forms_open_wandb_store(online):
    store, ref = open_store("wandb://ent/proj/best-dylora-model-full:v3")
    assert isinstance(store, WandbStore) and (store.path, ref) == ("ent/proj/best-dylora-model-full", "v3")
    store, ref = open_store("ent/proj/model:latest")
    assert (store.uri, ref) == ("wandb://ent/proj/model", "latest")


def test_versioning_rules_and_verified_download(online, tmp_path):
    store = WandbStore("ent", "proj", "ckpt")
    c10, c20 = make_checkpoint(tmp_path / "out", 10), make_checkpoint(tmp_path / "out", 20)
    assert store.publish(c10, ["step-10", "best"]).version == "v0"
    assert store.publish(c20, ["step-20"]).version == "v1"
    assert store.publish(c20, ["final"]).version == "v1"  # identical content: no new version
    assert online.uploads == 2
    assert [(v.version, v.aliases) for v in store.list_versions()] == [
        ("v0", ["best", "step-10"]),
        ("v1", ["final", "latest", "step-20"]),
    ]
    got = fetch_checkpoint("ent/proj/ckpt:best", log=lambda m: None)
    assert verify_checkpoint(got)["metadata"]["global_step"] == 10
    assert fetch_checkpoint("wandb://ent/proj/ckpt:v0", log=lambda m: None) == got
    assert online.downloads == 1  # second resolve used the verified cache
    latest = store.download(None, tmp_path / "latest", log=lambda m: None)
    assert verify_checkpoint(latest)["metadata"]["global_step"] == 20


def test_not_found_errors_list_what_exists(online, tmp_path):
    store = WandbStore("ent", "proj", "ckpt")
    store.publish(make_checkpoint(tmp_path / "out", 10), ["best"])
    with pytest.raises(CheckpointError) as info:
        fetch_checkpoint("ent/proj/ckpt:v9", log=lambda m: None)
    assert str(info.value) == (
        "Failed to download W&B artifact ent/proj/ckpt:v9: version or alias 'v9' not found; "
        "existing versions: v0 (best, latest)"
    )
    with pytest.raises(CheckpointError) as info:
        fetch_checkpoint("ent/proj/other:latest", log=lambda m: None)
    assert str(info.value) == (
        "Failed to download W&B artifact ent/proj/other:latest: artifact ent/proj/other not found "
        "(no versions of type dylora-moe-checkpoint); check entity, project and name"
    )


def test_corruption_in_transit_is_named(online, tmp_path):
    store = WandbStore("ent", "proj", "ckpt")
    store.publish(make_checkpoint(tmp_path / "out", 10))
    online.tamper["adapter.safetensors"] = b"\0" * (256 * 11)
    with pytest.raises(CheckpointError, match=r"failed verification: file adapter\.safetensors fails its sha256"):
        store.download("latest", tmp_path / "d", log=lambda m: None)


def test_key_never_in_error(online, tmp_path, monkeypatch):
    from wandb.errors import CommError

    def leaky(path):
        raise CommError(f"401 unauthorized for key {FAKE_KEY}")

    monkeypatch.setattr(online, "list_versions", leaky)
    with pytest.raises(CheckpointError) as info:
        WandbStore("ent", "proj", "ckpt").resolve("latest")
    assert FAKE_KEY not in str(info.value) and "401 unauthorized for key ***" in str(info.value)


def test_offline_sdk_stages_artifact_in_run_dir(tmp_path, monkeypatch):
    """Real SDK, WANDB_MODE=offline: the artifact (files, aliases, metadata) lands in the offline run for sync."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    for var, sub in (("WANDB_DIR", "wdir"), ("WANDB_DATA_DIR", "wdata"), ("WANDB_CACHE_DIR", "wcache"),
                     ("WANDB_CONFIG_DIR", "wconfig")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    ckpt = make_checkpoint(tmp_path / "out", 10)
    wandb.teardown()  # settings (WANDB_DIR…) are kept per process until torn down
    run = wandb.init(project="proj", entity="ent", name="unit-offline")
    try:
        info = WandbStore("ent", "proj", "ckpt").publish(ckpt, ["step-10", "best"])
    finally:
        run.finish()
        wandb.teardown()  # finish() returns before the offline run file is written; teardown waits for it
    assert info.version == "offline" and info.aliases == ["latest", "step-10", "best"]
    run_files = list((tmp_path / "wdir" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    record = run_files[0].read_bytes()
    for needle in (b"ckpt", b"dylora-moe-checkpoint", b"step-10", b"best", b"manifest.json",
                   b"experts/expert_0.bin", info.digest.encode()):
        assert needle in record, needle
    for rel in ("adapter.safetensors", "experts/expert_0.bin", "trainer_state.json", "manifest.json"):
        md5 = base64.b64encode(hashlib.md5((ckpt / rel).read_bytes()).digest())
        assert md5 in record, rel  # W&B's per-file digest of each staged file
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("WANDB_API_KEY") or not os.environ.get("DYLORA_MOE_LIVE_WANDB_PROJECT"),
                    reason="live W&B test: set WANDB_API_KEY and DYLORA_MOE_LIVE_WANDB_PROJECT=entity/project")
def test_live_wandb_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))
    entity, project = os.environ["DYLORA_MOE_LIVE_WANDB_PROJECT"].split("/")
    store = WandbStore(entity, project, "dylora-moe-live-test")
    ckpt = make_checkpoint(tmp_path / "out", 10, payload=os.urandom(512))
    info = store.publish(ckpt, ["live-test"])
    assert info.version.startswith("v")
    got = fetch_checkpoint(f"{entity}/{project}/dylora-moe-live-test:{info.version}", log=lambda m: None)
    assert (got / "adapter.safetensors").read_bytes() == (ckpt / "adapter.safetensors").read_bytes()


@pytest.mark.parametrize("version", ["v0/../../../victim", "/abs/victim", "v0\x00", ""])
def test_unsafe_version_from_the_wandb_server_is_one_error_and_touches_nothing(online, tmp_path, version):
    """What the server answers is untrusted: a version label must not pick a local directory to replace."""
    victim = tmp_path / "victim"  # <cache>/<store>/v0/../../../victim is this directory
    victim.mkdir()
    (victim / "notes.txt").write_text("the user's notes\n")
    version = str(victim) if version == "/abs/victim" else version
    WandbStore("ent", "proj", "ckpt").publish(make_checkpoint(tmp_path / "out", 10), ["best"])
    online.collections["ent/proj/ckpt"][0]["version"] = version
    with pytest.raises(CheckpointError) as info:
        fetch_checkpoint("ent/proj/ckpt:best", log=lambda m: None)
    assert str(info.value).startswith(f"wandb://ent/proj/ckpt: unsafe version name {version!r} (")
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]
    assert online.downloads == 0


def test_unsafe_alias_is_refused_before_upload_and_from_the_server(online, tmp_path):
    ckpt = make_checkpoint(tmp_path / "out", 10)
    with pytest.raises(CheckpointError, match=r"^cannot publish to wandb://ent/proj/ckpt: unsafe alias 'a/\.\.' \("):
        WandbStore("ent", "proj", "ckpt").publish(ckpt, ["a/.."])
    assert online.uploads == 0
    WandbStore("ent", "proj", "ckpt").publish(ckpt, ["best"])
    online.collections["ent/proj/ckpt"][0]["aliases"].add("bad\x00alias")
    with pytest.raises(CheckpointError, match=r"^wandb://ent/proj/ckpt: unsafe alias 'bad\\x00alias' \(contains NUL\)"):
        WandbStore("ent", "proj", "ckpt").list_versions()
