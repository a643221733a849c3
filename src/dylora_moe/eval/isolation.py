"""The operating-system layer of the sandbox: Linux namespaces and seccomp through bubblewrap (`bwrap`).

Each program gets its own user, pid, network, mount, IPC, UTS and cgroup namespaces: it sees only its own
processes and a fresh `/proc` (not the harness's environment or command line), has no network, a read-only
view of the file system with the home directories (where `.netrc` and token caches live), `/tmp` and `/var/tmp`
hidden (only the interpreter's own paths are bound back), and only its working directory (a size-capped tmpfs)
writable. It runs as uid 65534 inside, with no capabilities, no nested user namespaces, and a seccomp filter
that forbids starting processes; a root harness runs bubblewrap as uid 65534 outside too, so root-only files
stay unreadable. When the namespace dies (the program exits, or the harness kills it) every process in it
dies too.

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
_NOBODY = "65534"  # the sandbox's uid and gid inside; a root harness's outside too


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
    """Where the interpreter reads from (the executable, prefixes and sys.path), as it names them: these must
    stay visible in the sandbox, symlinks included."""
    probe = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]))"
    out = subprocess.run([python, "-s", "-c", probe], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": os.defpath})
    return [os.path.abspath(python), *(os.path.abspath(p) for p in json.loads(out.stdout) if p)]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def _hidden_dirs() -> list[str]:
    """Covered by an empty tmpfs: the home directories (credentials: ~/.netrc, ~/.cache/huggingface/token,
    ~/.aws) and the temporary directories (whatever the harness or other jobs left there)."""
    tops = {os.path.expanduser("~"), "/root", "/home", "/tmp", "/var/tmp"}
    return sorted({os.path.realpath(h) for h in tops if os.path.isdir(h) and os.path.realpath(h) != "/"})


_SMALL = str(1024 * 1024)  # bytes: tmpfs over hidden directories holds only mount points
_STAGE = "/tmp/dylora-interpreter-{}"  # where a root harness's outer mount namespace stages what it shows


def _shown(python: str, hidden: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """What the sandbox shows again under the hidden directories: real paths to bind read-only (never a hidden
    directory itself), and (link, target) symlinks for the paths the interpreter names through a link."""
    real = {named: os.path.realpath(named) for named in sorted(set(_interpreter_paths(python)))}
    wanted = {r for r in real.values() if os.path.exists(r) and r not in hidden and any(_under(r, h) for h in hidden)}
    binds = sorted(r for r in wanted if not any(_under(r, other) for other in wanted - {r}))
    links: list[tuple[str, str]] = []
    for named, target in real.items():
        if (named != target and named not in hidden and os.path.exists(target) and any(_under(named, h) for h in hidden)
                and not any(_under(named, p) for p in binds + [link for link, _ in links])):
            links.append((named, target))
    return binds, links


def _mount_args(hidden: list[str], binds: list[tuple[str, str]], links: list[tuple[str, str]]) -> list[str]:
    args = ["--ro-bind", "/", "/", "--dev", "/dev", "--size", _SMALL, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--proc", "/proc"]
    for directory in hidden:
        args += ["--size", _SMALL, "--tmpfs", directory]
    for source, path in binds:
        args += ["--ro-bind", source, path]
    for link, target in links:
        args += ["--symlink", target, link]
    return args


def _drop_root(bwrap: str, binds: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """For a root harness: the command that drops to uid/gid 65534 before bubblewrap runs, and the bind sources
    the dropped bubblewrap reads them from.

    Inside its user namespace the sandbox's uid maps to the harness's uid outside: for root, that is root, the
    owner of `/etc/shadow` and of every 0600 root file. So bubblewrap runs as nobody; paths nobody cannot reach
    (an interpreter under root's 0700 home) are first bound, as root, into a private mount namespace's `/tmp`
    (an outer bubblewrap with only its own mount and pid namespaces), from where the inner one shows them.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ValueError("setpriv (util-linux) is not installed; a root harness needs it to drop to uid 65534")
    drop = [setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--"]
    if not binds:
        return drop, []
    staged = [_STAGE.format(i) for i in range(len(binds))]
    # its own pid namespace: its monitor drops CAP_KILL, so the parent-death signal could not reach the dropped
    # bubblewrap; the namespace's init, killed with the monitor, takes every process in it along
    outer = [bwrap, "--die-with-parent", "--unshare-pid", "--dev-bind", "/", "/", "--tmpfs", "/tmp"]
    for source, stage in zip(binds, staged):
        outer += ["--ro-bind", source, stage]
    return [*outer, "--", *drop], list(zip(staged, binds))


def bwrap_prefix(bwrap: str, python: str) -> list[str]:
    """The bubblewrap command line up to (not including) the interpreter and the working-directory bind."""
    hidden = _hidden_dirs()
    binds, links = _shown(python, hidden)
    before, sources = _drop_root(bwrap, binds) if os.geteuid() == 0 else ([], [(b, b) for b in binds])
    return [*before, bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--uid", _NOBODY, "--gid", _NOBODY,
            *_mount_args(hidden, sources, links)]


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
        return _fallback(f"cannot prepare the sandbox for the interpreter {python}: {exc}")
    seccomp = no_new_processes_filter()
    why = _probe(prefix, python, seccomp)
    if why:
        return _fallback(f"bubblewrap cannot start a sandbox here ({why})")
    return Isolation(NAMESPACES, tuple(prefix), seccomp)
