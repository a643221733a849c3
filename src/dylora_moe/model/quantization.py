"""Quantized frozen bases (QLoRA): the base's Linear layers in 4-bit NF4 or 8-bit, through bitsandbytes.

Loading goes through transformers' `BitsAndBytesConfig`, so the base is quantized layer by layer as it is read
and never exists in full precision. The experts stay full-precision parameters on top: an adapted projection
calls the quantized layer's own forward (which dequantizes to the compute dtype) and adds its LoRA delta.
Checkpoints are unchanged (adapter-only, fp32); `describe` tells what a base was quantized with, for the
fingerprint and the manifest, and `dequantized_weight` gives a quantized layer's weight back in the layout of
the unquantized model, so the same base fingerprints alike quantized or not.

bitsandbytes is optional (`pip install 'dylora-moe[qlora]'`); nothing here imports it unless asked to quantize.
"""

from __future__ import annotations

import ctypes
import json
import logging
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from dylora_moe.errors import UserError

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INSTALL_HINT = "pip install 'dylora-moe[qlora]' (or pip install bitsandbytes)"


@dataclass(frozen=True)
class Quantization:
    """How to load the frozen base: `bits` 4 (NF4, double quantisation) or 8 (LLM.int8)."""

    bits: int
    compute_dtype: str = "float32"  # dtype of the dequantized matmuls, and of the base's unquantized weights

    @property
    def flag(self) -> str:
        return f"--load_in_{self.bits}bit"

    @property
    def torch_dtype(self) -> torch.dtype:
        return COMPUTE_DTYPES[self.compute_dtype]

    def bnb_config(self):
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=self.torch_dtype)


def quantization_from_flags(load_in_4bit: bool, load_in_8bit: bool, compute_dtype: str | None = None,
                            bf16: bool = False, fp16: bool = False) -> Quantization | None:
    """The `Quantization` the flags ask for (None: full precision); the compute dtype follows --bf16/--fp16
    unless --bnb_4bit_compute_dtype names one. Bad combinations are one UserError line."""
    if load_in_4bit and load_in_8bit:
        raise UserError("--load_in_4bit and --load_in_8bit were both given; choose one")
    if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
        raise UserError(f"--bnb_4bit_compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    if compute_dtype is not None and not load_in_4bit:
        raise UserError("--bnb_4bit_compute_dtype only applies with --load_in_4bit; add it or drop the option")
    if not (load_in_4bit or load_in_8bit):
        return None
    chosen = compute_dtype or ("bfloat16" if bf16 else "float16" if fp16 else "float32")
    quantization = Quantization(bits=4 if load_in_4bit else 8, compute_dtype=chosen)
    if chosen == "bfloat16" and not bf16_supported():
        source = "--bnb_4bit_compute_dtype bfloat16" if compute_dtype else "--bf16"
        raise UserError(f"{quantization.flag} with {source} computes in bfloat16, which {device_name()} does not "
                        "support; pass --fp16 or --bnb_4bit_compute_dtype float16 (or float32) instead")
    require_bitsandbytes(quantization.flag)
    return quantization


def quantization_from_args(args) -> Quantization | None:
    """The `Quantization` an inference command's flags ask for; --dtype bfloat16/float16 sets the compute dtype."""
    dtype = str(getattr(args, "dtype", None) or "")
    return quantization_from_flags(args.load_in_4bit, args.load_in_8bit, args.bnb_4bit_compute_dtype,
                                   bf16=dtype in ("bfloat16", "bf16"), fp16=dtype in ("float16", "fp16"))


def bf16_supported() -> bool:
    """bfloat16 compute on the device training runs on (any CPU torch supports; GPUs from Ampere on)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "this CPU"


def require_bitsandbytes(flag: str) -> None:
    try:
        with quiet_loggers("bitsandbytes", "kernels"):
            import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"{flag} needs the bitsandbytes package, which is not installed; {INSTALL_HINT}") from None
    # 8-bit layers on CPU cast fp32 inputs to fp16 and say so on every call
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")


@contextmanager
def quiet_loggers(*names: str):
    """Only errors from these loggers meanwhile. On a CPU with AVX512-BF16, importing bitsandbytes tries to
    fetch a fused inference kernel from the hub and, offline or without the `kernels` package, logs warnings that
    it could not; it falls back to its own kernel, and our loads never use that path (see `keep_differentiable`)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextmanager
def bitsandbytes_only_if_asked(asked: bool):
    """Unless `asked` (--load_in_4bit/--load_in_8bit), bitsandbytes cannot be imported meanwhile, as if it were
    not installed: peft, which transformers imports whenever it is installed, imports bitsandbytes in turn, and
    that import takes seconds and logs warnings about kernels (see `quiet_loggers`) in every run."""
    block = not asked and "bitsandbytes" not in sys.modules
    if block:
        sys.modules["bitsandbytes"] = None  # an import of it raises ModuleNotFoundError; find_spec returns None
    try:
        yield
    finally:
        if block and "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
            del sys.modules["bitsandbytes"]


def from_pretrained_kwargs(quantization: Quantization, path: str, model_name: str) -> dict:
    """`from_pretrained` arguments that quantize the base as it loads (after checking that it can be)."""
    check_quantizable(path, model_name, quantization)
    return {"quantization_config": quantization.bnb_config()}


def check_quantizable(path: str, model_name: str, quantization: Quantization) -> None:
    """Refuse a base that is already quantized by another method (GPTQ, AWQ, ...) or with other bits."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return  # a hub id: transformers reads its config; `check_quantized` still verifies the result
    existing = json.loads(config_file.read_text()).get("quantization_config") or {}
    method = existing.get("quant_method")
    if not method:
        return
    bits = 4 if existing.get("load_in_4bit") else 8 if existing.get("load_in_8bit") else None
    if method != "bitsandbytes" or bits != quantization.bits:
        found = f"{method} {bits}-bit" if bits else method
        raise UserError(f"base model {model_name!r} cannot be quantized with {quantization.flag}: it is already "
                        f"quantized ({found}); load its unquantized weights, or drop {quantization.flag}")


def finish_quantized_load(model: nn.Module, model_name: str, quantization: Quantization) -> None:
    """After loading: refuse a base the flag did not quantize, and release the checkpoint file's memory map."""
    check_quantized(model, model_name, quantization)
    release_file_mapping(model)
    keep_differentiable(model)
    return_freed_heap()


def quantized_load_line(model: nn.Module, model_name: str) -> str:
    """The line a quantized load logs, so that a run's log says what the experts were trained or scored on."""
    quantized = [module for module in model.modules() if is_quantized_linear(module)]
    found = describe(model) or {}
    compute = f", computing in {found['compute_dtype']}" if found.get("compute_dtype") else ""
    on_cpu = bool(quantized) and quantized[0].weight.device.type == "cpu"
    cpu = "; on the CPU they save memory, not time (slower than full precision)" if on_cpu else ""
    return (f"[model] {model_name}: {len(quantized)} Linear layers in {quantization_label(found)} (bitsandbytes)"
            f"{compute}{cpu}")


def return_freed_heap() -> None:
    """Give the C heap's free pages back to the OS after a CPU load. Quantizing layer by layer leaves the
    freed full-precision temporaries in the heap between the packed weights, where glibc keeps them resident
    (the 0.94B base of benchmarks/memory.py, 680 MiB of loaded tensors: 815 and 1259 MiB RSS above the process
    baseline after two loads without this, 699 to 823 MiB after seven with it). A no-op off Linux and glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl and other C libraries: nothing to trim
        pass


def keep_differentiable(model: nn.Module) -> None:
    """Turn off bitsandbytes' CPU inference repacking of 4-bit weights. On a CPU with AVX512-BF16, the first
    forward in eval mode without grad (an evaluation mid-training, a generation) repacks the weight in place
    for a kernel that has no backward: every later training forward then returns outputs that carry no
    gradient to their input, so the experts below each quantized layer silently stop learning from it."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def check_quantized(model: nn.Module, model_name: str, quantization: Quantization) -> None:
    """At least one layer must have been quantized, else the flag did nothing."""
    if not any(is_quantized_linear(m) for m in model.modules()):
        raise UserError(f"base model {model_name!r} cannot be quantized with {quantization.flag}: it has no "
                        "Linear layers bitsandbytes can quantize; drop the option to train it in full precision")


@torch.no_grad()
def release_file_mapping(model: nn.Module) -> None:
    """Copy the unquantized weights (embeddings, norms, head) out of the safetensors memory map they are loaded
    into without a copy: while any of them points into it, the whole map stays, and with it, resident, the
    full-precision pages the quantized layers were read from (measured on a 0.94B base on CPU: 2444 MiB
    resident after loading in 4 bits, 1056 MiB after this copy)."""
    copied: set[int] = set()  # a tied embedding and head are one parameter: copied once
    for module in model.modules():
        if is_quantized_linear(module):
            continue
        for param in module.parameters(recurse=False):
            if param.device.type == "cpu" and id(param) not in copied:
                param.data = param.data.clone()
                copied.add(id(param))


def is_quantized_linear(module: nn.Module) -> bool:
    """A bitsandbytes Linear4bit / Linear8bitLt (checked by name: bitsandbytes need not be importable)."""
    return type(module).__module__.startswith("bitsandbytes") and hasattr(module, "in_features")


def quantized_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a quantized layer (its weight's own shape is packed), None otherwise."""
    if not is_quantized_linear(module):
        return None
    return module.in_features, module.out_features


def weight_shape(module: nn.Module) -> tuple[int, int]:
    """The shape a quantized layer's weight had before quantization (what `dequantized_weight` returns)."""
    from transformers.pytorch_utils import Conv1D

    source = getattr(module, "source_cls", None)
    if isinstance(source, type) and issubclass(source, Conv1D):
        return module.in_features, module.out_features
    return module.out_features, module.in_features


@torch.no_grad()
def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """A quantized layer's weight in full precision, in the unquantized model's layout (GPT-2's Conv1D
    stores (in, out); transformers transposes it to (out, in) before quantizing)."""
    import bitsandbytes.functional as bnb_functional

    weight = module.weight
    if getattr(weight, "quant_state", None) is not None:
        full = bnb_functional.dequantize_4bit(weight.data, weight.quant_state)
    elif getattr(weight, "SCB", None) is not None:
        full = bnb_functional.int8_vectorwise_dequant(weight.data, weight.SCB)
    else:
        full = weight.data  # 8-bit layer that kept its fp16 weights
    from transformers.pytorch_utils import Conv1D

    source = getattr(module, "source_cls", None)
    return full.T if isinstance(source, type) and issubclass(source, Conv1D) else full


def describe(model: nn.Module) -> dict | None:
    """What the base's layers are quantized with, e.g. {"method": "bnb-4bit", "quant_type": "nf4", ...};
    None for a full-precision base."""
    for module in model.modules():
        if not is_quantized_linear(module):
            continue
        state = getattr(module.weight, "quant_state", None)
        if state is not None:
            return {"method": "bnb-4bit", "quant_type": state.quant_type, "double_quant": bool(state.nested),
                    "compute_dtype": str(module.compute_dtype or state.dtype).replace("torch.", "")}
        return {"method": "bnb-8bit"}
    return None


def quantization_change_line(saved: dict | str | None, current: dict | str | None) -> str | None:
    """The one line a resume logs when the checkpoint's base was quantized otherwise than this run's (the
    manifest's `base_quantization` against `describe` of the current base; a method name also works), None when
    they agree. Resuming across quantization is allowed (same weights, within the fingerprint's tolerance), but
    the base computes differently, so the losses will not continue exactly where they left off."""
    before, now = quantization_label(saved), quantization_label(current)
    if before == now:
        return None
    return (f"note: the checkpoint was trained on the base in {before} and resumes on it in {now}; allowed, "
            "but the losses will not continue exactly as the interrupted run's would have")


def quantization_label(value: dict | str | None) -> str:
    """'full precision', or the method and quant type, e.g. 'bnb-4bit nf4' (compute dtype aside: like --bf16,
    it is a run setting, not how the base is stored)."""
    if not value:
        return "full precision"
    if isinstance(value, str):
        return value
    return " ".join(str(value[key]) for key in ("method", "quant_type") if value.get(key))


def prepare_for_kbit_training(model: nn.Module) -> None:
    """The k-bit preparation a frozen quantized base needs (PEFT's `prepare_model_for_kbit_training` casts every
    16-bit weight to fp32; ours is narrower): norm weights stored in fp16 go to fp32 (fp16's range is what
    overflows there; bf16 norms stay, since upcasting them would turn the whole residual stream, and so the
    activation memory, into fp32), and the input embeddings' output requires grad, so reentrant activation
    checkpointing still back-propagates into the experts. The head needs nothing: the loss upcasts its logits
    to fp32, and the base is frozen when the experts are injected."""
    for module in model.modules():
        if "norm" in type(module).__name__.lower():
            for param in module.parameters(recurse=False):
                if param.dtype == torch.float16:
                    param.data = param.data.float()
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
