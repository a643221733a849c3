"""`dylora-moe checkpoints list|show|download|verify` on a real local store."""

from __future__ import annotations

import pytest
from ckpt_helpers import make_checkpoint

from dylora_moe.checkpoint.stores.fsspec_store import FsspecStore
from dylora_moe.cli import main


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))
    store = FsspecStore(str(tmp_path / "store"))
    store.publish(make_checkpoint(tmp_path / "out", 10), ["best"])
    store.publish(make_checkpoint(tmp_path / "out", 20), ["step-20"])
    return tmp_path / "store"


def test_list(store_dir, capsys):
    assert main(["checkpoints", "list", str(store_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "VERSION  ALIASES         STEP  BEST_METRIC  SIZE",
        "v0       best            10    0.0909091    2.8 KiB",
        "v1       latest,step-20  20    0.047619     5.3 KiB",
    ]


def test_show_alias(store_dir, capsys):
    assert main(["checkpoints", "show", f"{store_dir}:best"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{store_dir}:v0 (best)  2.8 KiB"
    assert lines[1:6] == [
        "  experts              3",
        "  maturity             2/3 mature [True, False, True]",
        "  step                 10",
        "  epoch                1.0",
        "  best_metric          0.0909091",
    ]
    assert "  dataset_fingerprint  fp-abc" in lines


def test_download_and_verify(store_dir, tmp_path, capsys):
    dest = tmp_path / "dl"
    assert main(["checkpoints", "download", str(store_dir), str(dest)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{dest}\n"
    assert captured.err == f"downloaded {store_dir}:v1 (5405 bytes) to {dest}\n"
    assert main(["checkpoints", "verify", str(dest)]) == 0
    assert capsys.readouterr().out == f"OK {dest}: 3 files match the manifest and parse\n"
    (dest / "experts" / "expert_0.bin").write_bytes(b"expert-21")
    assert main(["checkpoints", "verify", str(dest)]) == 2
    assert capsys.readouterr().err == (
        f"error: checkpoint {dest}: file experts/expert_0.bin fails its sha256 check (corrupted)\n"
    )


def test_unknown_alias_is_one_line_error(store_dir, capsys):
    assert main(["checkpoints", "show", f"{store_dir}:nope"]) == 2
    assert capsys.readouterr().err == (
        f"error: version or alias 'nope' not found in {store_dir}; existing versions: v0 (best), v1 (latest, step-20)\n"
    )


def test_a_network_failure_anywhere_in_a_command_is_one_line(monkeypatch, capsys):
    """A connection error raised deep inside a store library (here wrapped in an OSError, as fsspec does) is
    reported as one line naming the underlying error, exit 2, no traceback."""
    import aiohttp

    def unreachable(args):
        try:
            raise aiohttp.ClientConnectionError("Cannot connect to host 127.0.0.1:9")
        except aiohttp.ClientError as exc:
            raise OSError("request failed") from exc

    monkeypatch.setattr("dylora_moe.cli.build_parser", lambda: _FixedParser({"func": unreachable}))
    assert main(["checkpoints", "list", "gs://bucket/run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: could not reach a remote store or service: ClientConnectionError: Cannot connect "
                           "to host 127.0.0.1:9; check the URI, the network and the credentials")


class _FixedParser:
    def __init__(self, values):
        self.values = values

    def parse_args(self, argv):
        import argparse

        return argparse.Namespace(**self.values)


@pytest.mark.slow
def test_unreachable_gcs_endpoint_is_one_line_without_traceback(tmp_path):
    """Real gcsfs against a closed loopback port: after gcsfs's own retries (~35 s), one line, exit 2."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    proc = subprocess.run([sys.executable, "-m", "dylora_moe", "checkpoints", "list", "gs://bucket/run"], env=env,
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: could not reach a remote store or service: ClientConnectorError: Cannot connect to host 127.0.0.1:{port}")
