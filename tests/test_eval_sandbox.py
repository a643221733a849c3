"""The sandbox: verdicts and reasons, timeouts, and that a hostile-looking program harms nothing."""

from __future__ import annotations

import socket
import textwrap
import threading
from pathlib import Path

import pytest

from dylora_moe.eval.execution import execute_programs
from dylora_moe.eval.sandbox import ExecutionResult, SandboxConfig, run_program

FAST = SandboxConfig(timeout_s=5.0)


def test_passing_and_failing_programs() -> None:
    assert run_program("assert sum([1, 2]) == 3", FAST) == ExecutionResult("passed", "")
    assert run_program("assert 1 == 2, 'one is not two'", FAST) == ExecutionResult(
        "failed", "AssertionError: one is not two")
    assert run_program("def f(:\n  pass", FAST) == ExecutionResult(
        "failed", "SyntaxError: invalid syntax (<program>, line 1)")
    assert run_program("raise SystemExit(0)", FAST) == ExecutionResult("failed", "SystemExit: 0")


def test_printing_cannot_forge_a_pass() -> None:
    # the program's stdout goes to /dev/null; only the exit status, read by the harness, counts
    program = "print('passed')\nimport os\nos._exit(0)"
    assert run_program(program, FAST) == ExecutionResult(
        "failed", "PermissionError: os._exit is disabled in the sandbox")


def test_infinite_loop_times_out() -> None:
    assert run_program("while True:\n    pass", SandboxConfig(timeout_s=1.0)) == ExecutionResult(
        "timed out", "timed out after 1 s")


def test_memory_cap() -> None:
    result = run_program("x = bytearray(4 * 1024 ** 3)", SandboxConfig(timeout_s=5.0, memory_mb=256))
    assert result == ExecutionResult("failed", "MemoryError")


def test_crash_is_a_failure() -> None:
    assert run_program("import os\nos.abort()", FAST) == ExecutionResult("failed", "process killed by SIGABRT")


def test_deleting_files_fails_and_harms_nothing(host_dir: Path) -> None:
    victim = host_dir / "victim"
    victim.mkdir()
    keep = victim / "keep.txt"
    keep.write_text("precious")
    attempts = {
        "import os\nos.remove({p!r})": "PermissionError: os.remove outside the sandbox directory is disabled",
        "import os\nos.unlink({p!r})": "PermissionError: os.unlink outside the sandbox directory is disabled",
        "import shutil\nshutil.rmtree({d!r})": "PermissionError: shutil.rmtree outside the sandbox directory is disabled",
        "import os\nos.system('rm -rf ' + {d!r})": "PermissionError: os.system is disabled in the sandbox",
        "import subprocess\nsubprocess.run(['rm', '-rf', {d!r}])": "PermissionError: subprocess.run is disabled in the sandbox",
        "import os\nos.rename({p!r}, 'stolen')": "PermissionError: os.rename outside the sandbox directory is disabled",
        "import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.unlink('keep.txt', dir_fd=fd)":
            "PermissionError: os.unlink with dir_fd is disabled in the sandbox",
        "open({p!r}, 'w').write('gone')":
            f"PermissionError: writing outside the sandbox directory is disabled: {str(keep)!r}",
        "import os\nos.kill(os.getppid(), 9)": "PermissionError: os.kill is disabled in the sandbox",
    }
    programs = [template.format(p=str(keep), d=str(victim)) for template in attempts]
    results = execute_programs(programs, FAST, workers=2)
    assert [(r.status, r.reason) for r in results] == [("failed", reason) for reason in attempts.values()]
    assert keep.read_text() == "precious"


def test_files_inside_the_working_directory_are_fine() -> None:
    program = textwrap.dedent("""
        import os, shutil, tempfile
        os.makedirs('a/b')
        with open('a/b/c.txt', 'w') as f:
            f.write('x')
        shutil.rmtree('a')
        assert not os.path.exists('a')
        with tempfile.NamedTemporaryFile() as f:
            f.write(b'ok')
        assert os.getcwd() == os.environ['HOME']
    """)
    assert run_program(program, FAST) == ExecutionResult("passed", "")


def test_network_is_cut(listener: socket.socket) -> None:
    server = listener
    port = server.getsockname()[1]
    connections: list = []

    def accept() -> None:
        try:
            connections.append(server.accept())
        except OSError:
            pass

    programs = [
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}))",
        f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))",
        "import _socket\n_socket.socket()",
        f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')",
    ]
    results = execute_programs(programs, FAST, workers=2)
    accept()
    assert [(r.status, r.reason) for r in results] == [
        ("failed", "PermissionError: socket.create_connection is disabled in the sandbox"),
        ("failed", "PermissionError: network access is disabled in the sandbox"),
        ("failed", "PermissionError: network access is disabled in the sandbox"),
        ("failed", "URLError: <urlopen error socket.create_connection is disabled in the sandbox>"),
    ]
    assert connections == []


def test_environment_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "secret-key")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    program = textwrap.dedent("""
        import os, sys
        assert 'WANDB_API_KEY' not in os.environ
        assert not any('proxy' in k.lower() for k in os.environ)
        assert '/nowhere' not in sys.path
        assert os.environ['PYTHONHASHSEED'] == '0'
    """)
    assert run_program(program, FAST) == ExecutionResult("passed", "")


def test_ordinary_imports_still_work() -> None:
    program = textwrap.dedent("""
        import asyncio, collections, hashlib, heapq, itertools, math, re, shutil, subprocess, tempfile, typing
        async def main():
            return 3
        assert asyncio.run(main()) == 3
        assert hashlib.md5(b'').hexdigest() == 'd41d8cd98f00b204e9800998ecf8427e'
    """)
    assert run_program(program, FAST) == ExecutionResult("passed", "")


def test_pool_keeps_order_and_survives_loops_and_crashes() -> None:
    programs = ["assert True", "while True: pass", "import os; os.abort()", "assert False", "x = 1"]
    results = execute_programs(programs, SandboxConfig(timeout_s=1.0), workers=2)
    assert [r.status for r in results] == ["passed", "timed out", "failed", "failed", "passed"]
    assert execute_programs([], FAST) == []


def test_leftover_thread_does_not_hold_the_result() -> None:
    program = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()"
    assert run_program(program, SandboxConfig(timeout_s=5.0)) == ExecutionResult("passed", "")


def test_no_thread_leaks_in_the_harness() -> None:
    before = threading.active_count()
    execute_programs(["pass"] * 4, FAST, workers=2)
    assert threading.active_count() == before


def test_reasons_redact_secrets_not_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wandb-secret-0123456789abcdef"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HOME", "/opt/hf-cache")
    monkeypatch.setenv("WANDB_API_KEY", secret)
    assert run_program("import socket\nsocket.socket()", FAST) == ExecutionResult(
        "failed", "PermissionError: network access is disabled in the sandbox")
    assert run_program("raise ValueError('/opt/hf-cache')", FAST) == ExecutionResult(
        "failed", "ValueError: /opt/hf-cache")
    assert run_program(f"raise ValueError('key {secret}')", FAST) == ExecutionResult(
        "failed", "ValueError: key <WANDB_API_KEY redacted>")
