"""Background checkpoint uploads, so training never waits for the network.

Why: a multi-GB upload on every save would stall the GPU. Saves are queued and published by one
worker thread in order (so `latest` ends on the newest); each job is retried with exponential backoff;
`wait()` blocks until the queue drains and returns the jobs that failed for good, which the trainer
reports before exiting. Only the main process uploads: on other ranks every call is a no-op.

At submit time the checkpoint is snapshotted with hard links (a copy where links are impossible) into
`.upload-checkpoint-<step>-<pid>-<n>`: the Trainer's `save_total_limit` rotation may delete a checkpoint
while its upload is still queued, and the snapshot keeps the files alive until the upload is done.
"""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dylora_moe.checkpoint.stores.base import CheckpointStore, VersionInfo


@dataclass
class UploadFailure:
    """An upload that failed after all retries."""

    local_dir: Path
    aliases: list[str]
    error: str
    attempts: int


@dataclass
class _Job:
    source: Path  # the checkpoint dir the trainer wrote (may be rotated away)
    local_dir: Path  # the snapshot that is uploaded
    aliases: list[str]
    metadata: dict | None
    attempts: int = 0
    result: VersionInfo | None = field(default=None)


class BackgroundUploader:
    """One worker thread that publishes submitted checkpoint dirs to a store, with retry + backoff."""

    def __init__(
        self,
        store: CheckpointStore,
        is_main_process: bool = True,
        max_attempts: int = 4,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        log: Callable[[str], object] = print,
        sleep: Callable[[float], object] = time.sleep,
    ):
        self.store = store
        self.enabled = is_main_process
        self.max_attempts = max(1, max_attempts)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.log, self.sleep = log, sleep
        self.published: list[VersionInfo] = []
        self.failures: list[UploadFailure] = []
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def submit(self, local_dir: str | Path, aliases: list[str] | tuple[str, ...] = (), metadata: dict | None = None) -> None:
        """Queue local_dir for upload and return at once."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="checkpoint-uploader", daemon=True)
                self._thread.start()
        source = Path(local_dir)
        self._queue.put(_Job(source, _snapshot(source, next(self._counter)), list(aliases), metadata))

    def wait(self) -> list[UploadFailure]:
        """Block until every submitted upload has finished; return the ones that failed for good."""
        if self.enabled and self._thread is not None:
            self._queue.join()
        return list(self.failures)

    def close(self) -> list[UploadFailure]:
        """wait(), stop the worker thread, then close the store (W&B: finish its upload runs)."""
        failures = self.wait()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.enabled:
            try:
                self.store.close()
            except Exception as exc:  # noqa: BLE001 - uploads are done; say so and carry on exiting
                self.log(f"closing {self.store.uri} failed: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
        return failures

    def _worker(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._run(job)
            finally:
                self._queue.task_done()

    def _run(self, job: _Job) -> None:
        try:
            self._publish_with_retry(job)
        finally:
            if job.local_dir != job.source:
                shutil.rmtree(job.local_dir, ignore_errors=True)

    def _publish_with_retry(self, job: _Job) -> None:
        name = job.source.name
        delay = self.backoff_s
        while True:
            job.attempts += 1
            try:
                info = self.store.publish(job.local_dir, job.aliases, job.metadata)
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported
                error = (str(exc).splitlines() or [type(exc).__name__])[0]
                if job.attempts >= self.max_attempts:
                    self.failures.append(UploadFailure(job.source, job.aliases, error, job.attempts))
                    self.log(f"upload of {name} to {self.store.uri} failed after {job.attempts} attempts: {error}")
                    return
                self.log(f"upload of {name} failed (attempt {job.attempts}): {error}; retrying in {delay:g}s")
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            self.published.append(info)
            self.log(f"uploaded {name} to {self.store.uri} as {info.version} ({', '.join(info.aliases)})")
            return


def _snapshot(source: Path, serial: int) -> Path:
    """Hard-link the files of `source` into a sibling dot-dir; return `source` itself if it is not a directory."""
    if not source.is_dir():
        return source  # publish will report it
    snap = source.parent / f".upload-{source.name}-{os.getpid()}-{serial}"
    shutil.rmtree(snap, ignore_errors=True)
    for path in sorted(source.rglob("*")):
        target = snap / path.relative_to(source)
        if path.is_symlink():  # kept a link (a hard link would take the file it points to): publish refuses it
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(path), target)
        elif path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    snap.mkdir(parents=True, exist_ok=True)
    return snap
