"""One adapted projection: frozen base Linear/Conv1D (or a 4/8-bit quantized Linear, which its own forward
dequantizes) plus E LoRA experts mixed by a shared router.

All experts' deltas are computed in two matmuls: the A matrices concatenated to rank E*r, the E*r
activations scaled block-wise by the routing weights, then the concatenated B matrices. Sparse routing only
zeroes weights, so it never costs more than dense routing. Without autograd (generation, evaluation) the
concatenated matrices are kept between forwards and rebuilt only when an expert's weights change (an optimizer
step, a load, a copy or new experts all bump the parameters' version counters or storage).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from dylora_moe.model.casting import as_dtype
from dylora_moe.model.router import Router
from dylora_moe.model.targets import linear_shape


class MoELoRALinear(nn.Module):
    def __init__(
        self,
        base: nn.Module,
        router: Router,
        num_experts: int,
        r: int,
        scaling: float,
        dropout: float,
        init_b_std: float,
    ):
        super().__init__()
        shape = linear_shape(base)
        if shape is None:
            raise TypeError(f"cannot adapt {type(base).__name__}: only Linear, Conv1D and bitsandbytes "
                            "Linear4bit/Linear8bitLt are supported")
        self.in_features, self.out_features = shape
        self.base = base
        self.r = r
        self.scaling = scaling
        self.init_b_std = init_b_std
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        self._concat_key: tuple | None = None
        self._concat: tuple[torch.Tensor, torch.Tensor] | None = None
        self.__dict__["router"] = router  # shared with sibling projections; registered once on the model
        router.num_consumers += 1
        self.add_experts(num_experts)

    @property
    def num_experts(self) -> int:
        return len(self.lora_A)

    def add_experts(self, count: int) -> None:
        """Append `count` freshly initialised experts; existing experts are untouched."""
        weight = next(self.base.parameters())
        device = weight.device
        for _ in range(count):
            a = torch.empty(self.r, self.in_features, device=device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.randn(self.out_features, self.r, device=device) * self.init_b_std
            self.lora_A.append(nn.Parameter(a))
            self.lora_B.append(nn.Parameter(b))

    def concatenated_experts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (E*r, in), B (out, E*r)); with autograd off, reused until a parameter changes."""
        if torch.is_grad_enabled():
            self._concat_key = self._concat = None
            return torch.cat(tuple(self.lora_A), dim=0), torch.cat(tuple(self.lora_B), dim=1)
        params = (*self.lora_A, *self.lora_B)
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        if self._concat is None or key != self._concat_key:
            self._concat = (torch.cat(tuple(self.lora_A), dim=0), torch.cat(tuple(self.lora_B), dim=1))
            self._concat_key = key
        return self._concat

    def train(self, mode: bool = True) -> "MoELoRALinear":
        self._concat_key = self._concat = None  # also covers in-place writes through `.data`, which keep versions
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        expert = None if self.training else self.router.single_expert(x)
        if expert is not None:  # one token, one expert: that expert's LoRA alone (the others' weights are 0)
            a, b = self.lora_A[expert], self.lora_B[expert]
            delta = F.linear(F.linear(as_dtype(x, a.dtype), a), b) * self.scaling
            return out + as_dtype(delta, out.dtype)
        weights = self.router(x)  # (..., E)
        a, b = self.concatenated_experts()  # (E*r, in), (out, E*r)
        if self.training:
            x = self.dropout(x)
        hidden = F.linear(as_dtype(x, a.dtype), a)  # (..., E*r)
        hidden = (hidden.unflatten(-1, (self.num_experts, self.r)) * as_dtype(weights, a.dtype).unsqueeze(-1)).flatten(-2)
        delta = F.linear(hidden, b) * self.scaling
        return out + as_dtype(delta, out.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, experts={self.num_experts}, r={self.r}"
