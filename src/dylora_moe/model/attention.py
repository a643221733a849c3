"""`--attn_implementation`: which attention kernel the base model runs, checked before anything is loaded.

Unset (None), transformers picks for the architecture: sdpa where it supports it, else eager (Gemma-2, whose
logit soft-capping sdpa cannot do). Why checked here: transformers fails late and at length (an ImportError
deep in loading for flash-attn, a NotImplementedError at the first backward for flex attention on CPU); a user
gets one line instead.
"""

from __future__ import annotations

from dylora_moe.errors import UserError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
UNSET_REASON = "transformers then picks sdpa where the architecture supports it, else eager"
UNSET_ADVICE = f"leave --attn_implementation unset ({UNSET_REASON})"
# the class attribute by which a transformers architecture says it supports a kernel (eager: every one)
_SUPPORT_FLAGS = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn",
                  "flex_attention": "_supports_flex_attn"}


def check_attn_implementation(name: str | None, training: bool = False) -> None:
    """Raise UserError when `name` is unknown or cannot run on this machine; None (the default) always can."""
    import torch

    if name is None:
        return
    if name not in ATTN_IMPLEMENTATIONS:
        raise UserError(f"--attn_implementation {name!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}; "
                        f"{UNSET_ADVICE} unless you need one of these")
    if name == "flash_attention_2" and not torch.cuda.is_available():
        raise UserError("--attn_implementation flash_attention_2 needs an NVIDIA GPU (and the flash-attn package), "
                        f"but this machine has no CUDA device; {UNSET_ADVICE}")
    if name == "flex_attention" and training and not torch.cuda.is_available():
        raise UserError("--attn_implementation flex_attention cannot train on CPU (PyTorch has no CPU backward for "
                        f"it); {UNSET_ADVICE}, or train on a GPU")


def usable_attn_implementations(model_class: type | None, training: bool = False) -> list[str]:
    """The kernels an architecture (its transformers model class) supports that can also run here (flash
    attention: with the flash-attn package installed); eager when the class is unknown."""
    from transformers.utils import is_flash_attn_2_available

    usable = []
    for name in ATTN_IMPLEMENTATIONS:
        flag = _SUPPORT_FLAGS.get(name)
        if flag is not None and not getattr(model_class, flag, False):
            continue
        if name == "flash_attention_2" and not is_flash_attn_2_available():
            continue
        try:
            check_attn_implementation(name, training=training)
        except UserError:
            continue
        usable.append(name)
    return usable


def attn_load_error(name: str, exc: Exception, usable: list[str]) -> UserError:
    """One line for a kernel transformers refused while loading (missing package, unsupported architecture),
    naming the kernels this architecture accepts here (`usable_attn_implementations`)."""
    message = str(exc).strip()
    detail = message.splitlines()[0].split(". ")[0].rstrip(".") if message else type(exc).__name__
    others = [other for other in usable if other != name] or ["eager"]
    return UserError(f"the base model cannot use --attn_implementation {name}: {detail}; use "
                     f"--attn_implementation {' or '.join(others)}, or leave it unset ({UNSET_REASON})")
