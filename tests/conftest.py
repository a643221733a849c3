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


@pytest.fixture()
def host_dir():
    """A host directory outside /tmp, for sandbox tests (the sandbox's /tmp is private: /tmp proves nothing)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=".sandbox-victim-", dir=REPO_ROOT / "tests"))
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
