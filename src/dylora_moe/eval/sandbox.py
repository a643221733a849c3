"""Run one untrusted program in its own process: timeout, memory cap, no network, temporary directory.

Generated code never runs in the harness process. Each program gets a fresh interpreter
(`python -s -c <sandbox_child source>`) with a minimal environment (no proxies, no API keys, no PYTHONPATH),
its own session (so a timeout kills everything it started) and a temporary working directory that is
deleted afterwards. See `sandbox_child.py` for what the child disables and why it is not a security boundary
against a program written to escape.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PASSED = "passed"
FAILED = "failed"
TIMED_OUT = "timed out"

_CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text(encoding="utf-8")


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one program. `timeout_s` is wall-clock, interpreter start-up included."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_file_mb: int = 16
    python: str = sys.executable
    site_packages: bool = True  # False adds -S: faster start, stdlib only


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one program: status is "passed", "failed" or "timed out"; reason is short and human."""

    status: str
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _clean_env(workdir: str) -> dict[str, str]:
    """Nothing from the harness environment leaks in: no proxies, tokens, or Python path settings."""
    return {
        "PATH": os.defpath,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",  # set/dict-of-str order is reproducible across runs
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _kill_session(proc: subprocess.Popen) -> None:
    """Kill the child's whole session (it leads its own process group), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)  # drains and closes the pipes
    except subprocess.TimeoutExpired:  # a grandchild that left the session still holds stdout
        proc.wait()


def _interpret(returncode: int, stdout: bytes, nonce: str) -> ExecutionResult:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        tag, _, rest = line.partition(" ")
        if tag != nonce:
            continue
        if rest.startswith(PASSED):
            return ExecutionResult(PASSED)
        return ExecutionResult(FAILED, rest[len(FAILED):].strip() if rest.startswith(FAILED) else rest)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        why = " (CPU limit)" if name == "SIGXCPU" else ""
        return ExecutionResult(FAILED, f"process killed by {name}{why}")
    return ExecutionResult(FAILED, f"process exited with code {returncode} before its tests finished")


def run_program(program: str, config: SandboxConfig | None = None) -> ExecutionResult:
    """Run `program` to completion in a sandboxed child process and say whether it passed."""
    config = config or SandboxConfig()
    nonce = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="dylora-sandbox-") as workdir:
        limits = (config.memory_mb * 1024 * 1024, max(1, int(config.timeout_s) + 1), config.max_file_mb * 1024 * 1024)
        header = f"{nonce}\n{workdir}\n{' '.join(map(str, limits))}\n"
        command = [config.python, "-s", "-B"] + ([] if config.site_packages else ["-S"]) + ["-c", _CHILD_SOURCE]
        payload = header.encode() + program.encode("utf-8", "surrogatepass")
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env=_clean_env(workdir),
            start_new_session=True,
            close_fds=True,
        )
        try:
            stdout, _ = proc.communicate(payload, timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            return ExecutionResult(TIMED_OUT, f"timed out after {config.timeout_s:g} s")
        finally:
            if proc.returncode is None:
                _kill_session(proc)
        try:  # anything the program left behind in its session
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return _interpret(proc.returncode, stdout, nonce)
