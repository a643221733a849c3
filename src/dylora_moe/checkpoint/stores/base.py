"""The one interface every checkpoint store implements, plus the shared verified-download cache.

Why: training, resuming and the CLI should not care whether checkpoints live in W&B, a directory,
gs:// or s3://. Every backend has immutable versions `v0, v1, …`, moving aliases (`latest` always the
newest, `best`, `final`, `step-N`, user aliases), and downloads that are verified file by file against
the checkpoint manifest before anyone may resume from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from dylora_moe.cache_dirs import artifact_cache_dir
from dylora_moe.checkpoint.manifest import (
    COMPLETE_MARKER,
    MANIFEST_NAME,
    CheckpointError,
    clean_stale_temp_dirs,
    is_complete,
    publish_atomically,
    read_manifest,
    safe_member,
    sha256_file,
    verify_checkpoint,
)
from dylora_moe.checkpoint.names import VERSION_RE, safe_name, safe_version
from dylora_moe.files import file_lock

# what a download into the cache writes next to <store>/<version> while it runs (see _download_locked)
_CACHE_TEMP_RE = re.compile(r"^\.(?:tmp|old)-(?P<version>v\d+)-(?P<pid>\d+)$")


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


def checked_versions(versions: list[VersionInfo], where: str) -> list[VersionInfo]:
    """`versions` as listed by a store, once every version and alias name is safe (see checkpoint/names.py)."""
    for info in versions:
        safe_version(info.version, where)
        check_aliases(info.aliases, where)
    return versions


def check_aliases(aliases, where: str) -> list[str]:
    """Aliases are names a store keeps and lists again: the same rule as every other stored name."""
    return [safe_name(alias, "alias", where) for alias in aliases]


def clean_cache_temporaries(log=print) -> list[Path]:
    """Remove what killed downloads left in the artifact cache (of every store), leaving live downloads alone.

    A download holds `<store>/.lock-<version>` while its `.tmp-<version>-<pid>` exists (and while the publish
    moves an old copy aside to `.old-…`), so a temp whose lock is free belongs to a dead process.
    """
    root = artifact_cache_dir()
    removed: list[Path] = []
    for store_dir in sorted(root.iterdir()) if root.is_dir() else []:
        if store_dir.is_dir() and not store_dir.is_symlink():
            removed += clean_stale_temp_dirs(store_dir, log, _CACHE_TEMP_RE,
                                             lambda match, d=store_dir: d / f".lock-{match.group('version')}",
                                             "an interrupted download")
    return removed


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
        safe_version(info.version, self.uri)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.uri).strip("_")[:80]
        key = hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        return artifact_cache_dir() / f"{slug}-{key}" / info.version

    def download(self, ref: str | None = None, dest: str | Path | None = None, log=print) -> Path:
        """Fetch version `ref` into `dest` (default: the cache) and verify every file; reuse a verified copy.

        Concurrent downloads into the cache (several ranks on one machine) are serialised by a file
        lock, so the later ones find the verified copy instead of replacing it under the first one's feet;
        each first removes the temporaries that killed downloads left in the cache.
        """
        cached = self.cached_version(ref, dest, log)
        return cached if cached is not None else self.download_version(self.resolve(ref), dest, log)

    def cached_version(self, ref: str | None, dest: str | Path | None = None, log=print) -> Path | None:
        """The verified copy in the cache when `ref` names a version (`v3`): versions never change, so the store
        is not asked (no network, no SDK); None for aliases, which move, and for downloads to a named `dest`."""
        if dest is not None or ref is None or not VERSION_RE.fullmatch(ref):
            return None
        target = self.cache_dir_for(VersionInfo(ref))
        if not target.is_dir():
            return None
        with file_lock(target.parent / f".lock-{target.name}"):
            if not _is_verified_copy(target, VersionInfo(ref), cached=True):
                return None
        log(f"using verified copy of {self.uri}:{ref} at {target}")
        return target

    def download_version(self, info: VersionInfo, dest: str | Path | None = None, log=print) -> Path:
        """`download` of an already resolved version."""
        safe_version(info.version, self.uri)  # also names the remote path a store fetches from
        target = Path(dest) if dest is not None else self.cache_dir_for(info)
        target.parent.mkdir(parents=True, exist_ok=True)
        if dest is not None:
            return self._download_locked(info, target, True, log)
        clean_cache_temporaries(log)
        with file_lock(target.parent / f".lock-{target.name}"):
            return self._download_locked(info, target, False, log)

    def _download_locked(self, info: VersionInfo, target: Path, explicit_dest: bool, log) -> Path:
        if _is_verified_copy(target, info, cached=not explicit_dest):
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
        if not explicit_dest:
            _write_verified_stamp(target)
        log(f"downloaded {self.uri}:{info.version} ({info.size} bytes) to {target}")
        return target


def _is_verified_copy(target: Path, info: VersionInfo, cached: bool = False) -> bool:
    """True when target already holds exactly this version and every file still verifies.

    A copy in the cache was verified in full when it was published there; while its files keep the size, inode
    and mtime recorded then (see `_verified_stamp_holds`), hashing and parsing them again would only repeat that
    on every resume. Any change (or a stamp that cannot prove one did not happen) means a full verification."""
    if not is_complete(target):
        return False
    if not (cached and _verified_stamp_holds(target)):
        try:
            verify_checkpoint(target)
        except CheckpointError:
            return False
        if cached:
            _write_verified_stamp(target)
    return not info.digest or manifest_digest(target) == info.digest


def _stamp_path(target: Path) -> Path:
    return target.parent / f".verified-{target.name}.json"


def _file_stats(target: Path) -> dict[str, list[int]]:
    """(size, inode, mtime_ns) of the manifest's files, the manifest and the marker; OSError when one is gone."""
    names = sorted(read_manifest(target)["files"]) + [MANIFEST_NAME, COMPLETE_MARKER]
    stats = {}
    for rel in names:
        st = safe_member(target, rel, f"checkpoint {target}").stat()
        stats[rel] = [st.st_size, st.st_ino, st.st_mtime_ns]
    return stats


def _write_verified_stamp(target: Path) -> None:
    """Record the stats of a cached copy that has just verified in full."""
    stamp = _stamp_path(target)
    tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_file_stats(target)), encoding="utf-8")
    os.replace(tmp, stamp)


def _verified_stamp_holds(target: Path) -> bool:
    """Every file still has the stats recorded when the copy verified, and each was last written before the
    stamp: file times are coarse (a clock tick), so a file written in the stamp's own tick could have changed
    after it unseen; such a copy is verified in full again (and stamped anew)."""
    stamp = _stamp_path(target)
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        stamped_at = stamp.stat().st_mtime_ns
        current = _file_stats(target)
    except (OSError, ValueError, CheckpointError):
        return False
    return recorded == current and all(stats[2] < stamped_at for stats in current.values())


def checkpoint_size(ckpt_dir: str | Path) -> int:
    """Total bytes of the files a manifest lists."""
    from dylora_moe.checkpoint.manifest import read_manifest

    return sum(int(entry["size"]) for entry in read_manifest(ckpt_dir)["files"].values())
