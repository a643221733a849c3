"""RNG states of one process as tensors and plain types, loadable with `torch.load(weights_only=True)`.

HF's own format pickles numpy's state tuple (needs allow-listed globals); a downloaded checkpoint is
untrusted, so we keep every value a tensor, int, float, str, list or dict.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch


def rng_file(directory: str | Path, process_index: int) -> Path:
    return Path(directory) / f"rng_state_{process_index}.pth"


def capture_rng_state() -> dict:
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_rng_state(directory: str | Path, process_index: int) -> Path:
    path = rng_file(directory, process_index)
    torch.save(capture_rng_state(), path)
    return path


def load_rng_state(directory: str | Path, process_index: int) -> bool:
    """Restore this process's RNG; False when the checkpoint has no file for it (other world size)."""
    path = rng_file(directory, process_index)
    if not path.is_file():
        return False
    restore_rng_state(torch.load(path, weights_only=True))
    return True
