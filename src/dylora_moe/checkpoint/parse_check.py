"""Do a checkpoint's files parse? Hashes prove the bytes are the ones listed, not that they are readable.

Why: a file written wrongly and then re-manifested matches its manifest yet fails to load (a raw
UnpicklingError / JSONDecodeError / SafetensorError at resume time, and `auto` would not fall back). Parsing
every file the trainer reads, with the same safe loaders it uses (JSON, safetensors, `torch.load(...,
weights_only=True)`), turns that into a `CheckpointError` that names the file. Expert weights must also be
finite: a diverged run's NaN experts are never a checkpoint to resume.
"""

from __future__ import annotations

import json
from pathlib import Path

# safetensors files dylora-moe writes (model/adapter_io.py, continual/library.py); others are the user's
CHECKED_SAFETENSORS = {"adapter_model.safetensors", "skill_library.safetensors"}
FINITE_REQUIRED = {"adapter_model.safetensors"}


def parse_problem(path: Path) -> str | None:
    """Why `path` does not load the way the trainer loads it (None when it does, or is not ours to check)."""
    name = path.name
    try:
        if name.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith((".pt", ".pth")):
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
        elif name in CHECKED_SAFETENSORS:
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if name in FINITE_REQUIRED:
                return _non_finite(tensors)
    except Exception as exc:  # noqa: BLE001 - every loader's failure means the same: unreadable
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return f"does not parse ({type(exc).__name__}: {detail[:160]})"
    return None


def _non_finite(tensors: dict) -> str | None:
    for key, tensor in sorted(tensors.items()):
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            return f"holds non-finite values (NaN/inf) in {key}: the run that saved it had diverged"
    return None


def first_parse_problem(ckpt_dir: Path, names: list[str]) -> tuple[str, str] | None:
    """(file, reason) for the first listed file that does not parse."""
    for rel in names:
        problem = parse_problem(ckpt_dir / rel)
        if problem is not None:
            return rel, problem
    return None

