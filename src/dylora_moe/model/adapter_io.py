"""Save and load the trainable state (experts, gates, maturity) as safetensors + a JSON config.

The files never contain base-model weights and load onto a freshly loaded base. Loading state that does
not fit the model raises a `UserError` that names the saved value and the model's value.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dylora_moe.errors import UserError
from dylora_moe.model.base_fingerprint import same_base
from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.moe_model import DyLoRAMoEModel

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"

# config fields whose mismatch makes saved state unusable on a model, with the flag that sets them
STRUCTURAL_FIELDS = {
    "num_experts": "--num_experts",
    "lora_r": "--lora_r",
    "target_modules": "--target_modules",
    "base_model": "--model_name",
    "router_input": "--router_input",
}


def adapter_state_dict(model: DyLoRAMoEModel) -> dict[str, torch.Tensor]:
    """Flat name -> tensor map of everything trainable, plus the maturity flags."""
    state: dict[str, torch.Tensor] = {"maturity": model.maturity.detach().to(torch.uint8).cpu()}
    for name, layer in model.adapted_layers():
        for e in range(layer.num_experts):
            state[f"{name}.lora_A.{e}"] = layer.lora_A[e].detach().float().cpu().contiguous()
            state[f"{name}.lora_B.{e}"] = layer.lora_B[e].detach().float().cpu().contiguous()
    for key, router in model.routers.items():
        state[f"routers.{key}.weight"] = router.weight.detach().float().cpu().contiguous()
    return state


def save_adapter(model: DyLoRAMoEModel, directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.dylora_config
    config.extra["maturity"] = [bool(x) for x in model.maturity.tolist()]
    weights_path = directory / ADAPTER_WEIGHTS_NAME
    save_file(adapter_state_dict(model), str(weights_path), metadata={"format": "dylora-moe-adapter/1"})
    return [weights_path, config.save(directory)]


def check_compatible(saved: DyLoRAConfig, current: DyLoRAConfig, source: str) -> None:
    """Raise one clear line when saved adapter state cannot be loaded into the current model."""
    for name, flag in STRUCTURAL_FIELDS.items():
        saved_value, current_value = getattr(saved, name), getattr(current, name)
        if name == "target_modules":
            saved_value, current_value = sorted(saved_value or []), sorted(current_value or [])
        if name == "base_model" and (not saved_value or not current_value or _moved_local_base(saved, current)):
            continue
        if saved_value != current_value:
            raise UserError(
                f"checkpoint {source} has {name}={saved_value} but the model has {name}={current_value}; "
                f"pass {flag} {_as_flag(saved_value)} to match the checkpoint"
                + (" (or --grow_experts to add experts)" if name == "num_experts" else "")
            )


def _moved_local_base(saved: DyLoRAConfig, current: DyLoRAConfig) -> bool:
    """The saved local base directory is gone and the model's base is another local directory: the base was
    moved, so its weights' fingerprint (checked on load) decides, not its path."""
    return (bool(saved.base_fingerprint) and not Path(saved.base_model).expanduser().exists()
            and Path(current.base_model).expanduser().is_dir())


def _as_flag(value) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def load_adapter(model: DyLoRAMoEModel, directory: str | Path, check_base: bool = True) -> DyLoRAConfig:
    """Load experts, gates and maturity saved by `save_adapter` into `model` (in place)."""
    directory = Path(directory)
    saved = DyLoRAConfig.load(directory)
    current = model.dylora_config
    if not check_base:
        saved.base_model = ""
    check_compatible(saved, current, str(directory))
    actual = model.current_base_fingerprint() if check_base and saved.base_fingerprint else {}
    if actual and not same_base(saved.base_fingerprint, actual):
        raise UserError(
            f"checkpoint {directory} was trained on other weights than the base {current.base_model!r} loaded here "
            f"(fingerprints {saved.base_fingerprint.get('values', [])[:2]}... vs "
            f"{actual.get('values', [])[:2]}...): the same name, different weights (the embedded "
            "tiny base is rebuilt per Python version; a hub id can change revision); load the base it was trained on"
        )
    state = load_file(str(directory / ADAPTER_WEIGHTS_NAME))
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"adapter weights in {directory} do not fit the model: "
            f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}; "
            "was it saved for another base model or target modules?"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(
                f"adapter tensor {key} in {directory} has shape {tuple(tensor.shape)} "
                f"but the model expects {tuple(expected[key].shape)}"
            )
    with torch.no_grad():
        model.maturity.copy_(state["maturity"].to(torch.bool))
        for name, layer in model.adapted_layers():
            for e in range(layer.num_experts):
                layer.lora_A[e].copy_(state[f"{name}.lora_A.{e}"])
                layer.lora_B[e].copy_(state[f"{name}.lora_B.{e}"])
        for key, router in model.routers.items():
            router.weight.copy_(state[f"routers.{key}.weight"])
    return saved
