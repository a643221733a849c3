"""Raw rows for one `--datasets` item: a local file, the hub, or the embedded stdlib miner.

Why the offline check comes first: `datasets` retries an unreachable hub for ~20 s per dataset before it
fails with a long traceback; a user without network needs one line telling them to bind a local file.
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

from dylora_moe.data.formats import RowFormat, detect_format
from dylora_moe.data.registry import DATA_DIR_VAR, REGISTRY, DatasetSpec
from dylora_moe.data.stdlib_mining import mine_stdlib, stdlib_identity
from dylora_moe.errors import UserError
from dylora_moe.hub import hub_endpoint, hub_offline, mark_datasets_offline

_LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclass
class LoadedSource:
    """Rows of one source, the format that maps them, and what identifies them for the fingerprint."""

    spec: DatasetSpec
    rows: list[dict]
    row_format: RowFormat
    identity: dict = field(default_factory=dict)


def load_source(spec: DatasetSpec) -> LoadedSource:
    if spec.path:
        return _load_file(spec)
    if spec.base == "stdlib":
        rows = mine_stdlib(spec.skill)
        return LoadedSource(spec, rows, REGISTRY["stdlib"].row_format,
                            {"kind": "stdlib", "skill": spec.skill, **stdlib_identity()})
    return _load_hub(spec)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint: seconds instead of the ~20 s of retries `datasets` would spend."""
    from urllib.parse import urlsplit

    url = urlsplit(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_unreachable_error(name: str, hub_id: str) -> UserError:
    return UserError(
        f"dataset '{name}' comes from the Hugging Face hub ({hub_id}), which is offline or unreachable; "
        f"bind it to a local file instead: --datasets \"{name}=path/to/file.jsonl\" (json, jsonl or parquet), "
        f"or put {name}.jsonl in a directory named by {DATA_DIR_VAR}"
    )


def _load_hub(spec: DatasetSpec) -> LoadedSource:
    entry = REGISTRY[spec.base]
    assert entry.hub_id is not None
    if hub_offline():
        raise hub_unreachable_error(spec.name, entry.hub_id)
    if not hub_reachable():
        mark_datasets_offline()
        raise hub_unreachable_error(spec.name, entry.hub_id)
    import datasets  # heavy; only when the hub is really used

    rows: list[dict] = []
    try:
        for split in entry.hub_splits:
            rows.extend(datasets.load_dataset(entry.hub_id, entry.hub_config, split=split).to_list())
    except Exception as exc:  # noqa: BLE001 - only network failures are re-worded, the rest propagate
        if _is_network_error(exc):
            raise hub_unreachable_error(spec.name, entry.hub_id) from exc
        raise
    identity = {"kind": "hub", "hub_id": entry.hub_id, "config": entry.hub_config, "splits": list(entry.hub_splits)}
    return LoadedSource(spec, rows, entry.row_format, identity)


def _is_network_error(exc: BaseException) -> bool:
    """Connection problems, whichever HTTP stack (requests, httpx, urllib3) raised them."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__.lower()
        if isinstance(exc, (ConnectionError, TimeoutError)) or any(
            key in name for key in ("connect", "timeout", "offline", "network", "localentrynotfound")
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _load_file(spec: DatasetSpec) -> LoadedSource:
    path = Path(spec.path).expanduser()
    if path.is_dir():
        raise UserError(f"dataset '{spec.name}': {spec.path} is a directory; give a json, jsonl or parquet file")
    if not path.is_file():
        raise UserError(f"dataset '{spec.name}': file {spec.path} does not exist; give a json, jsonl or parquet file")
    suffix = path.suffix.lower()
    if suffix not in _LOCAL_SUFFIXES:
        raise UserError(f"dataset '{spec.name}': {path.name} is not json, jsonl or parquet; convert it to one of those")
    data = path.read_bytes()
    rows = _parse_rows(spec.name, path, suffix, data)
    columns = set(rows[0]) if rows else set()
    entry = REGISTRY.get(spec.base)
    row_format = entry.row_format if entry else detect_format(columns)
    if row_format is None:
        raise UserError(
            f"dataset '{spec.name}': cannot tell the format of {path.name} (columns: {', '.join(sorted(columns))}); "
            "expected instruction/input/output, query/answer, conversations, or MBPP's text/code/task_id/test_list"
        )
    missing = [c for c in row_format.required if c not in columns]
    if rows and missing:
        raise UserError(
            f"dataset '{spec.name}': {path.name} lacks column(s) {', '.join(missing)} of the {row_format.name} format "
            f"(found: {', '.join(sorted(columns))}); bind the file to a name whose format it has"
        )
    # the file's name and content identify it; its directory does not (runs move between machines)
    identity = {"kind": "file", "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
                "format": row_format.name}
    return LoadedSource(spec, rows, row_format, identity)


def _parse_rows(name: str, path: Path, suffix: str, data: bytes) -> list[dict]:
    if suffix == ".parquet":
        try:
            import io

            import pyarrow.parquet as pq

            return _objects(name, path, enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), 1), "row")
        except (ValueError, OSError) as exc:
            raise UserError(f"dataset '{name}': cannot read {path.name} as parquet ({exc}); check the file") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"dataset '{name}': {path.name} is not UTF-8 text ({exc}); check the file") from exc
    if suffix == ".json" and text.lstrip().startswith(("[", "{")):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError:
            loaded = None  # maybe JSON lines saved as .json
        if isinstance(loaded, dict) and isinstance(loaded.get("data"), list):
            loaded = loaded["data"]
        elif isinstance(loaded, dict):
            raise UserError(f"dataset '{name}': {path.name} holds one JSON object, not a list of rows; expected a "
                            "list of objects ([{...}, ...], or {\"data\": [...]}) or one object per line (jsonl)")
        if isinstance(loaded, list):
            return _objects(name, path, enumerate(loaded, 1), "item")
    return _objects(name, path, _json_lines(name, path, text), "line")


def _json_lines(name: str, path: Path, text: str):
    """(line number, value) of each non-blank line; a malformed line is reported by its own number."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"dataset '{name}': line {number} of {path.name} is not valid JSON ({exc.msg} at column "
                            f"{exc.colno}); fix or remove that line") from None


_KINDS = {int: "a number", float: "a number", bool: "a boolean", str: "a string", list: "a list", type(None): "null"}


def _objects(name: str, path: Path, numbered, unit: str) -> list[dict]:
    """The rows, each a JSON object; anything else (a bare number, a list) is refused by its position."""
    rows = []
    for number, row in numbered:
        if not isinstance(row, dict):
            raise UserError(f"dataset '{name}': {unit} {number} of {path.name} is {_KINDS.get(type(row), 'not an object')}"
                            f", not a JSON object; expected one object per row with the dataset's columns "
                            "(e.g. instruction/output)")
        rows.append(row)
    return rows
