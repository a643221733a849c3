"""Writing a file atomically: a reader (or a restart after a crash) sees the old file or the whole new one.

The data goes to a temp file in the same directory (so the rename stays on one filesystem and is atomic),
is fsynced (so a power loss cannot leave a renamed but empty file), then `os.replace`s the target. On any
failure the temp file is removed and the target is untouched. A directory publish is a different thing: see
checkpoint/manifest.py::publish_atomically.

`file_lock` is the advisory lock that serialises writers of one directory entry across processes (concurrent
downloads into the artifact cache) and tells a cleaner whether a temporary still has a living writer.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace `path` by `data` atomically; the parent directory must exist."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as handle:  # created with the umask's mode, like the file it replaces
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if missing); yields False, holding nothing, when `wait` is False
    and another open file holds it. The kernel drops the lock when its process dies, so a killed holder never
    leaves a lock behind. Where fcntl does not exist nothing is locked: a waiting caller goes on (True), one that
    asks whether the lock is free is told it is not (False), so nothing is judged stale there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield wait
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
