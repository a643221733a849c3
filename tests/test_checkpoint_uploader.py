"""Background uploader (retry with backoff, failure report, main-process only) and the Trainer callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ckpt_helpers import make_checkpoint

from dylora_moe.checkpoint.manifest import COMPLETE_MARKER
from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore
from dylora_moe.checkpoint.upload_callback import CheckpointUploadCallback, save_aliases
from dylora_moe.checkpoint.uploader import BackgroundUploader


class FlakyStore(FsspecStore):
    """A real local store whose first `fail` publishes raise, like a dropped connection."""

    def __init__(self, uri, fail):
        super().__init__(uri)
        self.fail = fail
        self.calls = 0

    def publish(self, local_dir, aliases=(), metadata=None):
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError(f"connection reset (call {self.calls})")
        return super().publish(local_dir, aliases, metadata)


def test_retry_with_exponential_backoff_then_success(tmp_path):
    store = FlakyStore(str(tmp_path / "store"), fail=3)
    sleeps, logs = [], []
    up = BackgroundUploader(store, backoff_s=2, max_backoff_s=5, log=logs.append, sleep=sleeps.append)
    up.submit(make_checkpoint(tmp_path / "out", 10), ["step-10"])
    assert up.close() == []
    assert sleeps == [2, 4, 5]
    assert [v.version for v in up.published] == ["v0"]
    assert logs[0] == "upload of checkpoint-10 failed (attempt 1): connection reset (call 1); retrying in 2s"
    assert logs[-1] == f"uploaded checkpoint-10 to {store.uri} as v0 (latest, step-10)"


def test_failures_reported_after_all_attempts_and_queue_continues(tmp_path):
    store = FlakyStore(str(tmp_path / "store"), fail=2)
    up = BackgroundUploader(store, max_attempts=2, log=lambda m: None, sleep=lambda s: None)
    up.submit(make_checkpoint(tmp_path / "out", 10))
    up.submit(make_checkpoint(tmp_path / "out", 20))
    failures = up.wait()
    assert [(f.local_dir.name, f.attempts, f.error) for f in failures] == [
        ("checkpoint-10", 2, "connection reset (call 2)")
    ]
    assert [(v.version, v.metadata["global_step"]) for v in store.list_versions()] == [("v0", 20)]
    up.close()


def test_non_main_process_uploads_nothing(tmp_path):
    store = FsspecStore(str(tmp_path / "store"))
    up = BackgroundUploader(store, is_main_process=False)
    up.submit(make_checkpoint(tmp_path / "out", 10))
    assert up.close() == [] and store.list_versions() == []


def _state(step, best=None, main=True):
    return SimpleNamespace(global_step=step, best_global_step=best, is_world_process_zero=main)


def test_callback_aliases_best_final_and_metadata(tmp_path):
    out = tmp_path / "out"
    store = FsspecStore(str(tmp_path / "store"))
    up = BackgroundUploader(store, log=lambda m: None)
    cb = CheckpointUploadCallback(up, log=lambda m: None)
    args = SimpleNamespace(output_dir=str(out))
    make_checkpoint(out, 10)
    cb.on_save(args, _state(10, best=10), None)
    make_checkpoint(out, 20)
    cb.on_save(args, _state(20, best=10), None)
    cb.on_save(args, _state(30, best=10), None)  # not written / not complete: skipped
    make_checkpoint(out, 40)
    cb.on_save(args, _state(40, best=40), None)
    cb.on_save(args, _state(40, best=40, main=False), None)
    cb.on_train_end(args, _state(45, best=40), None)  # no checkpoint-45: final goes on the last upload
    assert up.close() == []
    assert [(v.version, v.aliases, v.metadata["global_step"]) for v in store.list_versions()] == [
        ("v0", ["step-10"], 10),
        ("v1", ["step-20"], 20),
        ("v2", ["best", "final", "latest", "step-40"], 40),
    ]
    assert store.resolve("best").metadata["maturity"] == [True, False, True]


def test_save_aliases():
    assert save_aliases(5, 5) == ["latest", "step-5", "best"]
    assert save_aliases(5, None) == ["latest", "step-5"]


def test_callback_skips_incomplete(tmp_path):
    out = tmp_path / "out"
    ckpt = make_checkpoint(out, 10)
    (ckpt / COMPLETE_MARKER).unlink()
    logs = []
    up = BackgroundUploader(FsspecStore(str(tmp_path / "store")))
    CheckpointUploadCallback(up, log=logs.append).on_save(SimpleNamespace(output_dir=str(out)), _state(10), None)
    assert up.close() == []
    assert logs == [f"not uploading {ckpt}: it has no COMPLETE marker (save not finished)"]


def test_build_and_finish_with_store_uri(tmp_path):
    from dylora_moe.checkpoint.upload_setup import build_upload_callback, default_checkpoint_store_uri, finish_uploads
    from dylora_moe.errors import UserError

    assert build_upload_callback(None) is None and finish_uploads(None) == []
    with pytest.raises(UserError, match="names a version/alias \\('best'\\)"):
        build_upload_callback(f"{tmp_path}/store:best")
    cb = build_upload_callback(str(tmp_path / "store"), log=lambda m: None)
    make_checkpoint(tmp_path / "out", 10)
    cb.on_save(SimpleNamespace(output_dir=str(tmp_path / "out")), _state(10, best=10), None)
    assert finish_uploads(cb) == []
    assert [v.aliases for v in FsspecStore(str(tmp_path / "store")).list_versions()] == [["best", "latest", "step-10"]]
    run = SimpleNamespace(name="my run", id="abc", entity="ent", project="proj")
    assert default_checkpoint_store_uri(run) == "wandb://ent/proj/best-dylora-model-full"
    assert default_checkpoint_store_uri(run, "my run", entity="me") == "wandb://me/proj/my-run"
    assert default_checkpoint_store_uri(None) is None


def test_checkpoint_rotated_away_while_queued_still_uploads(tmp_path):
    import shutil
    import threading

    gate = threading.Event()

    class GatedStore(FsspecStore):
        def publish(self, local_dir, aliases=(), metadata=None):
            gate.wait()
            return super().publish(local_dir, aliases, metadata)

    out = tmp_path / "out"
    store = GatedStore(str(tmp_path / "store"))
    up = BackgroundUploader(store, log=lambda m: None)
    ckpt = make_checkpoint(out, 10)
    payload = (ckpt / "adapter.safetensors").read_bytes()
    up.submit(ckpt, ["step-10"])
    shutil.rmtree(ckpt)  # save_total_limit rotation deletes it before the upload ran
    gate.set()
    assert up.close() == []
    got = store.download("step-10", tmp_path / "dl", log=lambda m: None)
    assert (got / "adapter.safetensors").read_bytes() == payload
    assert list(out.iterdir()) == []  # the hard-link snapshot is gone too


def test_symlink_in_a_queued_checkpoint_stays_a_link_and_is_refused(tmp_path):
    """The hard-link snapshot must not turn a link into a copy of the host file it points to."""
    ckpt = make_checkpoint(tmp_path / "out", 10)
    host = tmp_path / "host-state.json"
    host.write_bytes((ckpt / "trainer_state.json").read_bytes())  # same bytes: the manifest still verifies
    (ckpt / "trainer_state.json").unlink()
    (ckpt / "trainer_state.json").symlink_to(host)
    store = FsspecStore(str(tmp_path / "store"))
    up = BackgroundUploader(store, max_attempts=1, log=lambda m: None, sleep=lambda s: None)
    up.submit(ckpt)
    failures = up.close()
    assert [f.error.split(": ", 1)[1] for f in failures] == [
        f"trainer_state.json is a symbolic link (to {host}); a store upload takes only the checkpoint's own files "
        "— replace the link by a copy of the file"]
    assert store.list_versions() == []
