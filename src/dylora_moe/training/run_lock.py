"""One run per output directory: an flock held on `<output_dir>/.dylora-run.lock` while a run trains.

Why a kernel lock and not a pid file: two runs writing into one directory interleave their checkpoints (the
first run's summary would name the second run's weights). The kernel drops an flock when its process dies,
so a SIGKILLed run never leaves a stale lock that blocks `--resume_from_checkpoint auto` (the file may stay;
it is not the lock). Taking the lock is also the up-front check that the output directory is writable
(before any model is loaded). A run that ends normally removes the file, and the directory if it created it
and left nothing in it (a refused command leaves no trace).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from dylora_moe.errors import UserError
from dylora_moe.writable import disk_error

LOCK_NAME = ".dylora-run.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return f"process {text}" if text.isdigit() else "another process"


def _acquire(path: Path) -> int:
    """An fd holding the flock on the file now at `path` (retried when a finishing run unlinked it meanwhile)."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"--output_dir {path.parent} is in use by a run still training ({_holder(path)} holds {path}); "
                "wait for it to finish, or choose another --output_dir"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def run_lock(output_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the output directory's run lock for the duration of the block (a no-op when not `enabled`)."""
    if not enabled:
        yield
        return
    output_dir = Path(output_dir)
    path = output_dir / LOCK_NAME
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path)
    except OSError as exc:
        raise disk_error(OSError(exc.errno, exc.strerror), f"--output_dir {output_dir}") from None
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:
            raise disk_error(OSError(exc.errno, exc.strerror), f"--output_dir {output_dir}") from None
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a run waiting on the old file retries on a new one
        os.close(fd)  # closing the descriptor releases the flock
        if created:
            with contextlib.suppress(OSError):
                output_dir.rmdir()  # only when empty
