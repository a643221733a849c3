"""Full and read-only disks as one clear line, found before the work whose results they would lose.

Why: a read-only output path used to surface after the whole training or evaluation, and ENOSPC as a
traceback; both are conditions the user fixes (free space, another directory), so they are `UserError`s.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from dylora_moe.errors import UserError

DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}


def disk_error(exc: BaseException, what: str) -> UserError:
    """`what` cannot be written: the OS's reason and what to do, in one line."""
    reason = disk_reason(exc) or str(exc)
    advice = "free some space or choose a directory on another disk" if "space" in reason else "choose a writable path"
    filename = getattr(exc, "filename", None)
    where = f" ({filename})" if filename and str(filename) not in what else ""
    return UserError(f"cannot write {what}{where}: {reason}; {advice}")


# torch.save and safetensors report a failed write as RuntimeError / SafetensorError, not OSError
_WRAPPED = (("No space left", "No space left on device"), ("os error 28", "No space left on device"),
            ("file write failed", "No space left on device (or the write failed)"),
            ("Read-only file system", "Read-only file system"), ("os error 30", "Read-only file system"))


def disk_reason(exc: BaseException) -> str | None:
    """The full/read-only disk behind `exc` ('No space left on device', ...), or None for other errors."""
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc)) if exc.errno in DISK_ERRNOS else None
    text = str(exc)
    return next((reason for marker, reason in _WRAPPED if marker in text), None)


def is_disk_error(exc: BaseException) -> bool:
    return disk_reason(exc) is not None


LOW_SPACE = 1 << 20  # bytes


def disk_full(path: str | Path) -> bool:
    """Less than 1 MiB free where `path` lives: torch.save reports ENOSPC only as 'unexpected pos ...'."""
    try:
        return shutil.disk_usage(path).free < LOW_SPACE
    except OSError:
        return False


def check_writable_file(path: str | Path, flag: str) -> None:
    """Raise now if `path` (a file to be written later) could not be created: probe its directory."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
    except OSError as exc:
        raise disk_error(OSError(exc.errno, exc.strerror), f"{flag} {path}") from None  # not the probe's name
