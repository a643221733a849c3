"""In-process fake of the W&B server side behind `WandbBackend`, following W&B's artifact rules.

Rules kept: versions v0, v1, … per collection; a new version takes `latest`; aliases are unique in a
collection (adding one moves it); logging identical content makes no new version (the existing one
gets the aliases, `latest` included); an unknown collection raises CollectionNotFound (as the SDK
backend does), an unknown version wandb.errors.CommError.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from wandb.errors import CommError

from dylora_moe.checkpoint.stores.base import VersionInfo
from dylora_moe.checkpoint.stores.wandb_sdk import CollectionNotFound


class FakeWandbServer:
    def __init__(self):
        self.collections: dict[str, list[dict]] = {}
        self.uploads = 0
        self.downloads = 0
        self.tamper: dict[str, bytes] = {}  # rel path -> bytes served instead (corruption in transit)

    def log_checkpoint(self, path: str, local_dir: Path, files: list[str], aliases: list[str], metadata: dict) -> str:
        files = {rel: (local_dir / rel).read_bytes() for rel in files}
        digest = hashlib.md5(b"".join(k.encode() + hashlib.md5(v).digest() for k, v in files.items())).hexdigest()
        versions = self.collections.setdefault(path, [])
        entry = next((v for v in versions if v["digest"] == digest), None)
        if entry is None:
            self.uploads += 1
            entry = {"version": f"v{len(versions)}", "digest": digest, "files": files, "metadata": dict(metadata),
                     "aliases": set()}
            versions.append(entry)
        for alias in {"latest", *aliases}:
            for other in versions:
                other["aliases"].discard(alias)
            entry["aliases"].add(alias)
        return entry["version"]

    def list_versions(self, path: str) -> list[VersionInfo]:
        if path not in self.collections:
            raise CollectionNotFound(path)
        return [
            VersionInfo(v["version"], sorted(v["aliases"]), dict(v["metadata"]),
                        sum(len(b) for b in v["files"].values()), v["metadata"].get("manifest_sha256", ""))
            for v in self.collections[path]
        ]

    def download(self, path: str, version: str, dest: Path) -> None:
        entry = next((v for v in self.collections.get(path, []) if v["version"] == version), None)
        if entry is None:
            raise CommError(f"artifact '{path}:{version}' not found")
        self.downloads += 1
        for rel, data in entry["files"].items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(self.tamper.get(rel, data))
