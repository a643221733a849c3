"""`as_dtype`: a tensor in a dtype, without dispatching a no-op `.to`.

Why a function for so little: when decoding one token at a time, the adapted projections run a few dozen tiny
ops per token, and a `.to` to the dtype a tensor already has still goes through the dispatcher. Skipping those
is part of what keeps batch-1 generation at PEFT's speed (docs/generate.md).
"""

from __future__ import annotations

import torch


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor if tensor.dtype == dtype else tensor.to(dtype)
