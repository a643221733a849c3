"""Run one untrusted program in its own process: timeout, memory cap, no network, temporary directory.

Generated code never runs in the harness process. Each program gets a fresh interpreter (`python -s -c
<sandbox_child source>`) inside the namespace sandbox of `isolation.py` (bubblewrap: own pid, network, mount
and user namespaces, read-only file system, seccomp) where this machine allows it, with a minimal environment
built from nothing (no proxies, API keys or PYTHONPATH), its own session and a temporary working directory,
the only writable path (a private tmpfs under namespaces), deleted afterwards. The verdict is the child's exit
status, read here; reasons are scrubbed of the harness's secret values before they reach a results file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dylora_moe.cloud.secrets import may_hold_secret
from dylora_moe.errors import UserError
from dylora_moe.eval.isolation import GUARD, NAMESPACES, Isolation, detect, sandbox_command, write_seccomp

MAX_TIMEOUT_S = 3600.0  # seconds per program: above this a timeout guards nothing (and inf overflows the limits)
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
    disk_mb: int = 64  # everything the program writes, all files together (namespace layer)
    python: str = sys.executable
    site_packages: bool = True  # False adds -S: faster start, stdlib only
    isolation: str = "auto"  # "auto": namespaces where available, else the guard with a warning; or either
    bwrap: str = "bwrap"  # the bubblewrap executable

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:  # also false for nan
            raise UserError(f"--timeout {self.timeout_s!r} is out of range; expected seconds per program with "
                            f"0 < --timeout <= {MAX_TIMEOUT_S:g}")


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


def _redact(text: str) -> str:
    """The harness's own secret values (API keys, tokens) never reach a reason, and so never a results file;
    settings such as WANDB_MODE=disabled are not secrets and stay readable."""
    secrets = [(name, value) for name, value in os.environ.items() if len(value) >= 8 and may_hold_secret(name)]
    for name, value in sorted(secrets, key=lambda item: -len(item[1])):  # a longer value before its substrings
        text = text.replace(value, f"<{name} redacted>")
    return text


def _interpret(returncode: int, reason: bytes, layer: str) -> ExecutionResult:
    if returncode == 0:
        return ExecutionResult(PASSED)
    lines = reason.decode("utf-8", "replace").splitlines()
    if returncode == 1 and lines:  # the program may write to the reason channel too; the runner writes last
        return ExecutionResult(FAILED, _redact(lines[-1]))
    signum = -returncode if returncode < 0 else returncode - 128 if layer == NAMESPACES and returncode > 128 else 0
    if signum in signal.valid_signals():
        name = signal.Signals(signum).name
        why = " (CPU limit)" if name == "SIGXCPU" else " (a forbidden system call)" if name == "SIGSYS" else ""
        return ExecutionResult(FAILED, f"process killed by {name}{why}")
    return ExecutionResult(FAILED, f"process exited with code {returncode} before its tests finished")


def isolation_for(config: SandboxConfig) -> Isolation:
    """The layer `config` asks for; "namespaces" without them here is a one-line error."""
    if config.isolation == GUARD:
        return Isolation(GUARD, warning="eval sandbox: isolation='python-guard' was asked for; programs can read "
                                        "this machine's files and environment")
    if config.isolation not in ("auto", NAMESPACES):
        raise UserError(f"sandbox isolation {config.isolation!r} is unknown; expected auto, {NAMESPACES} or {GUARD}")
    found = detect(config.bwrap, config.python)
    if config.isolation == NAMESPACES and found.layer != NAMESPACES:
        raise UserError(f"namespace isolation was required but is unavailable: {found.warning}")
    return found


def run_program(program: str, config: SandboxConfig | None = None) -> ExecutionResult:
    """Run `program` to completion in a sandboxed child process and say whether it passed."""
    config = config or SandboxConfig()
    isolation = isolation_for(config)
    with tempfile.TemporaryDirectory(prefix="dylora-sandbox-") as workdir:
        limits = (config.memory_mb * 1024 * 1024, max(1, int(config.timeout_s) + 1), config.max_file_mb * 1024 * 1024)
        interpreter = [config.python, "-s", "-B"] + ([] if config.site_packages else ["-S"]) + ["-c", _CHILD_SOURCE]
        seccomp_fd = write_seccomp(isolation.seccomp) if isolation.layer == NAMESPACES else None
        payload = f"{' '.join(map(str, limits))}\n".encode() + program.encode("utf-8", "surrogatepass")
        try:
            proc = subprocess.Popen(
                sandbox_command(isolation, workdir, seccomp_fd, interpreter, config.disk_mb * 1024 * 1024),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
                env=_clean_env(workdir),
                start_new_session=True,
                close_fds=True,
                pass_fds=() if seccomp_fd is None else (seccomp_fd,),
            )
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        try:
            reason, _ = proc.communicate(payload, timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            return ExecutionResult(TIMED_OUT, f"timed out after {config.timeout_s:g} s")
        finally:
            if proc.returncode is None:
                _kill_session(proc)
        try:  # anything the program left behind in its session (the guard layer; namespaces die whole)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return _interpret(proc.returncode, reason[-2000:], isolation.layer)
