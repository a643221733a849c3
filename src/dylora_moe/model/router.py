"""Router: one small linear gate per shared projection input.

Dense (softmax with a temperature over all experts) while any expert is immature; sparse top-k (weights
renormalised over the chosen k) once all are mature. The gate reads the same tensor as the projections it
serves, so routing costs no extra forward pass; projections sharing that input reuse one routing decision.

What the gate reads (`router_input`): the token's own input ("token"); the causal running mean of its own
inputs over the sequence so far, padding excluded ("context"); or one such running mean shared by every gate,
that of the first adapted projection's input, i.e. of the normed token embeddings ("sequence"). Token inputs of
two code skills are hard to tell apart (a linear probe on the tiny base: 64-74% per layer), their running means
much less so (80-100%), and the first layer's the least (100%), so context routing lets experts specialise by
skill rather than by token type. It stays causal and one-pass; during cached generation the routers that
compute a running mean carry its sum from one step to the next.

A router's forward depends on its input, its own settings (top-k, temperature, router input) and the
`RoutingPass` of the current forward (padding mask, maturity, supervision targets, capture), which its model
makes at the start of every base forward; the gating math itself is `_gate` / `_inference_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from dylora_moe.model.casting import as_dtype

ROUTER_INPUTS = ("token", "context", "sequence")


@dataclass
class RoutingPass:
    """What the routers of one model read during one base forward besides their input and their own settings.

    Made by `DyLoRAMoEModel` at the start of each base forward (and nowhere else) from the enclosing
    `routing_pass(...)` scope; the routers only add their results (`shared_context`, `stats`). Outside any model
    (a bare router or layer call) a router uses `RoutingPass()`: dense routing, no statistics."""

    sparse: bool = False  # every expert is mature: top-k instead of the dense softmax
    collect_stats: bool = False  # record `RouterStats` (a forward with labels)
    token_mask: torch.Tensor | None = None  # (batch, seq) 1 for real tokens, 0 for padding
    segment_starts: torch.Tensor | None = None  # (batch, seq) packed rows: index of each token's example start
    continue_context: bool = False  # this forward continues the previous one's sequences (cached generation)
    targets: torch.Tensor | None = None  # (batch,) the expert each sequence should route to, -1 for none
    target_mask: torch.Tensor | None = None  # (batch, seq) tokens the supervision covers (None: all real tokens)
    target_weights: torch.Tensor | None = None  # (E,) weight of each target expert's tokens (None: per batch)
    detach_weights: bool = False  # the LM loss does not train the gates (supervised routing learns from labels)
    capture: dict | None = None  # when a dict: each router appends its gate inputs under its id (prototypes)
    shared_context: torch.Tensor | None = None  # result: "sequence" routing's running mean, set by the first gate
    stats: list["RouterStats"] = field(default_factory=list)  # result: one entry per router, from its first decision
    recorded: set[int] = field(default_factory=set)  # result: ids of the routers that wrote stats or capture


@dataclass
class RouterStats:
    balance_loss: torch.Tensor  # differentiable Switch-style auxiliary loss
    usage: torch.Tensor  # (E,) mean routing weight per expert over real tokens (detached)
    entropy: torch.Tensor  # mean entropy of the router's softmax over real tokens (detached)
    supervision_loss: torch.Tensor | None = None  # CE of the softmax toward `targets` over real tokens, if given


class SharedDecision:
    """One routing decision kept for the sibling projections that read the same input tensor: a plain object,
    so that writing it costs no `nn.Module.__setattr__` (this runs a few times per layer and decoded token)."""

    __slots__ = ("input", "kind", "value", "reads")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.input = self.kind = self.value = None  # kind: the weights' `repeat`, or "index" (single_expert)
        self.reads = 0

    def keep(self, x: torch.Tensor, kind, value) -> None:
        self.input, self.kind, self.value, self.reads = x, kind, value, 1


class Router(nn.Module):
    """Linear gate in_features -> num_experts, without bias, with its fixed settings: how many experts sparse
    routing picks (`top_k`), the softmax `temperature` and what the gate reads (`router_input`)."""

    def __init__(self, in_features: int, num_experts: int, *, top_k: int = 1, temperature: float = 1.0,
                 router_input: str = "token", init_std: float = 0.02):
        super().__init__()
        if router_input not in ROUTER_INPUTS:
            raise ValueError(f"router_input must be one of {ROUTER_INPUTS}, got {router_input!r}")
        self.weight = nn.Parameter(torch.randn(num_experts, in_features) * init_std)
        self.top_k = top_k
        self.temperature = temperature
        self.router_input = router_input
        self.active_pass: RoutingPass | None = None  # set by the owning model at the start of each base forward
        self.num_consumers = 0  # projections that read this router (set when they are built)
        self._shared = SharedDecision()  # the latest decision, for sibling projections reading the same input
        self._one_hot_key: tuple | None = None
        self._one_hot: torch.Tensor | None = None
        self._context_state: tuple[torch.Tensor, torch.Tensor] | None = None  # running (sum, count) per sequence

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    @property
    def routing_pass(self) -> RoutingPass:
        """This forward's pass; a fresh default one when the router runs outside a model's base forward."""
        return self.active_pass if self.active_pass is not None else RoutingPass()

    def clear_cache(self) -> None:
        self._shared.clear()

    # ----------------------------------------------------------------- forward: bookkeeping around the gate
    def forward(self, x: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """Routing weights (..., E) for input x (..., in_features); with `repeat` > 1 each expert's weight
        repeated that many times side by side, (..., E*repeat), the layout the inference path multiplies the
        experts' concatenated rank activations by. Reused when a sibling projection asks again for the same
        tensor."""
        cached = self._from_cache(x, repeat)
        if cached is not None:
            return cached
        p = self.routing_pass
        first = (p.capture is not None or p.collect_stats) and self._first_record(p)
        gate_input = self._gate_input(x, p)
        if p.capture is not None and first:
            p.capture.setdefault(id(self), []).append(gate_input.detach())
        if not (torch.is_grad_enabled() or p.collect_stats or (p.sparse and self.top_k > 1)):
            return self._remember(x, repeat, self._inference_weights(gate_input, p.sparse, repeat, x.dtype))
        probs, weights = self._gate(gate_input, p.sparse)
        if p.collect_stats:
            stats = self._stats(probs, weights, p)  # also when recomputing: it must save what the forward saved
            if first:
                p.stats.append(stats)
        weights = weights.to(x.dtype)
        if p.detach_weights:
            weights = weights.detach()
        if repeat > 1:
            weights = weights.repeat_interleave(repeat, dim=-1)
        return self._remember(x, repeat, weights)

    def _first_record(self, p: RoutingPass) -> bool:
        """Whether this router writes its statistics and capture into pass `p` now (once per pass). A router reads
        one input per base forward, so a second decision is activation checkpointing recomputing the layer in
        backward: the forward's records already stand, and ones kept from the recomputation would hold on to its
        activations."""
        if id(self) in p.recorded:
            return False
        p.recorded.add(id(self))
        return True

    def single_expert(self, x: torch.Tensor) -> int | None:
        """The one expert sparse top-1 routing picks for `x` when `x` is a single token on the CPU and no
        statistics or gradients are wanted (greedy decoding at batch 1), so the projection computes only that
        expert's LoRA instead of all E and a one-hot mix; None in every other case. Its choice is the argmax of
        the same logits `forward` would compute. CPU only: reading the index is a device sync on a GPU."""
        p = self.routing_pass
        if not (p.sparse and self.top_k == 1 and x.device.type == "cpu" and x.shape[:-1].numel() == 1) \
                or torch.is_grad_enabled() or p.collect_stats or p.capture is not None:
            return None
        cached = self._from_cache(x, "index")
        if cached is not None:
            return cached
        gate_input = as_dtype(self._gate_input(x, p), self.weight.dtype)
        return self._remember(x, "index", int(torch.mv(self.weight, gate_input.reshape(-1)).argmax()))  # the temperature does not move an argmax

    def _from_cache(self, x: torch.Tensor, kind):
        """The decision already made for this very tensor (in this form: `repeat`, or "index" for
        `single_expert`) by a sibling projection, if any."""
        shared = self._shared
        if shared.input is not x or shared.kind != kind or shared.value is None:
            return None
        value = shared.value
        shared.reads += 1
        if shared.reads >= self.num_consumers:  # every sibling projection has read it: drop the reference
            shared.clear()
        return value

    def _remember(self, x: torch.Tensor, kind, value):
        """Keep this decision for the sibling projections that read the same input."""
        if self.num_consumers > 1:
            self._shared.keep(x, kind, value)
        return value

    # ----------------------------------------------------------------- gating
    def _gate(self, gate_input: torch.Tensor, sparse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(softmax probabilities, routing weights), both float32: the weights are the probabilities when dense,
        the softmax over the top-k logits scattered back when sparse."""
        logits = F.linear(gate_input.to(self.weight.dtype), self.weight) / self.temperature
        probs = torch.softmax(logits.float(), dim=-1)
        if not sparse:
            return probs, probs
        k = min(self.top_k, self.num_experts)
        top_values, top_index = logits.float().topk(k, dim=-1)
        return probs, torch.zeros_like(probs).scatter(-1, top_index, torch.softmax(top_values, dim=-1))

    def _inference_weights(self, gate_input: torch.Tensor, sparse: bool, repeat: int,
                           dtype: torch.dtype) -> torch.Tensor:
        """The same weights as the training path (repeated `repeat` times, in `dtype`) in fewer ops, without
        statistics or autograd: the softmax for dense routing; for sparse top-1 (whose top-1 softmax is exactly
        1) the argmax's row of a one-hot table."""
        logits = F.linear(as_dtype(gate_input, self.weight.dtype), self.weight)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if not sparse:
            weights = as_dtype(torch.softmax(logits, dim=-1, dtype=torch.float32), dtype)
            return weights.repeat_interleave(repeat, dim=-1) if repeat > 1 else weights
        return F.embedding(logits.argmax(dim=-1), self._one_hot_rows(repeat, dtype, logits.device))

    def _one_hot_rows(self, repeat: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(E, E*repeat): row e is expert e's one-hot weights, repeated; kept while E, repeat, dtype and device
        stay the same."""
        key = (self.num_experts, repeat, dtype, device)
        if self._one_hot_key != key:
            eye = torch.eye(self.num_experts, dtype=dtype, device=device)
            self._one_hot = eye.repeat_interleave(repeat, dim=-1)
            self._one_hot_key = key
        return self._one_hot

    # ----------------------------------------------------------------- what the gate reads
    def _gate_input(self, x: torch.Tensor, p: RoutingPass) -> torch.Tensor:
        if self.router_input == "token" or x.dim() != 3:
            return x
        if self.router_input == "sequence":
            shared = p.shared_context
            if shared is None or shared.shape[:2] != x.shape[:2]:  # the first gate of this forward computes it
                shared = p.shared_context = self._running_mean(x, p)
            return shared
        return self._running_mean(x, p)

    def _running_mean(self, x: torch.Tensor, p: RoutingPass) -> torch.Tensor:
        """Causal mean of x (batch, seq, d) over each sequence's real tokens up to and including each position;
        continues the previous forward's sums when the model is generating with a KV cache."""
        batch, seq = x.shape[0], x.shape[1]
        mask = p.token_mask
        if mask is not None and mask.shape[0] == batch and mask.shape[1] >= seq:
            weights = mask[:, -seq:].to(device=x.device, dtype=torch.float32).unsqueeze(-1)
        else:
            weights = torch.ones(batch, seq, 1, device=x.device, dtype=torch.float32)
        weighted = x.float() * weights
        sums = weighted.cumsum(dim=1)
        counts = weights.cumsum(dim=1)
        starts = p.segment_starts
        if starts is not None and starts.shape == (batch, seq):
            sums, counts = _restart_at(starts, sums, weighted), _restart_at(starts, counts, weights)
        state = self._context_state
        if p.continue_context and state is not None:
            if state[0].shape[0] != batch:
                raise RuntimeError("context routing: the batch changed in the middle of cached generation")
            sums = sums + state[0].unsqueeze(1)
            counts = counts + state[1].unsqueeze(1)
        self._context_state = (sums[:, -1].detach(), counts[:, -1].detach())
        return (sums / counts.clamp_min(1.0)).to(x.dtype)

    # ----------------------------------------------------------------- statistics and auxiliary losses
    def _stats(self, probs: torch.Tensor, weights: torch.Tensor, p: RoutingPass) -> RouterStats:
        num_experts = probs.shape[-1]
        flat_probs = probs.reshape(-1, num_experts)
        flat_weights = weights.reshape(-1, num_experts)
        mask = None
        if p.token_mask is not None and p.token_mask.numel() == flat_probs.shape[0]:
            mask = p.token_mask.reshape(-1, 1).to(flat_probs.dtype)
        if mask is None:
            mask = torch.ones(flat_probs.shape[0], 1, device=flat_probs.device, dtype=flat_probs.dtype)
        count = mask.sum().clamp_min(1.0)
        k = min(self.top_k, num_experts) if p.sparse else 1
        chosen = flat_probs.detach().topk(k, dim=-1).indices
        assigned = torch.zeros_like(flat_probs).scatter(-1, chosen, 1.0 / k)
        fraction_assigned = (assigned * mask).sum(0) / count
        mean_prob = (flat_probs * mask).sum(0) / count
        balance = num_experts * (fraction_assigned * mean_prob).sum()
        usage = ((flat_weights.detach() * mask).sum(0) / count).float()
        token_entropy = -(flat_probs.detach() * flat_probs.detach().clamp_min(1e-12).log()).sum(-1, keepdim=True)
        entropy = (token_entropy * mask).sum() / count
        supervised = mask
        if p.target_mask is not None and p.target_mask.numel() == flat_probs.shape[0]:
            supervised = mask * p.target_mask.reshape(-1, 1).to(flat_probs.dtype)
        return RouterStats(balance_loss=balance, usage=usage, entropy=entropy,
                           supervision_loss=self._supervision(flat_probs, supervised, p))

    @staticmethod
    def _supervision(flat_probs: torch.Tensor, mask: torch.Tensor, p: RoutingPass) -> torch.Tensor | None:
        """Cross entropy of the per-token softmax toward each sequence's target expert (skill-supervised
        routing) over real tokens of sequences that have a target, class-balanced so that the skill with most
        tokens (the one being learned) does not teach the router a global preference for its expert: with
        `target_weights` (each expert's inverse share of the phase's tokens) a weighted mean over the batch's
        tokens, else the mean over each target expert's tokens averaged over the experts present.
        None without targets."""
        targets = p.targets
        if targets is None or flat_probs.shape[0] % targets.numel():
            return None
        num_experts = flat_probs.shape[-1]
        per_token = targets.to(flat_probs.device).long().repeat_interleave(flat_probs.shape[0] // targets.numel())
        valid = mask.reshape(-1) * (per_token >= 0).to(mask.dtype)
        one_hot = F.one_hot(per_token.clamp(0, num_experts - 1), num_experts).to(flat_probs.dtype) * valid.unsqueeze(-1)
        nll = -(flat_probs.clamp_min(1e-12).log() * one_hot).sum(0)  # (E,) summed per target expert
        count = one_hot.sum(0)
        if p.target_weights is not None and p.target_weights.numel() == num_experts:
            weights = p.target_weights.to(nll.device, nll.dtype)
            return (nll * weights).sum() / count.sum().clamp_min(1.0)
        present = count > 0
        if not bool(present.any()):
            return nll.sum() * 0.0
        return (nll[present] / count[present]).mean()

    def prototype_loss(self, prototypes: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Cross entropy of this gate's softmax at stored gate inputs of earlier skills (`prototypes` (N, d))
        toward their experts: keeps earlier skills' contexts routed to their experts while a new skill trains
        the gates, without replaying their data."""
        logits = F.linear(prototypes.to(self.weight.device, self.weight.dtype), self.weight) / self.temperature
        return F.cross_entropy(logits.float(), experts.to(self.weight.device).long())

    def add_experts(self, count: int, init_std: float) -> None:
        """Grow by `count` outputs; existing rows are kept bit for bit."""
        new_rows = torch.randn(count, self.weight.shape[1], device=self.weight.device) * init_std
        grown = torch.cat([self.weight.data, new_rows.to(self.weight.dtype)], dim=0)
        self.weight = nn.Parameter(grown, requires_grad=self.weight.requires_grad)
        self.clear_cache()


def _restart_at(starts: torch.Tensor, running: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Running sums (batch, seq, d) that restart at each packed example: minus the sum before its first token."""
    before = running - step  # exclusive running sums
    index = starts.to(running.device).unsqueeze(-1).expand(-1, -1, running.shape[-1])
    return running - before.gather(1, index)
