"""Whether the Hugging Face hub may be contacted: the one reader of the HF offline variables.

Each library honours its own variables, so each caller asks for its own: `huggingface_hub` (every download)
honours HF_HUB_OFFLINE; `transformers` (models, tokenizers) also TRANSFORMERS_OFFLINE; `datasets` also
HF_DATASETS_OFFLINE. A data-only variable must not refuse a hub model the user wants, nor the reverse.
Values are read as huggingface_hub reads them (1/true/yes/on, any case).
"""

from __future__ import annotations

import os

_HUB = "HF_HUB_OFFLINE"
_MODELS = "TRANSFORMERS_OFFLINE"
_DATASETS = "HF_DATASETS_OFFLINE"
_TRUE = ("1", "true", "yes", "on")


def _set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def hub_offline(for_models: bool = False) -> bool:
    """True when the environment says the hub must not be contacted, for datasets (default) or models."""
    return _set(_HUB) or _set(_MODELS if for_models else _DATASETS)


def mark_datasets_offline() -> None:
    """After a failed probe: later hub datasets in this process fail at once, without another probe."""
    os.environ[_DATASETS] = "1"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
