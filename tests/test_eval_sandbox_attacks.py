"""Programs written to escape the sandbox: each attack here got through the Python-level guard alone.

They bypass that guard on purpose (`_io.FileIO`, `posix.open`, ctypes, the real socket class behind the
patched one, the harness's frames) so what they test is the operating-system layer: namespaces, the
read-only file system, seccomp, and the verdict taken from the exit status outside the program's process.
Runs need bubblewrap (`apt-get install bubblewrap`; `.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dylora_moe.eval.execution import execute_programs
from dylora_moe.eval.problem import Problem
from dylora_moe.eval.runner import score_completions
from dylora_moe.eval.sandbox import ExecutionResult, SandboxConfig, run_program

from dylora_moe.eval.isolation import detect

_LAYER = detect()
# CI (CI set) must have the namespace layer: there these tests fail rather than skip without it
pytestmark = pytest.mark.skipif(
    bool(_LAYER.warning) and not os.environ.get("CI"),
    reason=f"{_LAYER.warning} (set CI=1 to make these tests fail instead)",
)

ISOLATED = SandboxConfig(timeout_s=10.0, isolation="namespaces")
SECRET = "wandb-secret-0123456789abcdef"


def test_program_cannot_read_the_harness_secrets(host_dir: Path) -> None:
    # a real harness process with a W&B key in its environment and in ~/.netrc
    (host_dir / ".netrc").write_text(f"machine api.wandb.ai login user password {SECRET}\n")
    program = textwrap.dedent(f"""
        import os
        found = []
        pids = {{p for p in os.listdir('/proc') if p.isdigit()}} | {{str(os.getppid()), {{harness}}}}
        for pid in pids:
            for entry in ('environ', 'cmdline'):
                try:
                    data = open(f'/proc/{{pid}}/{{entry}}', 'rb').read()
                except OSError:
                    continue
                if b'WANDB_API_KEY' in data or b'{SECRET}' in data:
                    found.append((pid, entry))
        try:
            found.append(open({str(host_dir / '.netrc')!r}).read())
        except OSError:
            pass
        assert not found, found
    """)
    harness = textwrap.dedent(f"""
        import json, os, sys
        from dylora_moe.eval.sandbox import SandboxConfig, run_program
        program = {program!r}.replace('{{harness}}', str(os.getpid()))
        result = run_program(program, SandboxConfig(timeout_s=10.0, isolation='namespaces'))
        print(json.dumps(result.to_dict()))
    """)
    env = {**os.environ, "WANDB_API_KEY": SECRET, "HOME": str(host_dir)}
    done = subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"status": "passed", "reason": ""}


def test_a_secret_the_program_prints_is_redacted_from_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    result = run_program(f"raise RuntimeError('stolen: {SECRET}')", ISOLATED)
    assert result == ExecutionResult("failed", "RuntimeError: stolen: <HF_TOKEN redacted>")


def test_program_cannot_write_create_or_truncate_host_files(host_dir: Path) -> None:
    keep = host_dir / "keep.txt"
    keep.write_text("precious")
    new = host_dir / "new"
    attempts = [
        f"import _io\n_io.FileIO({str(keep)!r}, 'w')",
        f"import os\nos.mkdir({str(new)!r})",
        f"import sqlite3\nsqlite3.connect({str(new)!r}).execute('create table t (x)')",
        f"import pathlib\npathlib.Path({str(new)!r}).mkdir()",
        f"import posix\nposix.close(posix.open({str(new)!r}, posix.O_CREAT | posix.O_WRONLY))",
        f"import posix\nposix.truncate({str(keep)!r}, 0)" if hasattr(os, "truncate") else "raise OSError",
        f"import ctypes\nassert ctypes.CDLL(None).system(b'echo gone > {keep}; touch {new}') == 0",
        f"import shutil, sys, _io\nshutil.copyfileobj(_io.FileIO(sys.executable), _io.FileIO({str(new)!r}, 'w'))",
    ]
    results = execute_programs(attempts, ISOLATED, workers=2)
    assert [r.status for r in results] == ["failed"] * len(attempts), results
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in host_dir.iterdir()) == ["keep.txt"]


def test_verdict_cannot_be_forged_from_the_harness_frames() -> None:
    # every channel the program can find: the runner's frames, the file descriptors, its own exit status
    program = textwrap.dedent("""
        import os, sys
        frame = sys._getframe(1)
        names = dict(frame.f_locals)
        for fd in range(64):
            for line in (f"{names.get('nonce', '')} passed \\n", "passed\\n", "0\\n"):
                try:
                    os.write(fd, line.encode())
                except OSError:
                    pass
        if callable(names.get('report')):
            names['report']('passed', '')
        raise AssertionError('the tests failed')
    """)
    assert run_program(program, ISOLATED) == ExecutionResult("failed", "AssertionError: the tests failed")


def _sleeping(seconds: str) -> list[int]:
    """Host pids of every `sleep SECONDS` process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", seconds.encode()]:
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_no_process_outlives_the_program_setsid_and_double_fork() -> None:
    marker = "41.123"
    program = textwrap.dedent(f"""
        import ctypes
        libc = ctypes.CDLL(None)
        libc.system(b'setsid sleep {marker} > /dev/null 2>&1 < /dev/null &')
        if libc.fork() == 0:
            libc.setsid()
            if libc.fork() == 0:
                libc.execl(b'/bin/sleep', b'sleep', b'{marker}', None)
            libc._exit(0)
    """)
    try:
        run_program(program, ISOLATED)
        survivors = _sleeping(marker)
    finally:
        for pid in _sleeping(marker):
            os.kill(pid, signal.SIGKILL)
    assert survivors == []


def test_no_process_can_be_started_so_no_fork_bomb() -> None:
    program = textwrap.dedent("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        pid = libc.fork()
        if pid == 0:
            libc._exit(0)
        assert pid == -1 and ctypes.get_errno() == 1, f'fork gave {pid}'
    """)
    assert run_program(program, ISOLATED) == ExecutionResult("passed", "")


def test_program_cannot_signal_the_harness() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    program = textwrap.dedent(f"""
        import ctypes, os
        libc = ctypes.CDLL(None)
        libc.kill({os.getpid()}, {int(signal.SIGUSR1)})
        libc.kill(os.getppid(), {int(signal.SIGUSR1)})
    """)
    try:
        run_program(program, ISOLATED)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []


def test_network_is_cut_even_with_the_real_socket_class(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    program = textwrap.dedent(f"""
        import _socket
        real = _socket.socket.__mro__[1]
        s = real(_socket.AF_INET, _socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(('127.0.0.1', {port}))
    """)
    result = run_program(program, ISOLATED)
    with pytest.raises(OSError):
        listener.accept()
    assert result.status == "failed" and "Connection refused" in result.reason, result


def test_the_results_say_which_layer_ran_and_warn_on_fallback(capfd: pytest.CaptureFixture) -> None:
    problem = Problem("humaneval", "t/0", "def f():\n", "    return 1\n", "def check(c):\n    assert c() == 1\n", "f")
    isolated = score_completions("humaneval", [problem], [["    return 1\n"]], [1], ISOLATED)
    assert isolated["sandbox"] == {"isolation": "namespaces", "seccomp": "no new processes", "warning": ""}
    fallback = score_completions("humaneval", [problem], [["    return 1\n"]], [1],
                                 SandboxConfig(timeout_s=10.0, bwrap="/nonexistent/bwrap"))
    assert fallback["pass@k"] == {"pass@1": 1.0}
    assert fallback["sandbox"]["isolation"] == "python-guard"
    assert fallback["sandbox"]["warning"].startswith("eval sandbox: bubblewrap (/nonexistent/bwrap) is not installed")
    warned = [line for line in capfd.readouterr().err.splitlines() if line.startswith("WARNING: eval sandbox")]
    assert warned == [f"WARNING: {fallback['sandbox']['warning']}"]


def test_writes_are_capped_in_total_not_only_per_file() -> None:
    # 16 MiB per file is allowed; 20 of them (320 MiB) would fill a host disk, or RAM through /dev or /dev/shm
    program = textwrap.dedent("""
        import _io, errno
        full = []
        for place in ('.', '/dev', '/dev/shm', '/tmp'):
            try:
                for i in range(20):
                    with _io.FileIO(f'{place}/fill-{i}', 'w') as f:  # past the Python guard
                        f.write(bytes(8 * 1024 * 1024))
            except OSError as exc:
                full.append(exc.errno in (errno.ENOSPC, errno.EROFS, errno.EPERM))
        assert full == [True] * 4, full
    """)
    assert run_program(program, ISOLATED) == ExecutionResult("passed", "")


def _descendants(root: int) -> set[int]:
    """Host pids of every process below `root` (other jobs on this machine run sandboxes too)."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running_the_child(pids: set[int]) -> bool:
    """Whether one of `pids` runs the sandbox child (its source, on the command line, names it)."""
    for pid in pids:
        try:
            if b"The child side of the sandbox" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_program_dies_with_a_killed_harness() -> None:
    harness = subprocess.Popen([sys.executable, "-c", (
        "from dylora_moe.eval.sandbox import SandboxConfig, run_program\n"
        "run_program('import time\\ntime.sleep(30)', SandboxConfig(timeout_s=60.0, isolation='namespaces'))")])
    started: set[int] = set()
    try:
        assert _wait_for(lambda: _running_the_child(_descendants(harness.pid)), 20.0), "the program never started"
        time.sleep(0.5)  # past start-up: sleeping in its tests
        started = _descendants(harness.pid)
        harness.kill()
        harness.wait()
        gone = _wait_for(lambda: not _alive(started), 5.0)
    finally:
        for pid in _alive(started):
            os.kill(pid, signal.SIGKILL)
    assert gone, "the sandboxed program outlived the harness that was killed"


@pytest.fixture()
def tmp_interpreters():
    """A directory under /tmp (the harness's /tmp, which the sandbox hides) for interpreters, and beside them a
    file the program must not see."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="dylora-interpreter-test-", dir="/tmp"))
    (path / "harness-file.txt").write_text("not for the sandbox")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sees_only(python: str, top: Path) -> str:
    """A program that passes when it runs under `python` and sees nothing of `top` but the interpreter."""
    return textwrap.dedent(f"""
        import os, sys
        assert sys.executable == {python!r}, sys.executable
        assert not os.path.exists({str(top / 'harness-file.txt')!r})
        seen = sorted(os.listdir({str(top)!r}))
        assert seen in (['.venv'], ['python']), seen
    """)


def test_a_venv_under_tmp_runs_in_the_sandbox(tmp_interpreters: Path) -> None:
    # CI runs from a clone under /tmp: the sandbox's private /tmp must still show the interpreter, only it
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(tmp_interpreters / ".venv")], check=True, timeout=120)
    python = str(tmp_interpreters / ".venv" / "bin" / "python")
    config = SandboxConfig(timeout_s=10.0, isolation="namespaces", python=python)
    assert run_program(_sees_only(python, tmp_interpreters), config) == ExecutionResult("passed", "")


def test_a_symlinked_interpreter_under_tmp_runs_in_the_sandbox(tmp_interpreters: Path) -> None:
    python = str(tmp_interpreters / "python")
    os.symlink(sys.executable, python)
    config = SandboxConfig(timeout_s=10.0, isolation="namespaces", python=python)
    assert run_program(_sees_only(python, tmp_interpreters), config) == ExecutionResult("passed", "")


_NOBODY = {"user": 65534, "group": 65534, "extra_groups": []}  # a normal user's harness, no root groups


def _python_for_nobody() -> str:
    """An interpreter uid 65534 can run (this one may live under root's 0700 home), for a normal-user harness."""
    import shutil

    for candidate in filter(None, (sys.executable, shutil.which("python3"), "/usr/bin/python3")):
        try:
            runs = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 11)"],
                                  capture_output=True, timeout=60, cwd="/", **_NOBODY).returncode == 0
        except PermissionError:  # the interpreter is under a directory that uid cannot enter
            runs = False
        if runs:
            return candidate
    pytest.fail("no Python >= 3.11 that uid 65534 can run (needed to run the harness as a normal user)")


@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                    reason="needs root to make a root-only file (CI runs as root)")
@pytest.mark.parametrize("harness_user", ["root", "nobody"])
def test_root_only_files_are_unreadable(harness_user: str, host_dir: Path) -> None:
    # a root harness maps the sandbox's uid to root outside unless it drops: owner rights on root's files
    (host_dir / "public.txt").write_text("world-readable")
    (host_dir / "public.txt").chmod(0o644)
    private = host_dir / "private"
    private.mkdir(mode=0o700)
    (private / "key.txt").write_text(SECRET)
    (private / "key.txt").chmod(0o600)
    program = textwrap.dedent(f"""
        assert open({str(host_dir / 'public.txt')!r}).read() == 'world-readable'
        for path in ('/etc/shadow', {str(private / 'key.txt')!r}, {str(private)!r} + '/.'):
            try:
                open(path).read()
            except PermissionError:
                continue
            except IsADirectoryError:
                raise AssertionError(f'{{path}} is reachable')
            raise AssertionError(f'{{path}} is readable')
    """)
    harness = textwrap.dedent(f"""
        import json
        from dylora_moe.eval.sandbox import SandboxConfig, run_program
        print(json.dumps(run_program({program!r}, SandboxConfig(timeout_s=10.0, isolation='namespaces')).to_dict()))
    """)
    python, drop = (sys.executable, {}) if harness_user == "root" else (_python_for_nobody(), _NOBODY)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PATH": os.defpath, "HOME": os.environ.get("HOME", "/root"), "PYTHONPATH": src}
    done = subprocess.run([python, "-c", harness], capture_output=True, text=True, env=env, timeout=60, cwd="/",
                          **drop)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"status": "passed", "reason": ""}
