"""A stable digest of the prepared training data, stored in checkpoints to detect a dataset swap on resume.

What goes in: every DataConfig field, each source's identity (file name + content hash, hub id + config +
splits, or Python version + miner version for stdlib), row counts, the prompt/chat template, the tokenizer,
and a hash of the final token ids of both splits. A file's directory is left out on purpose: moving a run
from cloud to laptop moves the file, but must not look like a different dataset.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from typing import Iterable

FINGERPRINT_VERSION = 1


def digest_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def digest_rows(input_ids: Iterable[list[int]], labels: Iterable[list[int]]) -> str:
    """Order-sensitive hash of (input_ids, labels) pairs."""
    h = hashlib.sha256()
    for ids, labs in zip(input_ids, labels):
        h.update(len(ids).to_bytes(8, "little"))
        h.update(array("q", ids).tobytes())
        h.update(array("q", labs).tobytes())
    return h.hexdigest()


def tokenizer_identity(tokenizer) -> dict:
    """What about the tokenizer changes the ids: its full serialized form when available."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        body = backend.to_str() if backend is not None else None
    except Exception:  # noqa: BLE001 - a tokenizer that cannot serialize falls back to its name
        body = None
    ident = {"class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
             "eos": tokenizer.eos_token_id, "bos": getattr(tokenizer, "bos_token_id", None)}
    if body is not None:
        ident["sha256"] = hashlib.sha256(body.encode()).hexdigest()
    else:
        ident["name"] = getattr(tokenizer, "name_or_path", "")
    return ident


def fingerprint(inputs: dict) -> str:
    return digest_json({"fingerprint_version": FINGERPRINT_VERSION, **inputs})
