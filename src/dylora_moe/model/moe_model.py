"""DyLoRA-MoE: a frozen causal LM whose target projections carry routed LoRA experts.

One forward pass of the base model does everything: routers sit inside the adapted projections, so there is
no separate routing forward, and `generate()` (with or without KV cache) routes exactly as training does.

What the routers read besides their input is scoped like PEFT's forward hooks: `with model.routing_pass(...)`
says what the base forwards inside it ask for (statistics, supervision targets, a capture dict), and a
pre-hook on the base model turns that into a fresh `RoutingPass` at the start of each base forward, so nothing
one forward asked for reaches the next. A forward with labels returns its loss parts; `loss.combine_loss` adds
them (see `loss_parts`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers.utils import ModelOutput

from dylora_moe.errors import UserError
from dylora_moe.model.base_fingerprint import base_fingerprint
from dylora_moe.model.config import DyLoRAConfig
from dylora_moe.model.cross_entropy import shifted_cross_entropy_sum
from dylora_moe.model.layer import MoELoRALinear
from dylora_moe.model.loss import combine_loss
from dylora_moe.model.router import ROUTER_INPUTS, Router, RoutingPass
from dylora_moe.model.targets import default_targets, find_targets, gate_key, linear_layer_names, linear_shape


@dataclass
class DyLoRAOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None  # the base model's KV cache, when it returned one
    lm_loss: torch.Tensor | None = None  # divided by num_items_in_batch when given (a share of the step's loss)
    lm_loss_per_token: torch.Tensor | None = None  # this batch's mean token loss, for logging
    balance_loss: torch.Tensor | None = None
    expert_usage: torch.Tensor | None = None  # (E,) mean routing weight per expert
    routing_entropy: torch.Tensor | None = None
    routing_supervision_loss: torch.Tensor | None = None  # only when expert_ids were given
    routing_prototype_loss: torch.Tensor | None = None  # only when routing prototypes are set (continual mode)

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """The auxiliary losses this forward computed, by name (the parts of `loss` besides `lm_loss`)."""
        values = {name: getattr(self, name) for name in AUX_LOSSES}
        return {name: value for name, value in values.items() if value is not None}


AUX_LOSSES = ("balance_loss", "routing_supervision_loss", "routing_prototype_loss")
# what a routing_pass scope may set for the base forwards inside it (the rest each base forward derives itself)
REQUESTABLE = ("collect_stats", "targets", "target_mask", "target_weights", "detach_weights", "capture")


def shifted_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross entropy (fp32) and the number of scored tokens.

    Position t predicts label t+1; -100 is ignored; label smoothing applies to these shifted labels. Computed
    in chunks, so the full-vocabulary logits are never copied to fp32 (`cross_entropy.py`).
    """
    labels = labels.to(logits.device)
    total = shifted_cross_entropy_sum(logits, labels, label_smoothing)
    return total, (labels[..., 1:] != -100).sum()


def _check_request(caller: str, request: dict) -> None:
    unknown = set(request) - set(REQUESTABLE)
    if unknown:
        raise ValueError(f"{caller} got {sorted(unknown)}; it takes {', '.join(REQUESTABLE)}")


def _past_length(kwargs: dict) -> int:
    """Tokens already in the KV cache of this forward (0 for a fresh sequence or a forward without cache)."""
    position = kwargs.get("cache_position")
    if isinstance(position, torch.Tensor) and position.numel():
        return int(position.reshape(-1)[0])
    cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 passes `cache`
    if cache is not None and hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return 0


def packed_segment_starts(position_ids) -> torch.Tensor | None:
    """For packed rows (position_ids restarting at 0 inside a row, no attention mask): the index of each token's
    example start, so running means restart per example; None when no row holds more than one example."""
    if not isinstance(position_ids, torch.Tensor) or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return None
    restarts = position_ids[:, 1:] == 0
    if not bool(restarts.any()):
        return None
    index = torch.arange(position_ids.shape[1], device=position_ids.device).expand_as(position_ids)
    is_start = torch.cat([torch.ones_like(restarts[:, :1]), restarts], dim=1)
    return torch.where(is_start, index, torch.zeros_like(index)).cummax(dim=1).values


class DyLoRAMoEModel(nn.Module):
    """Wraps any `AutoModelForCausalLM`; only experts and routers are trainable."""

    def __init__(self, base_model: nn.Module, config: DyLoRAConfig):
        super().__init__()
        if config.num_experts < 1:
            raise UserError(f"num_experts must be at least 1, got {config.num_experts}")
        if config.top_k < 1:
            raise UserError(f"top_k must be at least 1, got {config.top_k}")
        model_type = getattr(getattr(base_model, "config", None), "model_type", "") or ""
        config.model_type = config.model_type or model_type
        if not config.target_modules:
            config.target_modules = default_targets(base_model, model_type)
        self.dylora_config = config
        self.base_model = base_model
        # the weights the adapters are trained on (kept when the config comes from a checkpoint; checked on load)
        config.base_fingerprint = config.base_fingerprint or base_fingerprint(base_model)
        self.label_smoothing = 0.0
        self.loss_term_weights: dict[str, float] = {}  # further auxiliary terms' weights (`weight_loss_term`)
        self._scope: dict = {}  # what the innermost open `routing_pass` asks for (see `routing_pass`)
        self._pass_defaults: dict = {}  # what every routing pass asks for unless its scope says otherwise
        self.routing_prototypes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # router key -> (inputs, experts)
        for param in self.base_model.parameters():
            param.requires_grad_(False)
        if config.router_input not in ROUTER_INPUTS:
            raise UserError(f"router_input must be one of {', '.join(ROUTER_INPUTS)}, got {config.router_input!r}")
        self.routers = nn.ModuleDict()
        self.register_buffer("maturity", torch.zeros(config.num_experts, dtype=torch.bool))
        self._inject()
        self.base_model.register_forward_pre_hook(self._start_pass, with_kwargs=True)
        self.train(base_model.training)  # new LoRA modules follow the base's mode (HF loads in eval mode)

    # ----------------------------------------------------------------- construction
    def _inject(self) -> None:
        cfg = self.dylora_config
        targets = find_targets(self.base_model, cfg.target_modules)
        if not targets:
            raise UserError(
                f"none of the target modules {cfg.target_modules} exist in this {cfg.model_type or 'model'}; "
                f"pass --target_modules with some of its Linear layers: {linear_layer_names(self.base_model)}"
            )
        widths = sorted({linear_shape(module)[0] for _, module in targets})
        if cfg.router_input == "sequence" and len(widths) > 1:
            raise UserError(
                f"router_input=sequence shares one context across all gates, but the target modules "
                f"{cfg.target_modules} read inputs of widths {widths}; target projections that read the hidden "
                "state (e.g. q_proj,v_proj) or use --router_input context"
            )
        for name, module in targets:
            key = gate_key(name).replace(".", "-")
            in_features, _ = linear_shape(module)
            if key not in self.routers:
                router = Router(in_features, cfg.num_experts, top_k=cfg.top_k, temperature=cfg.router_temperature,
                                router_input=cfg.router_input, init_std=cfg.init_gate_std)
                self.routers[key] = router.to(next(module.parameters()).device)
            adapted = MoELoRALinear(
                module,
                self.routers[key],
                num_experts=cfg.num_experts,
                r=cfg.lora_r,
                scaling=cfg.scaling,
                dropout=cfg.lora_dropout,
                init_b_std=cfg.init_lora_b_std,
            )
            parent_name, _, leaf = name.rpartition(".")
            parent = self.base_model.get_submodule(parent_name) if parent_name else self.base_model
            setattr(parent, leaf, adapted)

    def current_base_fingerprint(self) -> dict:
        """The fingerprint of the base weights as they are now (see base_fingerprint.py)."""
        return base_fingerprint(self.base_model)

    def adapted_layers(self) -> list[tuple[str, MoELoRALinear]]:
        return [(n, m) for n, m in self.base_model.named_modules() if isinstance(m, MoELoRALinear)]

    # ----------------------------------------------------------------- experts & maturity
    @property
    def num_experts(self) -> int:
        return int(self.maturity.numel())

    @property
    def is_sparse(self) -> bool:
        """Sparse top-k routing once every expert is mature; dense softmax otherwise."""
        return bool(self.maturity.all())

    def set_maturity(self, flags: list[bool]) -> None:
        if len(flags) != self.num_experts:
            raise ValueError(f"got {len(flags)} maturity flags for {self.num_experts} experts")
        self.maturity.copy_(torch.tensor(flags, dtype=torch.bool))

    def mark_mature(self, expert: int, mature: bool = True) -> None:
        self.maturity[expert] = mature

    def add_experts(self, count: int) -> list[int]:
        """Add `count` immature experts (each gate grows by one output each); returns their ids."""
        first = self.num_experts
        for router in self.routers.values():
            router.add_experts(count, self.dylora_config.init_gate_std)
        for _, layer in self.adapted_layers():
            layer.add_experts(count)
        grown = torch.zeros(first + count, dtype=torch.bool, device=self.maturity.device)
        grown[:first] = self.maturity
        self.maturity = grown
        self.dylora_config.num_experts = first + count
        return list(range(first, first + count))

    @torch.no_grad()
    def copy_expert(self, source: int, target: int) -> None:
        """Make expert `target`'s A and B equal to expert `source`'s (gate rows are left alone)."""
        for _, layer in self.adapted_layers():
            layer.lora_A[target].copy_(layer.lora_A[source])
            layer.lora_B[target].copy_(layer.lora_B[source])

    def expert_parameters(self, expert: int) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for _, layer in self.adapted_layers():
            params += [layer.lora_A[expert], layer.lora_B[expert]]
        return params

    def prototype_routing_loss(self) -> torch.Tensor | None:
        """Mean over routers of `Router.prototype_loss` at `routing_prototypes`; None when none are set."""
        losses = [self.routers[key].prototype_loss(inputs, experts)
                  for key, (inputs, experts) in self.routing_prototypes.items() if key in self.routers]
        return torch.stack(losses).mean() if losses else None

    # ----------------------------------------------------------------- loss
    def weight_loss_term(self, name: str, weight: float) -> None:
        """Weigh the auxiliary loss `name` (a `DyLoRAOutput` field) into the loss; 0 leaves it out (the hook
        through which continual mode adds its routing terms; the balance term's weight is the config's)."""
        if name not in AUX_LOSSES or name == "balance_loss":
            raise ValueError(f"no auxiliary loss {name!r}; expected one of {AUX_LOSSES[1:]}")
        self.loss_term_weights[name] = weight

    def loss_parts(self, output: DyLoRAOutput) -> tuple[torch.Tensor, list[tuple[torch.Tensor | None, float]]]:
        """The LM loss and each auxiliary loss with its weight: what `loss.combine_loss` adds up."""
        weights = {"balance_loss": self.dylora_config.balance_coefficient, **self.loss_term_weights}
        return output.lm_loss, [(getattr(output, name), weight) for name, weight in weights.items()]

    # ----------------------------------------------------------------- routing passes
    @contextmanager
    def routing_pass(self, **request) -> Iterator[None]:
        """Scope what the routers read in the base forwards run inside it (`REQUESTABLE` fields of
        `RoutingPass`: statistics, supervision targets, a capture dict); fields not given are the enclosing
        scope's. On exit the enclosing scope is back, so nothing leaks into later forwards. Each base forward
        (every `generate` step too) starts a fresh `RoutingPass` from it: see `_start_pass`."""
        _check_request("routing_pass", request)
        enclosing = self._scope
        self._scope = {**enclosing, **request}
        try:
            yield
        finally:
            self._scope = enclosing

    def set_routing_defaults(self, **request) -> None:
        """What every later routing pass asks for unless its scope says otherwise (a continual phase: gates
        detached from the LM loss, the class weights of supervised routing); replaces earlier defaults."""
        _check_request("set_routing_defaults", request)
        self._pass_defaults = dict(request)

    @property
    def last_routing_pass(self) -> RoutingPass | None:
        """The pass the routers read in the latest base forward (still theirs until the next one starts)."""
        router = next(iter(self.routers.values()), None)
        return router.active_pass if router is not None else None

    def _start_pass(self, module, args, kwargs):
        """Forward pre-hook of the base model, so it runs before every base forward (training, eval, each
        generate step): the one place routing state is written. The pass stays the routers' after the forward,
        because activation checkpointing recomputes layers in backward and must see what the forward saw."""
        mask = kwargs.get("attention_mask")
        token_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        continue_context = _past_length(kwargs) > 0
        segment_starts = None
        if token_mask is None and not continue_context:
            segment_starts = packed_segment_starts(kwargs.get("position_ids"))
        routing = RoutingPass(sparse=self.is_sparse, token_mask=token_mask, continue_context=continue_context,
                              segment_starts=segment_starts, **{**self._pass_defaults, **self._scope})
        for router in self.routers.values():
            router.clear_cache()
            router.active_pass = routing
        return None

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        expert_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> DyLoRAOutput:
        """`expert_ids` (batch,): the expert each sequence belongs to (-1: none); with labels, the routers'
        cross entropy toward it is returned as `routing_supervision_loss` (weighted into `loss` once
        `weight_loss_term` gave it a weight). Routing itself never reads it."""
        scored = labels is not None
        if expert_ids is not None:
            _check_expert_ids(expert_ids, labels if scored else input_ids)
        targets = expert_ids if scored else None
        target_mask = (labels != -100) if expert_ids is not None and scored else None
        if attention_mask is None and kwargs.get("past_key_values") is None and \
                packed_segment_starts(kwargs.get("position_ids")) is not None:
            kwargs["use_cache"] = False  # transformers reads example boundaries from position_ids only without cache
        try:
            with self.routing_pass(collect_stats=scored, targets=targets, target_mask=target_mask):
                out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            result = DyLoRAOutput(logits=out.logits, cache=getattr(out, "cache", None))
            if scored:
                self._add_loss(result, out.logits, labels, num_items_in_batch)
            return result
        finally:
            for router in self.routers.values():
                router.clear_cache()

    def _add_loss(self, result: DyLoRAOutput, logits: torch.Tensor, labels: torch.Tensor,
                  num_items_in_batch: int | torch.Tensor | None) -> None:
        """The loss parts of this forward (LM loss, routing statistics, auxiliary losses) and their sum."""
        lm_total, lm_count = shifted_lm_loss(logits, labels, self.label_smoothing)
        result.lm_loss = lm_total / (num_items_in_batch if num_items_in_batch is not None else lm_count.clamp_min(1))
        result.lm_loss_per_token = lm_total.detach() / lm_count.clamp_min(1)
        stats = self.last_routing_pass.stats
        if stats:
            result.balance_loss = torch.stack([s.balance_loss for s in stats]).mean()
            result.expert_usage = torch.stack([s.usage for s in stats]).mean(0)
            result.routing_entropy = torch.stack([s.entropy for s in stats]).mean()
            supervised = [s.supervision_loss for s in stats if s.supervision_loss is not None]
            if supervised:
                result.routing_supervision_loss = torch.stack(supervised).mean()
        else:
            result.balance_loss = result.lm_loss.new_zeros(())
        result.routing_prototype_loss = self.prototype_routing_loss()
        result.loss = combine_loss(*self.loss_parts(result))

    @torch.no_grad()
    def generate(self, *args, **kwargs):
        """The base model's `generate`; routing happens inside each adapted projection, token by token."""
        config = kwargs.get("generation_config")
        beams = kwargs.get("num_beams", getattr(config, "num_beams", 1) if config is not None else 1) or 1
        if self.dylora_config.router_input != "token" and beams > 1:
            raise UserError("beam search reorders sequences in the KV cache, which context routing's running sums "
                            "cannot follow; generate with num_beams=1 (greedy or sampling)")
        try:
            with self.routing_pass(collect_stats=False, targets=None, target_mask=None):
                return self.base_model.generate(*args, **kwargs)
        finally:
            for router in self.routers.values():
                router.clear_cache()

    # ----------------------------------------------------------------- HF plumbing
    @property
    def config(self):
        return self.base_model.config

    @property
    def generation_config(self):
        return self.base_model.generation_config

    @property
    def device(self) -> torch.device:
        return self.maturity.device

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        """Recompute the base's layers in backward (non-reentrant, so frozen inputs still carry gradients)."""
        checkpoint_kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        enable = getattr(self.base_model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs=checkpoint_kwargs, **kwargs)
        else:
            self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)

    gradient_checkpointing_enable = activation_checkpointing_enable

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.get_input_embeddings()

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _check_expert_ids(expert_ids: torch.Tensor, per_sequence: torch.Tensor | None) -> None:
    """One expert id per sequence of the batch, or the supervision would pair tokens with other sequences' ids."""
    if per_sequence is not None and tuple(expert_ids.shape) != (per_sequence.shape[0],):
        raise UserError(f"expert_ids must hold one expert per sequence, shape ({per_sequence.shape[0]},) for this "
                        f"batch, got shape {tuple(expert_ids.shape)}; pass -1 for a sequence without a target")
