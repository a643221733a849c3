"""The operating-system layer of the sandbox: Linux namespaces and seccomp through bubblewrap (`bwrap`).

Each program gets its own user, pid, network, mount, IPC, UTS and cgroup namespaces: it sees only its own
processes and a fresh `/proc` (not the harness's environment or command line), has no network, a private
`/tmp`, a read-only view of the file system with the home directories hidden (where `.netrc` and token caches
live), and only its working directory (a size-capped tmpfs) writable. It runs as uid 65534 inside, with no
capabilities, no nested user namespaces, and a seccomp filter that forbids starting processes. When the
namespace dies (the program exits, or the harness kills it) every process in it dies too.

Where bubblewrap is missing or the kernel refuses (no user namespaces), `detect()` says so once, loudly,
and the sandbox falls back to the Python-level guard alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from dylora_moe.eval.seccomp import no_new_processes_filter

NAMESPACES = "namespaces"
GUARD = "python-guard"
_SANDBOX_UID = "65534"  # nobody, inside the user namespace


@dataclass(frozen=True)
class Isolation:
    """Which layer runs programs: `prefix` goes before the interpreter; `warning` is empty when isolated."""

    layer: str
    prefix: tuple[str, ...] = ()
    seccomp: bytes | None = field(default=None, repr=False)
    warning: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"isolation": self.layer, "seccomp": "no new processes" if self.seccomp else "none",
                "warning": self.warning}


def _interpreter_paths(python: str) -> list[str]:
    """Where the interpreter reads from (prefixes and sys.path): these must stay visible in the sandbox."""
    probe = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]))"
    out = subprocess.run([python, "-s", "-c", probe], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": os.defpath})
    paths = [os.path.realpath(p) for p in json.loads(out.stdout) if p]
    return [os.path.dirname(os.path.realpath(python)), *paths]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def _hidden_dirs() -> list[str]:
    """Home directories: credentials (~/.netrc, ~/.cache/huggingface/token, ~/.aws) live there."""
    homes = {os.path.expanduser("~"), "/root", "/home"}
    return sorted({os.path.realpath(h) for h in homes if os.path.isdir(h) and os.path.realpath(h) != "/"})


_SMALL = str(1024 * 1024)  # bytes: tmpfs over hidden directories holds only mount points


def _mount_args(python: str) -> list[str]:
    hidden = _hidden_dirs()
    args = ["--ro-bind", "/", "/", "--dev", "/dev", "--size", _SMALL, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--proc", "/proc", "--size", _SMALL, "--tmpfs", "/tmp"]
    if os.path.isdir("/var/tmp"):  # a mount point cannot be created on the read-only root
        args += ["--size", _SMALL, "--tmpfs", "/var/tmp"]
    for directory in hidden:
        args += ["--size", _SMALL, "--tmpfs", directory]
    shown: list[str] = []
    for path in sorted(set(_interpreter_paths(python))):
        if os.path.exists(path) and any(_under(path, h) for h in hidden) and not any(_under(path, s) for s in shown):
            shown.append(path)
            args += ["--ro-bind", path, path]
    return args


def bwrap_prefix(bwrap: str, python: str) -> list[str]:
    """The bubblewrap command line up to (not including) the interpreter and the working-directory bind."""
    return [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--uid", _SANDBOX_UID, "--gid", _SANDBOX_UID, *_mount_args(python)]


def sandbox_command(isolation: Isolation, workdir: str, seccomp_fd: int | None, argv: list[str],
                    disk_bytes: int = 64 * 1024 * 1024) -> list[str]:
    """Full command for one program: its working directory, a fresh tmpfs of `disk_bytes`, is the only
    writable path (nothing it writes reaches the host's disk, and the total is capped, not only each file)."""
    if isolation.layer != NAMESPACES:
        return argv
    extra = ["--size", str(disk_bytes), "--tmpfs", workdir, "--chdir", workdir]
    if seccomp_fd is not None:
        extra += ["--seccomp", str(seccomp_fd)]
    return [*isolation.prefix, *extra, "--", *argv]


def _probe(prefix: list[str], python: str, seccomp: bytes | None) -> str:
    """Run `pass` through the whole chain once; '' when it works, else why not (one line)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dylora-sandbox-probe-") as workdir:
        read_end = write_seccomp(seccomp)
        try:
            isolation = Isolation(NAMESPACES, tuple(prefix), seccomp)
            command = sandbox_command(isolation, workdir, read_end, [python, "-s", "-S", "-c", "pass"])
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": os.defpath},
                                  pass_fds=() if read_end is None else (read_end,))
        finally:
            if read_end is not None:
                os.close(read_end)
    if done.returncode == 0:
        return ""
    return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]


def write_seccomp(seccomp: bytes | None) -> int | None:
    """A pipe holding the filter (bwrap reads it once); returns the read end, or None without a filter."""
    if seccomp is None:
        return None
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, seccomp)  # a few hundred bytes: far below the pipe buffer, never blocks
    finally:
        os.close(write_end)
    return read_end


_cache: dict[tuple[str, str], Isolation] = {}
_lock = threading.Lock()


def detect(bwrap: str = "bwrap", python: str = sys.executable) -> Isolation:
    """The strongest layer available here, probed once per (bwrap, python); warns once on fallback."""
    key = (bwrap, python)
    with _lock:
        if key not in _cache:
            _cache[key] = _detect(bwrap, python)
            if _cache[key].warning:
                print(f"WARNING: {_cache[key].warning}", file=sys.stderr, flush=True)
        return _cache[key]


def _fallback(why: str) -> Isolation:
    return Isolation(GUARD, warning=(
        f"eval sandbox: {why}; programs run with the Python-level guard only, which a program written to escape "
        "can undo (it can read this machine's files and environment); install bubblewrap "
        "(`apt-get install bubblewrap`) on a kernel with user namespaces"))


def _detect(bwrap: str, python: str) -> Isolation:
    if not sys.platform.startswith("linux"):
        return _fallback(f"no namespace isolation on {sys.platform}")
    found = shutil.which(bwrap)
    if found is None:
        return _fallback(f"bubblewrap ({bwrap}) is not installed")
    try:
        prefix = bwrap_prefix(found, python)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return _fallback(f"cannot inspect the interpreter {python}: {exc}")
    seccomp = no_new_processes_filter()
    why = _probe(prefix, python, seccomp)
    if why:
        return _fallback(f"bubblewrap cannot start a sandbox here ({why})")
    return Isolation(NAMESPACES, tuple(prefix), seccomp)
