"""Shared test set-up: nothing may reach the network, and data comes from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the real MBPP and CodeAlpaca files (read-only, never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests read real data from ../shared/data beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> str:
    """A micro Llama + trained test tokenizer saved as an HF model directory (usable as --model_name)."""
    from micro import save_micro_base

    return save_micro_base(tmp_path_factory.mktemp("base") / "micro")


def _sandbox_visible(path: Path) -> bool:
    """Not under what the sandbox hides (temporary and home directories): a CI clone lives under /tmp."""
    hidden = {os.path.realpath(h) for h in ("/tmp", "/var/tmp", "/root", "/home", os.path.expanduser("~"))} - {"/"}
    real = os.path.realpath(path)
    return not any(real == h or real.startswith(h + "/") for h in hidden)


@pytest.fixture()
def host_dir():
    """A host directory the sandbox can see (its /tmp and home directories are private: there a test proves
    nothing): beside the tests, or, for a clone under /tmp, in /var/cache where that is writable."""
    import shutil
    import tempfile

    candidates = [REPO_ROOT / "tests", Path("/var/cache")]
    parent = next((c for c in candidates if _sandbox_visible(c) and os.access(c, os.W_OK)), candidates[0])
    path = Path(tempfile.mkdtemp(prefix=".sandbox-victim-", dir=parent))
    path.chmod(0o755)  # world-readable like a checkout: the sandbox runs as uid 65534, it must see what it may not do
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def listener():
    """A TCP socket listening on 127.0.0.1 (closed after the test): can a sandboxed program reach it?"""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    try:
        yield server
    finally:
        server.close()
