"""One adapted projection: frozen base Linear/Conv1D (or a 4/8-bit quantized Linear, which its own forward
dequantizes) plus E LoRA experts mixed by a shared router.

All experts' deltas are computed in two matmuls: the A matrices concatenated to rank E*r, the E*r
activations scaled block-wise by the routing weights, then the concatenated B matrices. Sparse routing only
zeroes weights, so it never costs more than dense routing. Without autograd (generation, evaluation) the
experts are kept laid out for inference (`InferenceExperts`: the scaling folded into B, B transposed for an
in-place accumulation into the base's output) and rebuilt only when an expert's weights change (an optimizer
step, a load, a copy or new experts all bump the parameters' version counters or storage); decoding then costs
three small ops per projection besides the base's, where a single LoRA costs four.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dylora_moe.model.casting import as_dtype
from dylora_moe.model.router import Router
from dylora_moe.model.targets import linear_shape


@dataclass(frozen=True)
class InferenceExperts:
    """The experts as the no-autograd path reads them: A (E*r, in), the scaled B transposed (E*r, out), and
    each expert's rows of both (views)."""

    a: torch.Tensor
    bt: torch.Tensor
    single: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @classmethod
    def build(cls, a: torch.Tensor, b: torch.Tensor, r: int, scaling: float) -> "InferenceExperts":
        bt = (b * scaling).t().contiguous()
        rows = range(0, a.shape[0], r)
        return cls(a=a, bt=bt, single=tuple((a[i:i + r], bt[i:i + r]) for i in rows))


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
        self._concat: InferenceExperts | None = None
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
        """(A (E*r, in), B (out, E*r)), concatenated anew: the autograd path's view of the experts."""
        return torch.cat(tuple(self.lora_A), dim=0), torch.cat(tuple(self.lora_B), dim=1)

    def inference_experts(self) -> InferenceExperts:
        """The experts laid out for the no-autograd path, kept until a parameter changes."""
        params = (*self.lora_A._parameters.values(), *self.lora_B._parameters.values())  # not ParameterList's slow iterator
        key = tuple((p._version, p.data_ptr(), p.dtype) for p in params)  # a new device or dtype is a new storage
        if self._concat is None or key != self._concat_key:
            a, b = self.concatenated_experts()
            self._concat = InferenceExperts.build(a, b, self.r, self.scaling)
            self._concat_key = key
        return self._concat

    def train(self, mode: bool = True) -> "MoELoRALinear":
        self._concat_key = self._concat = None  # also covers in-place writes through `.data`, which keep versions
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.training or torch.is_grad_enabled():
            if self._concat is not None:  # the experts are about to change: drop the inference layout
                self._concat_key = self._concat = None
            return out + as_dtype(self._delta(x), out.dtype)
        return self._add_inference_delta(out, x)

    def _delta(self, x: torch.Tensor) -> torch.Tensor:
        """The mixed experts' output for x, differentiable in the experts and (unless detached) the gate."""
        weights = self.router(x)  # (..., E)
        a, b = self.concatenated_experts()  # (E*r, in), (out, E*r)
        if self.training:
            x = self.dropout(x)
        hidden = F.linear(as_dtype(x, a.dtype), a)  # (..., E*r)
        hidden = (hidden.unflatten(-1, (self.num_experts, self.r)) * as_dtype(weights, a.dtype).unsqueeze(-1)).flatten(-2)
        return F.linear(hidden, b) * self.scaling

    def _add_inference_delta(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`out` plus the same delta as `_delta`, in fewer ops: the scaling is folded into B, the routing weights
        come already repeated over each expert's rank, and B's product is accumulated into `out` in place. Sparse
        top-1 decoding of one token computes the chosen expert alone."""
        experts = self.inference_experts()
        expert = self.router.single_expert(x)  # the router reads the projection's own input (its cache key)
        hidden_input = as_dtype(x, experts.a.dtype)
        if expert is not None:
            a, bt = experts.single[expert]
            hidden = F.linear(hidden_input, a)
        else:
            bt = experts.bt
            mix = self.router(x, repeat=self.r)  # (..., E*r)
            hidden = F.linear(hidden_input, experts.a).mul_(as_dtype(mix, experts.a.dtype))
        if out.dtype == bt.dtype and out.is_contiguous():
            out.view(-1, bt.shape[1]).addmm_(hidden.reshape(-1, bt.shape[0]), bt)
            return out
        return out + as_dtype(torch.matmul(hidden, bt), out.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, experts={self.num_experts}, r={self.r}"
