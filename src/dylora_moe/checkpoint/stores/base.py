"""The one interface every checkpoint store implements, plus the shared verified-download cache.

Why: training, resuming and the CLI should not care whether checkpoints live in W&B, a directory,
gs:// or s3://. Every backend has immutable versions `v0, v1, …`, moving aliases (`latest` always the
newest, `best`, `final`, `step-N`, user aliases), and downloads that are verified file by file against
the checkpoint manifest before anyone may resume from them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from dylora_moe.cache_dirs import artifact_cache_dir
from dylora_moe.checkpoint.manifest import (
    MANIFEST_NAME,
    CheckpointError,
    is_complete,
    publish_atomically,
    sha256_file,
    verify_checkpoint,
)

VERSION_RE = re.compile(r"^v(\d+)$")


@dataclass
class VersionInfo:
    """One immutable version of a checkpoint in a store."""

    version: str  # "v3"
    aliases: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    size: int = 0  # bytes of all files
    digest: str = ""  # sha256 of the checkpoint's manifest.json: equal digests = identical content
    created: str = ""

    @property
    def index(self) -> int:
        match = VERSION_RE.match(self.version)
        return int(match.group(1)) if match else -1


def manifest_digest(ckpt_dir: str | Path) -> str:
    """The content identity of a checkpoint: sha256 of its manifest (which hashes every file)."""
    return sha256_file(Path(ckpt_dir) / MANIFEST_NAME)


def describe_versions(versions: list[VersionInfo]) -> str:
    """'v0 (step-10), v1 (latest, best)' — for error messages that list what does exist."""
    if not versions:
        return "none"
    return ", ".join(f"{v.version} ({', '.join(v.aliases)})" if v.aliases else v.version for v in versions)


class CheckpointStore(ABC):
    """Abstract store: publish local checkpoint dirs as versions, resolve refs, download verified copies."""

    uri: str

    @abstractmethod
    def publish(self, local_dir: str | Path, aliases: list[str] | tuple[str, ...] = (), metadata: dict | None = None) -> VersionInfo:
        """Upload a complete, verified checkpoint dir as a new version (or re-alias identical content)."""

    @abstractmethod
    def list_versions(self) -> list[VersionInfo]:
        """All published versions, oldest first, with their current aliases."""

    @abstractmethod
    def _fetch(self, info: VersionInfo, dest: Path) -> None:
        """Copy the files of `info` into the (empty) directory `dest`; verification is done by the caller."""

    def resolve(self, ref: str | None = None) -> VersionInfo:
        """`None`/'latest' → newest version; 'v3' → that version; anything else → the version with that alias."""
        return self.pick(self.list_versions(), ref)

    def pick(self, versions: list[VersionInfo], ref: str | None) -> VersionInfo:
        """`resolve` on an already listed set of versions (so one resolve lists the store once)."""
        if not versions:
            raise CheckpointError(f"no checkpoint versions in {self.uri}; publish one first (or check the URI)")
        if ref is None:
            return max(versions, key=lambda v: v.index)
        for info in versions:
            if info.version == ref or ref in info.aliases:
                return info
        if ref == "latest":
            return max(versions, key=lambda v: v.index)
        raise CheckpointError(
            f"version or alias {ref!r} not found in {self.uri}; existing versions: {describe_versions(versions)}"
        )

    def close(self) -> None:
        """Release what the store holds open (W&B: its upload runs); stores without such state do nothing."""

    def cache_dir_for(self, info: VersionInfo) -> Path:
        """Cache location keyed by store URI and version (versions are immutable, so this never goes stale)."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.uri).strip("_")[:80]
        key = hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        return artifact_cache_dir() / f"{slug}-{key}" / info.version

    def download(self, ref: str | None = None, dest: str | Path | None = None, log=print) -> Path:
        """Fetch version `ref` into `dest` (default: the cache) and verify every file; reuse a verified copy.

        Concurrent downloads into the cache (several ranks on one machine) are serialised by a file
        lock, so the later ones find the verified copy instead of replacing it under the first one's feet.
        """
        return self.download_version(self.resolve(ref), dest, log)

    def download_version(self, info: VersionInfo, dest: str | Path | None = None, log=print) -> Path:
        """`download` of an already resolved version."""
        target = Path(dest) if dest is not None else self.cache_dir_for(info)
        target.parent.mkdir(parents=True, exist_ok=True)
        if dest is not None:
            return self._download_locked(info, target, True, log)
        with _file_lock(target.parent / f".lock-{target.name}"):
            return self._download_locked(info, target, False, log)

    def _download_locked(self, info: VersionInfo, target: Path, explicit_dest: bool, log) -> Path:
        if _is_verified_copy(target, info):
            log(f"using verified copy of {self.uri}:{info.version} at {target}")
            return target
        if target.exists() and not target.is_dir():
            raise CheckpointError(f"download destination {target} is a file; give a directory path")
        if explicit_dest and target.is_dir() and any(target.iterdir()):
            # never replace a directory the user named: it may hold their other files or another run's
            # checkpoint; only a verified copy of this very version (above) is reused
            held = "another checkpoint" if (target / MANIFEST_NAME).exists() else "other files"
            raise CheckpointError(f"download destination {target} is not empty; choose an empty or new directory "
                                  f"(it holds {held}, which a download never replaces)")
        tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            self._fetch(info, tmp)
            try:
                verify_checkpoint(tmp, require_complete=False)
            except CheckpointError as exc:  # name the store version, not our temp dir
                detail = str(exc).replace(f"checkpoint {tmp}: ", "")
                raise CheckpointError(f"download of {self.uri}:{info.version} failed verification: {detail}") from None
            if info.digest and manifest_digest(tmp) != info.digest:
                raise CheckpointError(
                    f"{self.uri}:{info.version}: downloaded {MANIFEST_NAME} does not match the version's digest"
                )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_atomically(tmp, target)
        log(f"downloaded {self.uri}:{info.version} ({info.size} bytes) to {target}")
        return target


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock (POSIX flock); a no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _is_verified_copy(target: Path, info: VersionInfo) -> bool:
    """True when target already holds exactly this version and every file still verifies."""
    if not is_complete(target):
        return False
    try:
        verify_checkpoint(target)
    except CheckpointError:
        return False
    return not info.digest or manifest_digest(target) == info.digest


def checkpoint_size(ckpt_dir: str | Path) -> int:
    """Total bytes of the files a manifest lists."""
    from dylora_moe.checkpoint.manifest import read_manifest

    return sum(int(entry["size"]) for entry in read_manifest(ckpt_dir)["files"].values())
