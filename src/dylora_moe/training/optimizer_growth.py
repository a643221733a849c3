"""Optimizer state across a grown expert pool (`--grow_experts` on a full resume).

Every checkpoint lists, next to optimizer.pt, the parameter name behind each optimizer slot. When the resumed
model has different parameters (new experts; gates with more rows) the saved state is re-mapped by name:
existing parameters keep their moments (a grown gate keeps its old rows, new rows start at zero), new
parameters start fresh. Without a mismatch nothing changes: HF's own loader runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

OPTIMIZER_PARAMS_NAME = "optimizer_params.json"


def optimizer_param_names(optimizer, model) -> list[list[str]]:
    """For each param group, the names of its parameters in optimizer order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), f"<unnamed {i}>") for i, p in enumerate(g["params"])] for g in optimizer.param_groups]


def save_optimizer_param_names(optimizer, model, directory: str | Path) -> Path:
    path = Path(directory) / OPTIMIZER_PARAMS_NAME
    path.write_text(json.dumps({"groups": optimizer_param_names(optimizer, model)}, indent=1))
    return path


def saved_param_names(checkpoint: str | Path) -> list[list[str]] | None:
    path = Path(checkpoint) / OPTIMIZER_PARAMS_NAME
    return json.loads(path.read_text())["groups"] if path.is_file() else None


def _fit(saved: torch.Tensor, current: torch.Tensor) -> torch.Tensor | None:
    """The saved moment reshaped onto the current parameter: kept, zero-padded along dim 0, or None."""
    if saved.shape == current.shape:
        return saved
    if saved.dim() == current.dim() and saved.shape[1:] == current.shape[1:] and saved.shape[0] < current.shape[0]:
        grown = torch.zeros(current.shape, dtype=saved.dtype)
        grown[: saved.shape[0]] = saved
        return grown
    return None


def remap_optimizer_state(saved_state: dict, saved_names: list[list[str]], optimizer, model) -> tuple[dict, int, int]:
    """A state dict for `optimizer` built from `saved_state` by parameter name; returns (dict, kept, fresh)."""
    current_names = optimizer_param_names(optimizer, model)
    params = {n: p for n, p in model.named_parameters()}
    by_name: dict[str, dict] = {}
    for group, names in zip(saved_state["param_groups"], saved_names):
        for index, name in zip(group["params"], names):
            if index in saved_state["state"]:
                by_name[name] = saved_state["state"][index]
    target = optimizer.state_dict()
    new_state: dict[int, dict] = {}
    kept = fresh = 0
    for g, (group, names) in enumerate(zip(target["param_groups"], current_names)):
        if g < len(saved_state["param_groups"]):
            for key, value in saved_state["param_groups"][g].items():
                if key != "params":
                    group[key] = value
        for index, name in zip(group["params"], names):
            old = by_name.get(name)
            fitted = None
            if old is not None:
                fitted = {k: (_fit(v, params[name].detach().cpu()) if torch.is_tensor(v) and v.dim() > 0 else v)
                          for k, v in old.items()}
                if any(v is None for v in fitted.values()):
                    fitted = None
            if fitted is None:
                fresh += 1
            else:
                new_state[index] = fitted
                kept += 1
    return {"state": new_state, "param_groups": target["param_groups"]}, kept, fresh
