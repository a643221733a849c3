"""The embedded `tiny` base as shipped with the package, checked against its recorded sha256 before use.

A seeded build is not the same bits on every machine (CPU kernels chosen by instruction set and thread count,
the interpreter's own stdlib as corpus), and a checkpoint is only meaningful on the exact weights it was trained
on. So the base is built once by `tiny.py` and its output (tokenizer + bfloat16 safetensors, ~8.5 MB) ships
in `tiny_base/`; `tiny_build.json` there records each file's sha256, and every load verifies them: the same
weights on every machine and Python version, or one clear line saying the copy is damaged.
"""

from __future__ import annotations

import json
from pathlib import Path

from dylora_moe.errors import UserError
from dylora_moe.model.tiny import BUILD_REPORT, sha256_of

SHIPPED_DIR = Path(__file__).resolve().parent / "tiny_base"
REBUILD_HINT = "reinstall dylora-moe (the package ships it), or pass --model_name with a directory of your own"

_VERIFIED: set[str] = set()


def verify_tiny_base(directory: Path) -> dict:
    """The build report of `directory`, after checking every file it lists against its sha256."""
    report_path = directory / BUILD_REPORT
    if not report_path.is_file():
        raise UserError(f"the embedded tiny base is missing: no {report_path}; {REBUILD_HINT}")
    report = json.loads(report_path.read_text())
    recorded = report.get("sha256") or {}
    if "model.safetensors" not in recorded:
        raise UserError(f"{report_path} records no sha256 for model.safetensors; {REBUILD_HINT}")
    for name, want in sorted(recorded.items()):
        path = directory / name
        got = sha256_of(path) if path.is_file() else "missing"
        if got != want:
            raise UserError(f"the embedded tiny base is damaged: {path} has sha256 {got[:16]}…, "
                            f"{BUILD_REPORT} records {want[:16]}…; {REBUILD_HINT}")
    return report


def ensure_tiny_base(log=print) -> Path:
    """Path of the shipped tiny base, verified (once per process)."""
    key = str(SHIPPED_DIR)
    if key not in _VERIFIED:
        verify_tiny_base(SHIPPED_DIR)
        _VERIFIED.add(key)
    return SHIPPED_DIR
