"""`--attn_implementation`: which attention kernel the base model runs, checked before anything is loaded.

Why checked here: transformers fails late and at length (an ImportError deep in loading for flash-attn, a
NotImplementedError at the first backward for flex attention on CPU); a user gets one line instead.
"""

from __future__ import annotations

from dylora_moe.errors import UserError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
DEFAULT_ATTN_IMPLEMENTATION = "sdpa"


def check_attn_implementation(name: str, training: bool = False) -> None:
    """Raise UserError when `name` is unknown or cannot run on this machine."""
    import torch

    if name not in ATTN_IMPLEMENTATIONS:
        raise UserError(f"--attn_implementation {name!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}; "
                        f"use {DEFAULT_ATTN_IMPLEMENTATION} (the default) unless you need another")
    if name == "flash_attention_2" and not torch.cuda.is_available():
        raise UserError("--attn_implementation flash_attention_2 needs an NVIDIA GPU (and the flash-attn package), "
                        "but this machine has no CUDA device; use --attn_implementation sdpa")
    if name == "flex_attention" and training and not torch.cuda.is_available():
        raise UserError("--attn_implementation flex_attention cannot train on CPU (PyTorch has no CPU backward for "
                        "it); use --attn_implementation sdpa, or train on a GPU")


def attn_load_error(name: str, exc: Exception) -> UserError:
    """One line for a kernel transformers refused while loading (missing package, unsupported architecture)."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"the base model cannot use --attn_implementation {name}: {detail}; "
                     "use --attn_implementation sdpa or eager")
