"""The W&B store with the real wandb SDK in online mode, against the loopback W&B server (tests/wandb_server)."""

from __future__ import annotations

import time

import pytest
from ckpt_helpers import make_checkpoint
from wandb_server import TEST_API_KEY
from wandb_server.fixtures import wandb_server  # noqa: F401 - fixture

from dylora_moe.checkpoint.manifest import CheckpointError, verify_checkpoint
from dylora_moe.checkpoint.resolve import fetch_checkpoint
from dylora_moe.checkpoint.stores.wandb_store import WandbStore, check_wandb_download_preconditions
from dylora_moe.checkpoint.upload_setup import build_upload_callback
from dylora_moe.cli import main
from dylora_moe.training.tracking import sanitized_config

pytestmark = pytest.mark.slow


def quiet(_message):
    pass


def committed(server, path: str) -> list[tuple[str, list[str]]]:
    entity, project, name = path.split("/")
    collection = server.state.collections.get((entity, project, name))
    return [(a.version, collection.aliases_of(a)) for a in collection.versions] if collection else []


def test_versioning_rules_download_and_no_sdk_cache_copies(wandb_server, tmp_path, capsys):
    store = WandbStore("ent", "proj", "ckpt")
    c10, c20 = make_checkpoint(tmp_path / "out", 10), make_checkpoint(tmp_path / "out", 20)
    assert store.publish(c10, ["latest", "step-10", "best"]).version == "v0"
    assert store.publish(c20, ["latest", "step-20"]).version == "v1"
    assert store.publish(c20, ["final"]).version == "v1"  # identical content: the existing version
    assert [(v.version, v.aliases) for v in store.list_versions()] == [
        ("v0", ["best", "step-10"]), ("v1", ["final", "latest", "step-20"]),
    ]
    listed = wandb_server.operations.count("ProjectArtifacts")
    got = fetch_checkpoint("ent/proj/ckpt:best", log=quiet)
    assert wandb_server.operations.count("ProjectArtifacts") == listed  # a named alias is one query, no listing
    assert verify_checkpoint(got)["metadata"]["global_step"] == 10
    assert (got / "adapter.safetensors").read_bytes() == (c10 / "adapter.safetensors").read_bytes()
    latest = store.download(None, tmp_path / "latest", log=quiet)
    assert verify_checkpoint(latest)["metadata"]["global_step"] == 20
    store.close()
    capsys.readouterr()
    assert main(["checkpoints", "list", "wandb://ent/proj/ckpt"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[:3] for r in rows] == [["VERSION", "ALIASES", "STEP"], ["v0", "best,step-10", "10"],
                                             ["v1", "final,latest,step-20", "20"]]
    assert main(["checkpoints", "download", "wandb://ent/proj/ckpt:v0", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'cli'}\n"
    assert main(["checkpoints", "verify", "ent/proj/ckpt:final"]) == 0
    assert capsys.readouterr().out.startswith("OK ent/proj/ckpt:final: 3 files match the manifest")
    # neither uploads nor downloads left file copies in the SDK's cache (only its small checksum notes)
    cached = [p for p in (tmp_path / "wcache").rglob("*") if p.is_file() and "logs" not in p.parts]
    assert not [p for p in cached if "obj" in p.parts], cached
    assert not list((tmp_path / "wdata").rglob("*.safetensors"))  # no staging copies online


def test_first_run_no_versions_and_unknown_collection_is_one_line(wandb_server, tmp_path, capsys):
    assert WandbStore("ent", "proj", "nothing-yet").list_versions() == []
    assert WandbStore("nobody", "proj", "ckpt").list_versions() == []
    assert main(["checkpoints", "list", "wandb://ent/proj/unknown"]) == 0
    assert capsys.readouterr().out == "no versions in wandb://ent/proj/unknown\n"
    assert main(["checkpoints", "show", "wandb://ent/proj/unknown:latest"]) == 2
    assert capsys.readouterr().err == (
        "error: Failed to download W&B artifact ent/proj/unknown:latest: artifact ent/proj/unknown not found "
        "(no versions of type dylora-moe-checkpoint); check entity, project and name\n"
    )


def test_versions_land_in_the_store_project_not_the_runs(wandb_server, tmp_path):
    import wandb

    run = wandb.init(entity="ent", project="P", name="training")
    try:
        info = WandbStore("ent", "Q", "ckpt").publish(make_checkpoint(tmp_path / "out", 10), ["step-10"])
        same = WandbStore("ent", "P", "ckpt").publish(make_checkpoint(tmp_path / "out2", 20), ["step-20"])
    finally:
        run.finish()
    assert (info.version, same.version) == ("v0", "v0")
    assert committed(wandb_server, "ent/Q/ckpt") == [("v0", ["latest", "step-10"])]
    assert committed(wandb_server, "ent/P/ckpt") == [("v0", ["latest", "step-20"])]
    producer = wandb_server.state.collections[("ent", "P", "ckpt")].versions[0].run
    assert producer.name == run.id  # the training run logged what belongs to its own project


def test_no_active_run_one_upload_run_per_store_ignoring_env_run_id(wandb_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_RUN_ID", "trainingrun1")
    monkeypatch.setenv("WANDB_RESUME", "must")
    store = WandbStore("ent", "proj", "ckpt")
    for step in (1, 2, 3):
        store.publish(make_checkpoint(tmp_path / "out", step), [f"step-{step}"])
    store.close()
    runs = [r for r in wandb_server.state.runs.values() if r.job_type == "checkpoint-upload"]
    assert len(runs) == 1 and runs[0].name != "trainingrun1"
    assert [v for v, _ in committed(wandb_server, "ent/proj/ckpt")] == ["v0", "v1", "v2"]


def test_login_through_netrc_with_host_and_port(wandb_server, tmp_path, monkeypatch):
    store = WandbStore("ent", "proj", "ckpt")
    store.publish(make_checkpoint(tmp_path / "out", 10))
    store.close()
    monkeypatch.delenv("WANDB_API_KEY")
    host = wandb_server.base_url.split("//", 1)[1]  # 127.0.0.1:<port>, what `wandb login` writes
    (tmp_path / "netrc").write_text(f"machine {host}\n  login user\n  password {TEST_API_KEY}\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert check_wandb_download_preconditions("ent/proj/ckpt:latest")[:3] == ("ent", "proj", "ckpt")
    got = fetch_checkpoint("ent/proj/ckpt:latest", log=quiet)
    assert verify_checkpoint(got)["metadata"]["global_step"] == 10
    (tmp_path / "netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {TEST_API_KEY}\n")
    with pytest.raises(Exception, match=r"WANDB_API_KEY is not set and `wandb login` has no key for http://127"):
        check_wandb_download_preconditions("ent/proj/ckpt:latest")


def test_stalled_upload_is_bounded_and_reported(wandb_server, tmp_path, monkeypatch):
    """One upload request never answered: publish fails within the timeout, and the run still finishes."""
    monkeypatch.setenv("DYLORA_MOE_WANDB_UPLOAD_TIMEOUT", "3")
    store = WandbStore("ent", "proj", "ckpt")
    wandb_server.hold.set()  # blob uploads are never answered
    try:
        start = time.monotonic()
        with pytest.raises(CheckpointError, match=r"^Failed to upload W&B artifact ent/proj/ckpt: .*timed out"):
            store.publish(make_checkpoint(tmp_path / "out", 10))
        assert time.monotonic() - start < 30
        start = time.monotonic()
        store.close()  # finishing the upload run is bounded too (each transfer times out), so the process exits
        assert time.monotonic() - start < 60
    finally:
        wandb_server.hold.clear()


def test_metadata_made_json_safe(wandb_server, tmp_path):
    store = WandbStore("ent", "proj", "ckpt")
    ckpt = make_checkpoint(tmp_path / "out", 10, best_metric=float("inf"), epoch=float("nan"))
    assert store.publish(ckpt).version == "v0"
    meta = store.list_versions()[0].metadata
    assert (meta["best_metric"], meta["epoch"], meta["global_step"]) == ("inf", "nan", 10)
    store.close()


def test_resume_records_lineage_on_the_active_run(wandb_server, tmp_path):
    import wandb

    store = WandbStore("ent", "proj", "ckpt")
    store.publish(make_checkpoint(tmp_path / "out", 10))
    store.close()
    run = wandb.init(entity="ent", project="proj", name="resumed")
    try:
        fetch_checkpoint("wandb://ent/proj/ckpt:latest", log=quiet)
    finally:
        run.finish()
    artifact = wandb_server.state.collections[("ent", "proj", "ckpt")].versions[0]
    assert wandb_server.state.runs[("ent", "proj", run.id)].used == [artifact.id]


def test_server_failure_is_one_line_naming_the_artifact(wandb_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_X_GRAPHQL_RETRY_MAX", "0")
    store = WandbStore("ent", "proj", "ckpt")
    store.publish(make_checkpoint(tmp_path / "out", 10))
    store.close()
    import wandb

    wandb.teardown()
    wandb_server.fail_graphql.add("ProjectArtifacts")
    assert main(["checkpoints", "list", "wandb://ent/proj/ckpt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Failed to list W&B artifact ent/proj/ckpt: ") and err.count("\n") == 1, err
    assert TEST_API_KEY not in err


def test_disabled_mode_says_nothing_is_uploaded(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logs: list[str] = []
    assert build_upload_callback("wandb://ent/proj/ckpt", log=logs.append) is None
    assert logs == ["W&B is disabled (WANDB_MODE=disabled): checkpoints are not uploaded to wandb://ent/proj/ckpt; "
                    "they stay in --output_dir"]


def test_sanitized_config_keeps_token_counts_drops_secrets():
    config = {"eval_max_new_tokens": 64, "max_tokens": 8, "hf_token": "x", "wandb_api_key": "y", "secret": "z"}
    assert sanitized_config(config) == {"eval_max_new_tokens": 64, "max_tokens": 8}


def test_publish_uploads_only_the_manifest_files_and_refuses_a_symlinked_one(wandb_server, tmp_path):
    """The docs' recovery command on a checkpoint dir holding an extra file and a link to a host file."""
    from dylora_moe.checkpoint.stores.uri import open_store

    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST SECRET that must not leave the machine\n")
    ckpt = make_checkpoint(tmp_path / "out", 10)
    (ckpt / "extra.log").write_text("written after the save, not in the manifest\n")
    (ckpt / "link.txt").symlink_to(secret)
    store = open_store("wandb://ent/proj/ckpt")[0]
    assert store.publish(ckpt, ["latest"]).version == "v0"
    store.close()
    collection = wandb_server.state.collections[("ent", "proj", "ckpt")]
    uploaded = sorted(wandb_server.state.manifest_of(collection.versions[0])["contents"])
    assert uploaded == ["adapter.safetensors", "experts/expert_0.bin", "manifest.json", "trainer_state.json"]
    assert not [key for key, blob in wandb_server.state.blobs.items() if b"HOST SECRET" in blob]

    other = make_checkpoint(tmp_path / "out2", 20)
    host_copy = tmp_path / "host-state.json"
    host_copy.write_bytes((other / "trainer_state.json").read_bytes())  # same bytes: the manifest still verifies
    (other / "trainer_state.json").unlink()
    (other / "trainer_state.json").symlink_to(host_copy)
    with pytest.raises(CheckpointError) as info:
        WandbStore("ent", "proj", "ckpt").publish(other, ["latest"])
    assert str(info.value) == (
        f"cannot publish {other}: trainer_state.json is a symbolic link (to {host_copy}); a store upload takes only "
        "the checkpoint's own files — replace the link by a copy of the file")
    assert committed(wandb_server, "ent/proj/ckpt") == [("v0", ["latest"])]


def test_a_version_in_the_cache_is_not_resolved_again_an_alias_is(wandb_server, tmp_path):
    """Versions never change: a verified cached `:v0` resumes without a request; `:latest` moves, so it asks."""
    store = WandbStore("ent", "proj", "ckpt")
    store.publish(make_checkpoint(tmp_path / "out", 10), ["latest"])
    store.close()
    first = fetch_checkpoint("ent/proj/ckpt:v0", log=quiet)
    asked, served = len(wandb_server.operations), wandb_server.blob_bytes_served
    logs: list[str] = []
    assert fetch_checkpoint("ent/proj/ckpt:v0", log=logs.append) == first
    assert (len(wandb_server.operations), wandb_server.blob_bytes_served) == (asked, served)
    assert logs == [f"using verified copy of wandb://ent/proj/ckpt:v0 at {first}"]
    assert fetch_checkpoint("ent/proj/ckpt:latest", log=quiet) == first
    assert len(wandb_server.operations) > asked and wandb_server.blob_bytes_served == served
