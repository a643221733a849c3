"""Loading bases and trained models: hub ids, local directories, the embedded `tiny` base, checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from dylora_moe.errors import UserError
from dylora_moe.hub import hub_offline
from dylora_moe.model.attention import check_attn_implementation
from dylora_moe.model.config import ADAPTER_CONFIG_NAME, DyLoRAConfig
from dylora_moe.model.load_errors import load_error

TINY_NAME = "tiny"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_base_name(model_name: str, log=print) -> str:
    """`tiny` -> the shipped embedded base directory (verified by sha256); anything else unchanged."""
    if model_name == TINY_NAME:
        from dylora_moe.model.tiny_shipped import ensure_tiny_base

        return str(ensure_tiny_base(log=log))
    return model_name


def load_base_model(model_name: str, dtype: str | torch.dtype | None = None, revision: str | None = None, log=print,
                    quantization=None, attn_implementation: str | None = None,
                    training: bool = False, checkpoint: str | None = None):
    """(model, tokenizer) for a hub id, a local HF directory or `tiny`; the tokenizer always has a pad token.
    `quantization` (a `quantization.Quantization`) loads its Linear layers in 4 or 8 bits;
    `attn_implementation` picks the attention kernel (None: transformers' choice for the architecture, see
    attention.py; `model.config._attn_implementation` says which it is); `training` checks it can train here.
    A base that cannot load is one line (load_errors.py), naming `checkpoint` when the base is a checkpoint's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_attn_implementation(attn_implementation, training=training)
    path = resolve_base_name(model_name, log=log)
    local = Path(path).is_dir()
    if not local and hub_offline(for_models=True):
        if checkpoint:
            raise UserError(f"base model of checkpoint {checkpoint}: {model_name!r} is not a local directory and the "
                            "Hugging Face hub is offline (HF_HUB_OFFLINE=1); put the base model back at that path "
                            "(the checkpoint's dylora_config.json records it)")
        raise UserError(
            f"base model {model_name!r} is not a local directory and the Hugging Face hub is offline "
            "(HF_HUB_OFFLINE=1); pass --model_name with a local model directory, or 'tiny' for the embedded base"
        )
    torch_dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    try:
        quantized = {}
        if quantization is not None:
            from dylora_moe.model.quantization import from_pretrained_kwargs

            quantized = from_pretrained_kwargs(quantization, path, model_name)
            torch_dtype = torch_dtype or quantization.torch_dtype  # of the weights that stay unquantized
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch_dtype or torch.float32,
                                                     attn_implementation=attn_implementation, **quantized)
    except Exception as exc:
        error = load_error(exc, model_name, path, attn_implementation, checkpoint, training=training,
                           revision=revision)
        if error is None:
            raise
        raise error from None
    if quantization is not None:
        from dylora_moe.model.quantization import finish_quantized_load, quantized_load_line

        finish_quantized_load(model, model_name, quantization)
        log(quantized_load_line(model, model_name))
    ensure_pad_token(tokenizer)
    return model, tokenizer


def causal_lm_class(path: str, revision: str | None = None) -> type | None:
    """The transformers class `AutoModelForCausalLM` loads `path` as; None when its config cannot tell."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(path, revision=revision))]
    except (OSError, ValueError, KeyError):
        return None


def ensure_pad_token(tokenizer) -> None:
    """Give the tokenizer a pad token without resizing the base: padding is masked in attention and labels."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    tokenizer.padding_side = "right"


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG_NAME).is_file()


def build_model(model_name: str, config: DyLoRAConfig, dtype=None, log=print, quantization=None,
                attn_implementation: str | None = None, training: bool = False,
                checkpoint: str | None = None):
    """Fresh DyLoRA-MoE model on a base (quantized when `quantization` is given); returns (model, tokenizer).
    `checkpoint`: the checkpoint whose base this is, named if the base cannot load."""
    from dylora_moe.model.moe_model import DyLoRAMoEModel

    base, tokenizer = load_base_model(model_name, dtype=dtype, revision=config.base_model_revision, log=log,
                                      quantization=quantization, attn_implementation=attn_implementation,
                                      training=training, checkpoint=checkpoint)
    if quantization is not None:
        from dylora_moe.model.quantization import prepare_for_kbit_training

        prepare_for_kbit_training(base)
    config.base_model = config.base_model or model_name
    return DyLoRAMoEModel(base, config), tokenizer


def load_model_for_inference(source: str, base_only: bool = False, device: str | None = None,
                             dtype: str | None = None, log=print, quantization=None,
                             attn_implementation: str | None = None):
    """(model, tokenizer) in eval mode from a checkpoint dir, a store URI, or (base_only) a base model name."""
    from dylora_moe.model.adapter_io import load_adapter

    check_attn_implementation(attn_implementation)
    if base_only:
        model, tokenizer = load_base_model(source, dtype=dtype, log=log, quantization=quantization,
                                           attn_implementation=attn_implementation)
    else:
        directory = Path(source)
        if not is_adapter_dir(directory):
            from dylora_moe.checkpoint.resolve import fetch_checkpoint

            directory = fetch_checkpoint(source, log=log)
        config = DyLoRAConfig.load(directory)
        model, tokenizer = build_model(config.base_model, config, dtype=dtype, log=log, quantization=quantization,
                                       attn_implementation=attn_implementation, checkpoint=str(source))
        load_adapter(model, directory)
    if quantization is not None and not device:  # its loader placed the base (on the GPU when there is one)
        device = next(model.parameters()).device
    if device:
        model.to(device)
    model.eval()
    tokenizer.padding_side = "left"  # generation pads on the left
    return model, tokenizer
