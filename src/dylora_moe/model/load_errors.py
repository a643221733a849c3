"""The one place where a base model that failed to load becomes one line naming the file at fault and the fix.

transformers and safetensors report a broken directory with messages that name neither the file nor the fix (an
unknown `model_type` is a KeyError turned ValueError, a truncated `model.safetensors` is "invalid header length",
a missing config.json is "Unrecognized model"). After a load fails, `load_error` looks at a local directory's
files, in the order a load needs them, and names the first one that is missing or broken; the happy path pays
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from dylora_moe.errors import UserError
from dylora_moe.model.attention import attn_load_error, usable_attn_implementations

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")
RESAVE = "re-download or re-save the model"


def _library_errors() -> tuple[type[BaseException], ...]:
    """What transformers / safetensors / json raise for a directory they cannot load (not programming errors)."""
    from safetensors import SafetensorError

    return OSError, ValueError, KeyError, ImportError, SafetensorError


def load_error(exc: BaseException, model_name: str, path: str, attn_implementation: str | None,
               checkpoint: str | None = None, training: bool = False, revision: str | None = None) -> UserError | None:
    """The one-line error for a failed `from_pretrained` of `path` (`model_name` as the user gave it), or None
    when `exc` is not a load failure the user can fix (then it is a bug and keeps its traceback). `checkpoint`:
    the checkpoint whose recorded base this is, named in the line."""
    if not isinstance(exc, _library_errors()):
        return None
    prefix = f"base model of checkpoint {checkpoint}: " if checkpoint else ""
    directory = Path(path)
    problem = directory_problem(directory) if directory.is_dir() else None
    if problem:
        return UserError(prefix + problem)
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if (attn_implementation is not None and isinstance(exc, (ImportError, ValueError))
            and ("attn" in detail.lower() or "attention" in detail.lower())):
        from dylora_moe.model.loading import causal_lm_class

        usable = usable_attn_implementations(causal_lm_class(path, revision), training=training)
        return attn_load_error(attn_implementation, exc, usable)
    if type(exc).__name__ == "SafetensorError":
        return UserError(f"{prefix}a weights file of base model {model_name!r} is truncated or corrupt ({detail}); "
                         "delete it (from the Hugging Face cache for a hub id) and download it again")
    if isinstance(exc, OSError):
        return UserError(f"{prefix}could not load base model {model_name!r}: {detail}; "
                         "check the hub id (and HF_TOKEN for gated models) or pass a local directory")
    return None


def directory_problem(directory: Path) -> str | None:
    """What is missing or broken in a local model directory (naming the file and the fix), or None if nothing is."""
    for check in (_config_problem, _weights_problem, _tokenizer_problem, _other_json_problem):
        problem = check(directory)
        if problem:
            return problem
    return None


def _config_problem(directory: Path) -> str | None:
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = directory / "config.json"
    if not path.is_file():
        return (f"{directory} is not a model directory: it has no config.json; expected a Hugging Face model "
                "directory (config.json, weights, tokenizer); pass one, a hub id, or 'tiny'")
    problem = _json_problem(path)
    if problem:
        return problem
    config = json.loads(path.read_text(encoding="utf-8"))
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not model_type or not isinstance(model_type, str):
        return f"{path} has no model_type; expected the config.json that save_pretrained writes; {RESAVE}"
    if model_type not in CONFIG_MAPPING:
        return (f"{path}: model_type {model_type!r} is not known to transformers {__version__}; upgrade "
                "transformers or pass a directory of a supported architecture")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return (f"{path}: model_type {model_type!r} is not a causal language model in transformers {__version__}; "
                "pass a decoder-only base (one AutoModelForCausalLM loads)")
    return None


def _json_problem(path: Path) -> str | None:
    """Why a JSON file of the model cannot be read or parsed (with line and column), or None."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}; make it readable or {RESAVE}"
    except UnicodeDecodeError:
        return f"{path} is not valid JSON (not UTF-8 text); {RESAVE}"
    except json.JSONDecodeError as exc:
        return f"{path} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); {RESAVE}"
    return None


def _other_json_problem(directory: Path) -> str | None:
    """tokenizer.json, tokenizer_config.json, generation_config.json, ...: each must parse."""
    for path in sorted(directory.glob("*.json")):
        problem = _json_problem(path) if path.name != "config.json" else None
        if problem:
            return problem
    return None


def _weights_problem(directory: Path) -> str | None:
    present = [name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        return f"{directory} has no weights file ({', '.join(WEIGHT_FILES[:-1])} or {WEIGHT_FILES[-1]}); {RESAVE}"
    for name in present:
        if name.endswith(".index.json"):
            problem = _shards_problem(directory / name)
            if problem:
                return problem
    for path in sorted(directory.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return problem
    return None


def _shards_problem(index: Path) -> str | None:
    """A shard the index lists that is not there (the index itself unreadable is also named)."""
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{index} is not a readable weights index (JSON with a weight_map); {RESAVE}"
    for shard in shards:
        if not (index.parent / shard).is_file():
            return f"{index.parent / shard} is missing (listed in {index.name}); re-download it"
    return None


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):  # reads and checks the header against the file's size
            pass
    except (SafetensorError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{path} is truncated or corrupt ({detail}); re-download or re-save it"
    return None


def _tokenizer_problem(directory: Path) -> str | None:
    if any((directory / name).is_file() for name in TOKENIZER_FILES):
        return None
    return (f"{directory} has no tokenizer files ({', '.join(TOKENIZER_FILES[:-1])} or {TOKENIZER_FILES[-1]}); "
            "save the tokenizer into the model directory (tokenizer.save_pretrained)")
