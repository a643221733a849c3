"""The child side of the sandbox: runs ONE untrusted program inside a fresh interpreter.

`sandbox.py` starts `python -s -c <this file's source>` in a temporary directory (inside the namespace
sandbox of `isolation.py` where available) and sends, on stdin, one header line ("memory_bytes cpu_seconds
file_bytes") and then the program. This file must only use the standard library and must never be imported
by the harness for its side effects: it caps resources and disables destructive functions of the process it
runs in.

The guards here are Python-level: they turn an honest model's accidents (`rm -rf`, a stray socket, a write
outside the working directory) into clear PermissionErrors. They are not a security boundary (ctypes or a
re-imported `posix` undo them); the namespaces, the read-only file system and the seccomp filter around this
process are.

Start-up time matters (one interpreter per program), so this file imports almost nothing itself: `socket`,
`subprocess` and `shutil` are patched when the program first imports them (an import hook), not before.

The verdict is the exit status, read by the harness outside this process: 0 when the program ran to its end,
1 after an exception (its one-line reason goes to a private duplicate of stdout). The program's own
stdout/stderr go to /dev/null; no nonce or channel exists whose forged message would count. A program can
still end itself with status 0 before its tests (ctypes, or `_exit` found through this runner's frames):
anything this process can do, the program in it can do first. docs/eval.md lists that as what remains.
"""

import builtins
import io
import os
import sys

_exit = os._exit  # kept before the program can touch `os`


def _limit_resources(memory_bytes: int, cpu_seconds: int, file_bytes: int) -> None:
    """Memory, CPU time, file size and core dumps are capped before any untrusted byte runs."""
    try:
        import resource
    except ImportError:  # not POSIX: the harness still enforces the wall-clock timeout
        return
    limits = {
        "RLIMIT_AS": memory_bytes,
        "RLIMIT_DATA": memory_bytes,
        "RLIMIT_CPU": cpu_seconds,
        "RLIMIT_FSIZE": file_bytes,
        "RLIMIT_CORE": 0,
    }
    for name, value in limits.items():
        if not value and name != "RLIMIT_CORE" or not hasattr(resource, name):
            continue
        kind = getattr(resource, name)
        try:
            _, hard = resource.getrlimit(kind)
            value = int(value)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(kind, (value, hard if name != "RLIMIT_CPU" else value + 1))
        except (ValueError, OSError):
            pass  # e.g. RLIMIT_AS unsupported on macOS


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise PermissionError(f"{what} is disabled in the sandbox")

    refused.__name__ = what.rsplit(".", 1)[-1]
    return refused


def _patch_socket(module) -> None:
    """Every way to make a socket raises PermissionError (socket, _socket, create_connection, ...)."""
    real = getattr(module, "socket", None)
    if isinstance(real, type):  # a subclass, so `socket.py` can still derive its own class from it

        class BlockedSocket(real):
            __slots__ = ()

            def __init__(self, family=-1, type=-1, proto=-1, fileno=None):  # noqa: A002 - socket's names
                if fileno is None:  # wrapping a socketpair() end (asyncio's self-pipe) stays allowed
                    raise PermissionError("network access is disabled in the sandbox")
                super().__init__(family, type, proto, fileno)

        for name in ("socket", "SocketType"):
            if getattr(module, name, None) is real:
                setattr(module, name, BlockedSocket)
    # socketpair() stays: Linux only makes AF_UNIX pairs, which reach nothing outside the process
    for name in ("create_connection", "create_server", "fromfd", "getaddrinfo",
                 "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "dup"):
        if hasattr(module, name):
            setattr(module, name, _refuse(f"{module.__name__}.{name}"))


_OS_DISABLED = (
    "_exit", "kill", "killpg", "fork", "forkpty", "vfork", "system", "popen",
    "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot", "chdir", "fchdir",
    "link", "symlink", "setuid", "seteuid", "setgid", "setegid", "setreuid", "setregid",
    "setresuid", "setresgid", "setsid", "setpgid", "nice", "posix_spawn", "posix_spawnp",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "plock",
)
# allowed on paths inside the working directory only (tempfile and friends need them there)
_OS_INSIDE_ONLY = {"remove": 1, "unlink": 1, "rmdir": 1, "removedirs": 1, "truncate": 1,
                   "rename": 2, "renames": 2, "replace": 2}
_SHUTIL_INSIDE_ONLY = {"rmtree": 1, "move": 2}
_SUBPROCESS_DISABLED = ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _make_inside(workdir: str):
    top = os.path.realpath(workdir)
    root = top + os.sep
    realpath, fspath = os.path.realpath, os.fspath

    def inside(path) -> bool:
        try:
            resolved = realpath(fspath(path))
            return resolved == top or resolved.startswith(root)
        except (TypeError, ValueError):
            return False

    return inside


def _inside_only(qualname: str, func, n_paths: int, inside):
    def guarded(*args, **kwargs):
        if any(kwargs.get(k) is not None for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
            raise PermissionError(f"{qualname} with dir_fd is disabled in the sandbox")
        if len(args) < n_paths or not all(inside(path) for path in args[:n_paths]):
            raise PermissionError(f"{qualname} outside the sandbox directory is disabled")
        return func(*args, **kwargs)

    guarded.__name__ = qualname.rsplit(".", 1)[-1]
    return guarded


def _guard_writes(inside) -> None:
    """Opening a file for writing is only allowed inside the temporary working directory."""
    real_open = builtins.open
    real_os_open = os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+") and not isinstance(file, int) and not inside(file):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and (kwargs.get("dir_fd") is not None or not inside(path)):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open


def _patch_subprocess(module) -> None:
    for name in _SUBPROCESS_DISABLED:
        setattr(module, name, _refuse(f"subprocess.{name}"))


def _patch_shutil(module, inside) -> None:
    module._use_fd_functions = False  # rmtree then passes full paths, which the os guards can check
    for name, n_paths in _SHUTIL_INSIDE_ONLY.items():
        setattr(module, name, _inside_only(f"shutil.{name}", getattr(module, name), n_paths, inside))


class _PatchingLoader:
    """Runs the real loader, then the patch: the module is never visible unpatched."""

    def __init__(self, inner, patch):
        self.inner, self.patch = inner, patch

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        self.patch(module)


class _PatchOnImport:
    """A meta-path finder that wraps the loader of the few modules that need patching."""

    def __init__(self, patches):
        self.patches = patches

    def find_spec(self, name, path=None, target=None):
        patch = self.patches.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def _disable_destructive(workdir: str) -> None:
    """Imports keep working; calling a destructive function (or opening a socket) raises PermissionError."""
    import posix

    inside = _make_inside(workdir)
    for module in (os, posix):
        for name in _OS_DISABLED:
            if hasattr(module, name):
                setattr(module, name, _refuse(f"os.{name}"))
        for name, n_paths in _OS_INSIDE_ONLY.items():
            if hasattr(module, name):
                setattr(module, name, _inside_only(f"os.{name}", getattr(module, name), n_paths, inside))
    _guard_writes(inside)
    patches = {
        "_socket": _patch_socket,
        "socket": _patch_socket,
        "subprocess": _patch_subprocess,
        "shutil": lambda module: _patch_shutil(module, inside),
    }
    for name, patch in patches.items():
        if name in sys.modules:  # already imported at start-up: patch now
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport(patches))


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def main() -> None:
    limits, program = sys.stdin.buffer.read().split(b"\n", 1)
    reason_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)

    def fail(reason: str) -> None:
        os.write(reason_fd, f"\n{reason}\n".encode("utf-8", "replace"))  # the last line is ours
        _exit(1)  # at once: a leftover thread must not hold the process open

    _limit_resources(*(int(x) for x in limits.split()))
    try:
        code = compile(program.decode("utf-8"), "<program>", "exec")
    except BaseException as exc:  # SyntaxError, UnicodeDecodeError, MemoryError
        fail(_short(exc))
    _disable_destructive(os.getcwd())
    try:
        exec(code, {"__name__": "__sandbox__", "__builtins__": builtins})
    except BaseException as exc:  # SystemExit and KeyboardInterrupt count as failures too
        fail(_short(exc))
    _exit(0)


main()
