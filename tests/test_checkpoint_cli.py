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
    assert capsys.readouterr().out == f"OK {dest}: 3 files match the manifest\n"
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
