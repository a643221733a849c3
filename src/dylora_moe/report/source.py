"""Find the `trainer_state.json` a report is drawn from: an output dir, a checkpoint dir or a store URI.

Why: an output dir holds several copies of the history (one per checkpoint, one at the end). A run
that was stopped early has a final state older than its newest checkpoint, and a save that was cut
short leaves a checkpoint without the `COMPLETE` marker, so the report must pick the newest copy
among the complete ones rather than the first file it sees.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from dylora_moe.checkpoint.manifest import COMPLETE_MARKER, list_checkpoints
from dylora_moe.errors import UserError

STATE_NAME = "trainer_state.json"
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # scheme of two or more letters: wandb:, gs://, s3://, file://
_BARE_WANDB_RE = re.compile(r"^[\w.-]+/[\w.-]+/[\w.-]+:[\w.-]+$")  # entity/project/name:alias
STORE_INDEX_NAME = "index.json"  # a local checkpoint store (dylora_moe.checkpoint.stores) keeps its versions here


def looks_like_uri(source: str) -> bool:
    """True for `scheme:...` strings (wandb://…, gs://…, s3://…, file://…) and bare W&B artifact paths."""
    return bool(_URI_RE.match(source) or _BARE_WANDB_RE.match(source))


def resolve_uri(uri: str) -> Path:
    """Download/locate a store URI through the checkpoint package; imported lazily (optional deps)."""
    try:
        from dylora_moe.checkpoint.resolve import fetch_checkpoint
    except ImportError as exc:
        raise UserError(
            f"cannot open store URI {uri}: dylora_moe.checkpoint.resolve is not available ({exc}); "
            "download the checkpoint and pass its local directory instead"
        ) from exc
    try:
        return Path(fetch_checkpoint(uri))
    except UserError:
        raise
    except Exception as exc:  # network/credential failures of the store libraries: still one line
        raise UserError(
            f"cannot open store URI {uri}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            "check the URI, the network and the credentials, or pass a local checkpoint directory"
        ) from exc


def read_state(path: Path) -> dict:
    """Load one trainer_state.json (JSON only: downloaded files are untrusted) and check its shape."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); expected a Hugging Face trainer_state.json") from exc
    if not isinstance(state, dict) or not isinstance(state.get("log_history", []), list):
        raise UserError(
            f"{path} is not a trainer state; expected a JSON object with a 'log_history' list "
            "(the file the trainer writes next to each checkpoint)"
        )
    return state


def _candidates(directory: Path) -> list[Path]:
    """The dir's own state file plus the one in its newest complete checkpoint-<step>/."""
    found = []
    if (directory / STATE_NAME).is_file():
        found.append(directory / STATE_NAME)
    for _step, ckpt in reversed(list_checkpoints(directory)):
        if (ckpt / COMPLETE_MARKER).is_file() and (ckpt / STATE_NAME).is_file():
            found.append(ckpt / STATE_NAME)
            break
    return found


def _newest(paths: list[Path]) -> Path:
    """Highest global_step wins; the later-written file breaks a tie."""

    def key(path: Path) -> tuple[int, float]:
        step = read_state(path).get("global_step")
        return (step if isinstance(step, int) else -1, os.stat(path).st_mtime)

    return max(paths, key=key)


def state_file_in(directory: Path) -> Path:
    """The trainer_state.json to report on for an output or checkpoint directory."""
    found = _candidates(directory)
    if not found:
        raise UserError(
            f"no {STATE_NAME} in {directory} nor in a complete checkpoint-<step>/ (one with a {COMPLETE_MARKER} "
            "marker); pass the output dir or a checkpoint dir of a run that has saved at least once"
        )
    return _newest(found)


def locate_state(source: str | os.PathLike) -> tuple[Path, Path]:
    """(state file, local directory it was found from) for a path or a store URI."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return path, path.parent
    if path.is_dir() and (_candidates(path) or not (path / STORE_INDEX_NAME).is_file()):
        return state_file_in(path), path
    if path.is_dir() or looks_like_uri(text):  # a local store dir or a remote one
        local = resolve_uri(text)
        return (local, local.parent) if local.is_file() else (state_file_in(local), local)
    raise UserError(
        f"report source {text} does not exist; expected an output dir, a checkpoint dir or a store URI "
        "(wandb://, gs://, s3://, file://); check the path"
    )
