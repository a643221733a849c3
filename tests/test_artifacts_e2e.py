"""Checkpoint artifacts in training, end to end: train → upload → delete the output → resume from the store.

Real components wherever they run here: local store dirs, gs:// on gcp-storage-emulator, s3:// on moto, and
the real wandb SDK — online against the loopback W&B server of tests/wandb_server, and offline (what a later
`wandb sync` would upload).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading

import pytest
from ckpt_helpers import make_checkpoint
from test_checkpoint_stores_cloud import gcs_server, s3_server  # noqa: F401 - loopback servers as fixtures
from train_helpers import StopAt, adapter_weights, max_weight_diff, micro_config, run, step_losses
from transformers import TrainerCallback
from wandb_server import TEST_API_KEY
from wandb_server.fixtures import wandb_server  # noqa: F401 - loopback W&B server as a fixture

from dylora_moe.checkpoint import upload_setup
from dylora_moe.checkpoint.manifest import verify_checkpoint
from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore
from dylora_moe.checkpoint.stores.uri import open_store
from dylora_moe.checkpoint.uploader import BackgroundUploader
from dylora_moe.cli import main
from dylora_moe.errors import UserError
from dylora_moe.training.run import train
from dylora_moe.training.tracking import Tracking, setup_tracking

FAKE_KEY = "k" * 32 + "dyloraSECRET"
METADATA_KEYS = {"global_step", "epoch", "best_metric", "best_global_step", "run_id", "run_name", "base_model",
                 "num_experts", "lora_r", "maturity", "datasets", "dataset_fingerprint", "world_size"}


@pytest.fixture(autouse=True)
def artifact_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))


def quick(base, out, **overrides):
    """5 optimizer steps in one epoch, checkpoints at 3 and 5."""
    return micro_config(base, out, max_examples=50, num_epochs=1, **overrides)


def aliases_by_step(store) -> dict[int, list[str]]:
    return {v.metadata["global_step"]: v.aliases for v in store.list_versions()}


def resume_events(result) -> list[dict]:
    return [e for e in result.log_history if e.get("event") == "resume"]


# ---------------------------------------------------------------- exact continuation through a store
@pytest.mark.slow
def test_local_store_exact_continuation_after_deleting_output(base, tmp_path):
    reference = run(micro_config(base, tmp_path / "reference"))
    store_uri, out = str(tmp_path / "store"), tmp_path / "out"
    first = run(micro_config(base, out, checkpoint_store=store_uri), stop_at=5)
    assert first.exit_code == 0 and first.global_step == 5
    store, _ = open_store(store_uri)
    versions = store.list_versions()
    assert [(v.version, v.aliases) for v in versions] == [
        ("v0", ["best", "step-3"]), ("v1", ["final", "latest", "step-5"]),
    ]
    meta = versions[1].metadata
    assert METADATA_KEYS <= set(meta)
    assert (meta["global_step"], meta["num_experts"], meta["lora_r"], meta["datasets"]) == (5, 4, 16, ["code_alpaca"])
    assert meta["maturity"] == [False] * 4 and meta["base_model"] == base and meta["best_global_step"] == 3
    assert meta["epoch"] == pytest.approx(5 / 6) and meta["best_metric"] == pytest.approx(first.best_metric)

    shutil.rmtree(out)
    resumed = run(micro_config(base, out, resume_from_checkpoint=store_uri, checkpoint_store=store_uri))
    assert resumed.global_step == reference.global_step == 12
    events = resume_events(resumed)
    assert len(events) == 1 and events[0]["step"] == 5 and events[0]["exact"] is True
    expected, got = step_losses(reference), step_losses(resumed)
    assert sorted(got) == list(range(1, 13))  # history before the interruption comes from the checkpoint
    for step in range(6, 13):
        assert abs(got[step] - expected[step]) <= 1e-6, (step, got[step], expected[step])
    assert max_weight_diff(adapter_weights(resumed.last_checkpoint),
                           adapter_weights(reference.last_checkpoint)) <= 1e-6
    # the resumed run keeps publishing into the same store: new versions, `latest`/`final` moved to step 12
    after = aliases_by_step(store)
    assert sorted(after) == [3, 5, 6, 9, 12]
    assert {"latest", "final", "step-12"} <= set(after[12]) and after[5] == ["step-5"]
    best_step = int(resumed.best_checkpoint.rsplit("-", 1)[1])
    assert "best" in after[best_step] and sum("best" in a for a in after.values()) == 1


# ---------------------------------------------------------------- round trip per backend
@pytest.mark.parametrize("backend", ["gs", "s3", "wandb-flag", "wandb-env"])
def test_round_trip_and_resume_per_backend(backend, base, tmp_path, request, monkeypatch):
    if backend == "gs":
        request.getfixturevalue("gcs_server")
        store_uri = resume = "gs://ckpts/e2e/run"
    elif backend == "s3":
        request.getfixturevalue("s3_server")
        store_uri, resume = "s3://ckpts/e2e/run", "s3://ckpts/e2e/run:step-3"
    else:
        request.getfixturevalue("wandb_server")
        store_uri, resume = "wandb://ent/proj/best-dylora-model-full", "ent/proj/best-dylora-model-full:latest"
    out = tmp_path / "out"
    first = run(quick(base, out, checkpoint_store=store_uri), stop_at=3)
    assert first.exit_code == 0 and first.global_step == 3
    store, _ = open_store(store_uri)
    assert aliases_by_step(store) == {3: ["best", "final", "latest", "step-3"]}

    shutil.rmtree(out)
    overrides = {"resume_from_checkpoint": resume}
    if backend == "wandb-flag":
        overrides = {"wandb_checkpoint_artifact": resume}
    elif backend == "wandb-env":
        overrides = {}
        monkeypatch.setenv("WANDB_CHECKPOINT_ARTIFACT", resume)
    resumed = run(quick(base, out, checkpoint_store=store_uri, **overrides))
    assert resumed.exit_code == 0 and resumed.global_step == 5
    events = resume_events(resumed)
    assert len(events) == 1 and events[0]["step"] == 3 and events[0]["exact"] is True
    assert sorted(step_losses(resumed)) == [1, 2, 3, 4, 5]
    final = aliases_by_step(store)
    assert sorted(final) == [3, 5] and {"final", "latest", "step-5"} <= set(final[5])


# ---------------------------------------------------------------- W&B SDK online: auto resume, other project
@pytest.mark.slow
def test_wandb_auto_first_run_then_resume_with_store_in_another_project(base, wandb_server, tmp_path):
    """The training run logs to ent/P, checkpoints go to ent/Q: first spot run starts fresh, the next resumes."""
    store_uri = "wandb://ent/Q/best-dylora-model-full"
    out, logs = tmp_path / "out", []
    cfg = dict(checkpoint_store=store_uri, resume_from_checkpoint="auto", report_to="wandb", wandb_project="P",
               wandb_entity="ent", run_name="spot")
    first = train(quick(base, out, **cfg), log=logs.append, extra_callbacks=[StopAt(3)])
    assert first.exit_code == 0 and first.global_step == 3
    assert f"[resume] auto: no checkpoint found in {out} or {store_uri}; starting fresh" in logs
    assert [m for m in logs if m.startswith("[upload] uploaded")] == [
        f"[upload] uploaded checkpoint-3 to {store_uri} as v0 (latest, step-3, best)",
        f"[upload] uploaded checkpoint-3 to {store_uri} as v0 (latest, final)",
    ]
    store, _ = open_store(store_uri)
    assert aliases_by_step(store) == {3: ["best", "final", "latest", "step-3"]}
    assert ("ent", "P", "best-dylora-model-full") not in wandb_server.state.collections

    shutil.rmtree(out)
    logs.clear()
    resumed = train(quick(base, out, **cfg), log=logs.append)
    assert resumed.exit_code == 0 and resumed.global_step == 5
    assert f"[resume] auto: newest checkpoint is {store_uri}:v0 (step 3) in the store" in logs
    events = resume_events(resumed)
    assert len(events) == 1 and events[0]["step"] == 3 and events[0]["exact"] is True
    assert sorted(aliases_by_step(store)) == [3, 5]
    training_runs = [r for r in wandb_server.state.runs.values() if r.project == "P"]
    v0 = wandb_server.state.collections[("ent", "Q", "best-dylora-model-full")].versions[0]
    assert [r.used for r in training_runs] == [[], [v0.id]]  # the resumed run shows where it came from


@pytest.mark.slow
def test_wandb_preempted_run_uploads_its_last_checkpoint_and_a_new_vm_resumes(base, wandb_server, tmp_path):
    """A real subprocess gets SIGTERM mid-run: it saves, uploads online, exits 143; an empty VM resumes via auto."""
    import signal
    import subprocess
    import sys

    from train_helpers import SRC, cli_args, is_loss_line

    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    store_uri = "wandb://ent/proj/spot"
    store_args = ("--checkpoint_store", store_uri, "--resume_from_checkpoint", "auto")
    proc = subprocess.Popen([sys.executable, "-m", "dylora_moe", *cli_args(base, tmp_path / "vm1", *store_args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, losses = [], 0
    for line in proc.stdout:
        lines.append(line)
        losses += is_loss_line(line)
        if losses >= 4:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    log = "".join(lines) + rest
    assert proc.returncode == 143, log[-2000:]
    stopped_at = int(next((tmp_path / "vm1").glob("checkpoint-*")).name.split("-")[1])
    assert f"uploaded checkpoint-{stopped_at} to {store_uri} as v0" in log, log[-2000:]
    store, _ = open_store(store_uri)
    assert [v.metadata["global_step"] for v in store.list_versions()] == [stopped_at]

    resumed = subprocess.run([sys.executable, "-m", "dylora_moe", *cli_args(base, tmp_path / "vm2", *store_args)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"auto: newest checkpoint is {store_uri}:v0 (step {stopped_at}) in the store" in resumed.stderr
    assert max(v.metadata["global_step"] for v in store.list_versions()) == 12


# ---------------------------------------------------------------- W&B's own download tools
def wandb_cli_get(path: str, root) -> None:
    """`wandb artifact get` in a subprocess: the real CLI, pointed at the loopback server by the fixture's env."""
    cli = os.path.join(os.path.dirname(sys.executable), "wandb")
    done = subprocess.run([cli, "artifact", "get", "--root", str(root), path], env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_checkpoint_fetched_with_wandb_artifact_get_verifies_and_resumes(base, wandb_server, tmp_path, capsys):
    """W&B's tools fetch every uploaded file but never the COMPLETE marker: the manifest verifies it instead."""
    store_uri = "wandb://ent/proj/best-dylora-model-full"
    out = tmp_path / "out"
    assert run(quick(base, out, checkpoint_store=store_uri), stop_at=3).global_step == 3
    got = tmp_path / "got"
    wandb_cli_get("ent/proj/best-dylora-model-full:latest", got)
    assert (got / "manifest.json").is_file() and not (got / "COMPLETE").exists()
    capsys.readouterr()
    assert main(["checkpoints", "verify", str(got)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"OK {got}: ")
    assert captured.err == (f"checkpoint {got} has no COMPLETE marker (as when fetched with W&B's own tools); "
                            "verified by its manifest.json instead: all "
                            f"{len(verify_checkpoint(got, require_complete=False)['files'])} files present with "
                            "matching sha256\n")

    import wandb

    api_dir = wandb.Api().artifact("ent/proj/best-dylora-model-full:latest").download(root=str(tmp_path / "api"))
    assert main(["checkpoints", "verify", api_dir]) == 0

    shutil.rmtree(out)
    logs: list[str] = []
    resumed = train(quick(base, out, resume_from_checkpoint=str(got)), log=logs.append)
    assert resumed.exit_code == 0 and resumed.global_step == 5
    events = resume_events(resumed)
    assert len(events) == 1 and events[0]["step"] == 3 and events[0]["exact"] is True
    assert any("verified by its manifest.json instead" in m for m in logs), logs


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["removed", "altered"])
def test_wandb_artifact_get_download_with_a_missing_or_changed_file_is_refused(damage, wandb_server, tmp_path,
                                                                               capsys):
    store = open_store("wandb://ent/proj/best-dylora-model-full")[0]
    store.publish(make_checkpoint(tmp_path / "out", 3), ["latest"])
    store.close()
    got = tmp_path / "got"
    wandb_cli_get("ent/proj/best-dylora-model-full:latest", got)
    victim = got / "adapter.safetensors"
    if damage == "removed":
        victim.unlink()
        reason = "listed in the manifest is missing"
    else:
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0xFF
        victim.write_bytes(bytes(data))
        reason = "fails its sha256 check (corrupted)"
    capsys.readouterr()
    assert main(["checkpoints", "verify", str(got)]) == 2
    assert capsys.readouterr().err == f"error: checkpoint {got}: file adapter.safetensors {reason}\n"
    assert main(["train", "--resume_from_checkpoint", str(got), "--output_dir", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.endswith(f"error: checkpoint {got}: file adapter.safetensors {reason}\n")


# ---------------------------------------------------------------- W&B SDK (offline) in training
def test_wandb_offline_logs_moe_metrics_stages_artifacts_and_never_writes_the_key(base, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    for var, sub in (("WANDB_DIR", "wdir"), ("WANDB_DATA_DIR", "wdata"), ("WANDB_CACHE_DIR", "wcache"),
                     ("WANDB_CONFIG_DIR", "wconfig")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    import wandb

    wandb.teardown()  # the SDK keeps its settings (WANDB_DIR…) per process until torn down
    logs: list[str] = []
    result = train(quick(base, tmp_path / "out", report_to="wandb", wandb_project="P", wandb_entity="ent",
                         run_name="e2e-offline"), log=logs.append)
    assert result.exit_code == 0 and result.global_step == 5
    # the W&B settings stay with this run: a later run in the same process must not turn W&B on by itself
    assert "WANDB_PROJECT" not in os.environ and "WANDB_ENTITY" not in os.environ
    # default store: the active run's project, artifact name of the seed
    assert any(m.endswith("(offline); checkpoints -> wandb://ent/P/best-dylora-model-full") for m in logs), logs
    staged = [m for m in logs if m.startswith("[upload] uploaded")]
    assert staged == [
        f"[upload] uploaded checkpoint-{s} to wandb://ent/P/best-dylora-model-full as offline ({a})"
        for s, a in ((3, "latest, step-3, best"), (5, "latest, step-5, best"), (5, "latest, final"))
    ]
    run_files = list((tmp_path / "wdir" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    record = run_files[0].read_bytes()
    metrics = ["loss", "lm_loss", "balance_loss", "routing_entropy", "learning_rate"]
    metrics += [f"expert_usage_{e}" for e in range(4)]
    for key in [f"train/{m}" for m in metrics] + ["eval/loss", "eval/routing_entropy", "eval/expert_usage_3"]:
        assert key.encode() in record, key
    for needle in (b"best-dylora-model-full", b"dylora-moe-checkpoint", b"step-3", b"step-5", b"final", b"best",
                   b"adapter_model.safetensors", b"optimizer.pt", b"manifest.json", b"dataset_fingerprint",
                   b"e2e-offline"):
        assert needle in record, needle
    captured = capfd.readouterr()
    assert FAKE_KEY not in captured.out + captured.err + "\n".join(logs)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "run_config.json" for p in written) and any(p.suffix == ".wandb" for p in written)
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
    assert not list((tmp_path / "out").glob(".upload-*"))  # snapshots are removed once staged


# ---------------------------------------------------------------- one-line errors before any training
@pytest.mark.slow
@pytest.mark.parametrize("case", ["no-key", "version-not-found", "collection-not-found", "malformed", "offline"])
def test_wandb_resume_errors_are_one_line_before_training(case, wandb_server, tmp_path, monkeypatch, capsys):
    seed = open_store("wandb://ent/proj/ckpt")[0]
    seed.publish(make_checkpoint(tmp_path / "src", 10), ["step-10"])
    seed.close()
    artifact = {"no-key": "ent/proj/ckpt:latest", "version-not-found": "ent/proj/ckpt:v3",
                "collection-not-found": "ent/proj/nope:latest", "malformed": "ent/proj", "offline": "ent/proj/ckpt:v0"}
    expected = {
        "no-key": "Failed to download W&B artifact ent/proj/ckpt:latest: WANDB_API_KEY is not set and `wandb login` "
        f"has no key for {wandb_server.base_url}; export WANDB_API_KEY=<key from https://wandb.ai/authorize> or run "
        "`wandb login`",
        "version-not-found": "Failed to download W&B artifact ent/proj/ckpt:v3: version or alias 'v3' not found; "
        "existing versions: v0 (latest, step-10)",
        "collection-not-found": "Failed to download W&B artifact ent/proj/nope:latest: artifact ent/proj/nope not "
        "found (no versions of type dylora-moe-checkpoint); check entity, project and name",
        "malformed": "Failed to download W&B artifact 'ent/proj': malformed path; expected entity/project/name:version "
        "(for example user/project/best-dylora-model-full:v0 or :latest)",
        "offline": "Failed to download W&B artifact ent/proj/ckpt:v0: resuming from W&B needs online mode but "
        "WANDB_MODE=offline; unset WANDB_MODE (or set WANDB_MODE=online)",
    }[case]
    if case == "no-key":
        monkeypatch.delenv("WANDB_API_KEY")
    out = tmp_path / "out"
    argv = ["train", "--output_dir", str(out), "--report_to", "none"]
    if case == "offline":  # with W&B logging on: the error comes before a W&B run is opened
        monkeypatch.setenv("WANDB_MODE", "offline")
        argv = ["train", "--output_dir", str(out), "--report_to", "wandb", "--wandb_project", "P",
                "--resume_from_checkpoint", f"wandb://{artifact[case]}"]
    elif case in ("malformed", "collection-not-found"):
        monkeypatch.setenv("WANDB_CHECKPOINT_ARTIFACT", artifact[case])
    else:
        argv += ["--wandb_checkpoint_artifact", artifact[case]]
    runs_before = len(wandb_server.state.runs)
    run_dirs_before = list((tmp_path / "wdir").glob("wandb/*run-*"))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {expected}\n"
    assert TEST_API_KEY not in err
    assert not out.exists() or not list(out.glob("checkpoint-*"))
    assert len(wandb_server.state.runs) == runs_before  # no W&B run was opened
    assert list((tmp_path / "wdir").glob("wandb/*run-*")) == run_dirs_before


def test_checkpoint_store_must_not_name_a_version(tmp_path):
    cfg = micro_config("unused", tmp_path / "out", checkpoint_store=f"{tmp_path}/store:best")
    with pytest.raises(UserError, match=r"names a version/alias \('best'\); give the store only"):
        setup_tracking(cfg, log=lambda m: None)


# ---------------------------------------------------------------- uploads: main process only, rotation, failures
def test_only_the_main_process_uploads(tmp_path):
    out, store_uri = tmp_path / "out", str(tmp_path / "store")
    make_checkpoint(out, 10)
    from types import SimpleNamespace

    state = SimpleNamespace(global_step=10, best_global_step=None, is_world_process_zero=True)
    for is_main in (False, True):
        callback = Tracking(store_uri=store_uri).upload_callback(is_main, log=lambda m: None)
        callback.on_save(SimpleNamespace(output_dir=str(out)), state, None)
        assert Tracking(store_uri=store_uri).finish(callback) == []
        assert len(FsspecStore(store_uri).list_versions()) == int(is_main)


class ReleaseAtTrainEnd(TrainerCallback):
    def __init__(self, gate: threading.Event):
        self.gate = gate

    def on_train_end(self, args, state, control, **kwargs):
        self.gate.set()


def test_rotation_cannot_break_pending_uploads(base, tmp_path, monkeypatch):
    """save_total_limit=1 deletes every older checkpoint while all uploads are still queued behind a gate."""
    gate, original = threading.Event(), FsspecStore.publish
    rotated_before_upload = []

    def gated_publish(self, local_dir, aliases=(), metadata=None):
        assert gate.wait(120), "train end never released the uploads"
        step = metadata["global_step"]
        rotated_before_upload.append(not (tmp_path / "out" / f"checkpoint-{step}").exists())
        return original(self, local_dir, aliases, metadata)

    monkeypatch.setattr(FsspecStore, "publish", gated_publish)
    store_uri = str(tmp_path / "store")
    cfg = quick(base, tmp_path / "out", checkpoint_store=store_uri, save_steps=1, eval_steps=100, save_total_limit=1)
    result = train(cfg, log=lambda m: None, extra_callbacks=[ReleaseAtTrainEnd(gate)])
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-5", "trainer_state.json"]
    assert rotated_before_upload == [True, True, True, True, False, False]
    store, _ = open_store(store_uri)
    assert aliases_by_step(store) == {1: ["step-1"], 2: ["step-2"], 3: ["step-3"], 4: ["step-4"],
                                      5: ["best", "final", "latest", "step-5"]}  # evaluated at the end
    for info in store.list_versions():
        verify_checkpoint(store.download(info.version, log=lambda m: None))


def test_failed_uploads_are_retried_reported_and_exit_3(base, tmp_path, monkeypatch, capsys):
    attempts = []

    def failing_publish(self, local_dir, aliases=(), metadata=None):
        attempts.append(metadata["global_step"])
        raise OSError("bucket quota exceeded")

    monkeypatch.setattr(FsspecStore, "publish", failing_publish)
    monkeypatch.setattr(upload_setup, "BackgroundUploader", functools.partial(BackgroundUploader, sleep=lambda s: None))
    logs: list[str] = []
    result = train(quick(base, tmp_path / "out", checkpoint_store=str(tmp_path / "store")), log=logs.append)
    assert result.exit_code == upload_setup.EXIT_UPLOAD_FAILED == 3 and result.global_step == 5
    assert attempts == [3] * 4 + [5] * 4 + [5] * 4  # every job retried 4 times, all waited for before exit
    out = tmp_path / "out"
    assert [m for m in logs if "FAILED" in m or "failed after" in m] == [
        f"[upload] upload of checkpoint-3 to {tmp_path}/store failed after 4 attempts: bucket quota exceeded",
        f"[upload] upload of checkpoint-5 to {tmp_path}/store failed after 4 attempts: bucket quota exceeded",
        f"[upload] upload of checkpoint-5 to {tmp_path}/store failed after 4 attempts: bucket quota exceeded",
        f"[upload] checkpoint upload FAILED: {out}/checkpoint-3 (latest, step-3, best) after 4 attempts: "
        "bucket quota exceeded",
        f"[upload] checkpoint upload FAILED: {out}/checkpoint-5 (latest, step-5, best) after 4 attempts: "
        "bucket quota exceeded",
        f"[upload] checkpoint upload FAILED: {out}/checkpoint-5 (final) after 4 attempts: bucket quota exceeded",
        "[train] 3 checkpoint upload(s) failed after retries (see the [upload] lines); exit code 3",
    ]
    assert not list(out.glob(".upload-*"))


# ---------------------------------------------------------------- live W&B (opt-in)
@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("WANDB_API_KEY") or not os.environ.get("DYLORA_MOE_LIVE_WANDB_PROJECT"),
                    reason="live W&B test: set WANDB_API_KEY and DYLORA_MOE_LIVE_WANDB_PROJECT=entity/project")
def test_live_wandb_train_upload_resume(base, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    entity, project = os.environ["DYLORA_MOE_LIVE_WANDB_PROJECT"].split("/")
    store_uri = f"wandb://{entity}/{project}/dylora-moe-live-e2e"
    out = tmp_path / "out"
    first = run(quick(base, out, checkpoint_store=store_uri), stop_at=3)
    assert first.exit_code == 0
    shutil.rmtree(out)
    resumed = run(quick(base, out, wandb_checkpoint_artifact=f"{entity}/{project}/dylora-moe-live-e2e:latest"))
    assert resumed.global_step == 5 and resume_events(resumed)[0]["step"] == 3
