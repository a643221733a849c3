"""Checkpoint store on a directory tree: a local path, gs://bucket/prefix or s3://bucket/prefix (fsspec).

Layout under the root:
    index.json          versions + aliases; the ONLY thing readers trust, rewritten last by a publish
    v0/, v1/, …         immutable version directories (the checkpoint files incl. manifest.json)
    staging/<token>/    where an upload lands first; moved to vN/ only when every file is up

Why: object stores have no atomic directory rename, so visibility is decided by one small index object
(a single PUT is atomic on GCS and S3, and a rename is atomic locally). A reader that lists or
downloads while an upload runs sees the previous index and never a half-written version.
Single writer per store root is assumed (the main training process).
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from datetime import datetime, timezone
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dylora_moe.checkpoint.manifest import (
    MANIFEST_NAME,
    CheckpointError,
    publish_files,
    read_manifest,
    safe_member,
    verify_checkpoint,
)
from dylora_moe.checkpoint.names import safe_version
from dylora_moe.checkpoint.stores.base import (
    CheckpointStore,
    VersionInfo,
    check_aliases,
    checkpoint_size,
    manifest_digest,
)
from dylora_moe.files import atomic_write_bytes

INDEX_NAME = "index.json"
INDEX_FORMAT = "dylora-moe-store/1"


def default_storage_options(protocol: str) -> dict:
    """Loopback emulators need anonymous GCS access; everything else uses the SDKs' normal credentials."""
    if protocol in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
        return {"token": "anon"}
    return {}


class FsspecStore(CheckpointStore):
    """Versioned checkpoints under one fsspec root (see module docstring for the layout)."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        protocol = uri.split("://", 1)[0] if "://" in uri else "file"
        options = {**default_storage_options(protocol), **(storage_options or {})}
        self.uri = uri
        self.fs, self.root = fsspec.core.url_to_fs(uri, **options)
        self.root = self.root.rstrip("/") or "/"
        self._local = isinstance(self.fs, LocalFileSystem)

    # -- index -------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def _read_index(self) -> dict:
        self.fs.invalidate_cache()
        try:
            raw = self.fs.cat_file(self._path(INDEX_NAME))
        except FileNotFoundError:
            return {"format": INDEX_FORMAT, "versions": [], "aliases": {}}
        try:
            index = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.uri}/{INDEX_NAME} is not valid JSON ({exc}); the store is damaged") from exc
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            raise CheckpointError(f"{self.uri}/{INDEX_NAME} is not a dylora-moe store index ({INDEX_FORMAT})")
        return self._checked_index(index)

    def _checked_index(self, index: dict) -> dict:
        """The index once its shape and every name in it are safe: versions become local and remote paths."""
        where = f"{self.uri}/{INDEX_NAME}"
        versions, aliases = index.get("versions"), index.get("aliases")
        if not isinstance(versions, list) or not all(isinstance(e, dict) for e in versions) \
                or not isinstance(aliases, dict):
            raise CheckpointError(f"{where} lacks its 'versions' list or 'aliases' table; the store is damaged")
        for entry in versions:
            safe_version(entry.get("version"), where)
            _check_entry_fields(entry, where)
        check_aliases(aliases, where)
        for version in aliases.values():
            safe_version(version, where)
        return index

    def _write_index(self, index: dict) -> None:
        data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
        path = self._path(INDEX_NAME)
        if self._local:
            atomic_write_bytes(path, data)
        else:
            self.fs.pipe_file(path, data)  # one object PUT: atomic on GCS and S3

    def list_versions(self) -> list[VersionInfo]:
        index = self._read_index()
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(index["aliases"].items()):
            by_version.setdefault(version, []).append(alias)
        return [
            VersionInfo(
                version=entry["version"],
                aliases=by_version.get(entry["version"], []),
                metadata=entry.get("metadata", {}),
                size=int(entry.get("size", 0)),
                digest=entry.get("digest", ""),
                created=entry.get("created", ""),
            )
            for entry in index["versions"]
        ]

    # -- publish -----------------------------------------------------------------------------
    def publish(self, local_dir, aliases=(), metadata=None) -> VersionInfo:
        local_dir = Path(local_dir)
        manifest = verify_checkpoint(local_dir)
        files = publish_files(local_dir, manifest)
        check_aliases(aliases, f"cannot publish to {self.uri}")
        metadata = dict(manifest["metadata"] if metadata is None else metadata)
        digest = manifest_digest(local_dir)
        index = self._read_index()
        existing = next((e for e in index["versions"] if e.get("digest") == digest), None)
        if existing is None:
            number = 1 + max((int(e["version"][1:]) for e in index["versions"]), default=-1)
            existing = {
                "version": f"v{number}",
                "digest": digest,
                "size": checkpoint_size(local_dir),
                "metadata": metadata,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            self._upload_version(local_dir, files, existing["version"])
            index["versions"].append(existing)
            index["aliases"]["latest"] = existing["version"]
        for alias in aliases:
            if alias != "latest":  # `latest` is managed here: always the newest version
                index["aliases"][alias] = existing["version"]
        self._write_index(index)  # last: this is the moment the version becomes visible
        return next(v for v in self.list_versions() if v.version == existing["version"])

    def _upload_version(self, local_dir: Path, files: list[str], version: str) -> None:
        staging = self._path("staging", uuid.uuid4().hex)
        final = self._path(version)
        for rel in files:  # manifest last
            self._put(local_dir / rel, posixpath.join(staging, rel))
        if self.fs.exists(final):  # leftover of an interrupted publish: never in the index, safe to drop
            self.fs.rm(final, recursive=True)
        if self._local:
            os.replace(staging, final)
            return
        for rel in files:  # server-side copies, file by file
            self.fs.copy(posixpath.join(staging, rel), posixpath.join(final, rel))
        self.fs.rm(staging, recursive=True)
        self.fs.invalidate_cache()

    def _put(self, local: Path, remote: str) -> None:
        """Upload one file (a seam tests use to observe the store mid-upload)."""
        self.fs.makedirs(posixpath.dirname(remote), exist_ok=True)
        self.fs.put_file(str(local), remote)

    # -- download ----------------------------------------------------------------------------
    def _fetch(self, info: VersionInfo, dest: Path) -> None:
        remote = self._path(info.version)
        try:
            self.fs.get_file(posixpath.join(remote, MANIFEST_NAME), str(dest / MANIFEST_NAME))
        except FileNotFoundError as exc:
            raise CheckpointError(f"{self.uri}:{info.version}: {MANIFEST_NAME} is missing in the store") from exc
        for rel in sorted(read_manifest(dest)["files"]):  # only files the manifest lists (untrusted store)
            local = safe_member(dest, rel, f"{self.uri}:{info.version}")
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(posixpath.join(remote, rel), str(local))
            except FileNotFoundError as exc:
                raise CheckpointError(f"{self.uri}:{info.version}: file {rel} is missing in the store") from exc


def _check_entry_fields(entry: dict, where: str) -> None:
    """The fields `list_versions` turns into a VersionInfo have their types (a damaged or hostile index is one
    line, not a traceback wherever the field is used)."""
    size, metadata = entry.get("size", 0), entry.get("metadata", {})
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointError(f"{where}: version {entry['version']} has size {size!r}, expected a byte count; "
                              "the store is damaged")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{where}: version {entry['version']} has metadata of type {type(metadata).__name__}, "
                              "expected a mapping; the store is damaged")
    for name in ("digest", "created"):
        if not isinstance(entry.get(name, ""), str):
            raise CheckpointError(f"{where}: version {entry['version']} has a {name} that is not text; the store is "
                                  "damaged")
