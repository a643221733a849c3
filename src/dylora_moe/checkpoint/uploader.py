"""Background checkpoint uploads, so training never waits for the network.

Why: a multi-GB upload on every save would stall the GPU. Saves are queued and published by one
worker thread in order (so `latest` ends on the newest); each job is retried with exponential backoff;
`wait()` blocks until the queue drains and returns the jobs that failed for good, which the trainer
reports before exiting. Only the main process uploads: on other ranks every call is a no-op.
"""

from __future__ import annotations

import queue
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
    local_dir: Path
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

    def submit(self, local_dir: str | Path, aliases: list[str] | tuple[str, ...] = (), metadata: dict | None = None) -> None:
        """Queue local_dir for upload and return at once."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="checkpoint-uploader", daemon=True)
                self._thread.start()
        self._queue.put(_Job(Path(local_dir), list(aliases), metadata))

    def wait(self) -> list[UploadFailure]:
        """Block until every submitted upload has finished; return the ones that failed for good."""
        if self.enabled and self._thread is not None:
            self._queue.join()
        return list(self.failures)

    def close(self) -> list[UploadFailure]:
        """wait(), then stop the worker thread."""
        failures = self.wait()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
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
        delay = self.backoff_s
        while True:
            job.attempts += 1
            try:
                info = self.store.publish(job.local_dir, job.aliases, job.metadata)
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported
                error = (str(exc).splitlines() or [type(exc).__name__])[0]
                if job.attempts >= self.max_attempts:
                    self.failures.append(UploadFailure(job.local_dir, job.aliases, error, job.attempts))
                    self.log(f"upload of {job.local_dir.name} to {self.store.uri} failed after {job.attempts} attempts: {error}")
                    return
                self.log(f"upload of {job.local_dir.name} failed (attempt {job.attempts}): {error}; retrying in {delay:g}s")
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            self.published.append(info)
            self.log(f"uploaded {job.local_dir.name} to {self.store.uri} as {info.version} ({', '.join(info.aliases)})")
            return
