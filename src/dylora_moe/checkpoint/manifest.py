"""Checkpoint manifest: what a complete checkpoint contains, and how it is published atomically.

Why: a resumed run must never start from a half-written or corrupted checkpoint. Every checkpoint
directory carries `manifest.json` (each file's size and sha256 plus run metadata) and, written last,
a `COMPLETE` marker. A directory without the marker is a save that was interrupted and is ignored by scans of
an output directory (a directory named directly may instead verify by its manifest: verify_named_checkpoint);
a file that does not match the manifest, or does not parse, is reported by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from dylora_moe.checkpoint.names import safe_relpath
from dylora_moe.errors import UserError
from dylora_moe.files import atomic_write_text, file_lock

MANIFEST_NAME = "manifest.json"
RUN_CONFIG_NAME = "run_config.json"  # the run's training arguments, written by the trainer
COMPLETE_MARKER = "COMPLETE"  # written last; a dir without it is partial and ignored
MANIFEST_FORMAT = "dylora-moe-checkpoint/1"
CHECKPOINT_DIR_RE = re.compile(r"^checkpoint-(\d+)$")
_RESERVED = {MANIFEST_NAME, COMPLETE_MARKER}
_CHUNK = 1 << 20


def write_run_config(directory: str | Path, config: dict) -> Path:
    """`run_config.json` in `directory` (a checkpoint being written, or a run's output dir)."""
    path = Path(directory) / RUN_CONFIG_NAME
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True, default=str))
    return path


class CheckpointError(UserError):
    """A checkpoint is missing, partial or corrupted; the message names the directory and the file."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB weights do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _payload_files(ckpt_dir: Path) -> list[Path]:
    """Every regular file under ckpt_dir (recursively) except the manifest and the marker at the top."""
    files = []
    for path in sorted(ckpt_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(ckpt_dir)
        if len(rel.parts) == 1 and rel.name in _RESERVED:
            continue
        files.append(path)
    return files


def write_manifest(ckpt_dir: str | Path, metadata: dict) -> dict:
    """List every file of `ckpt_dir` with size and sha256, store it with `metadata` in manifest.json."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"cannot write a manifest: {ckpt_dir} is not a directory")
    files = {
        path.relative_to(ckpt_dir).as_posix(): {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for path in _payload_files(ckpt_dir)
    }
    manifest = {"format": MANIFEST_FORMAT, "files": files, "metadata": dict(metadata)}
    atomic_write_text(ckpt_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(ckpt_dir: str | Path) -> dict:
    """Load and sanity-check manifest.json (JSON only: downloaded checkpoints are untrusted)."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {ckpt_dir} has no {MANIFEST_NAME}; expected a directory written by dylora-moe "
            "(write_manifest + publish_atomically)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt_dir}: {MANIFEST_NAME} is unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(
            f"checkpoint {ckpt_dir}: {MANIFEST_NAME} has format {found!r}; expected {MANIFEST_FORMAT!r}"
        )
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("metadata", {}), dict):
        raise CheckpointError(f"checkpoint {ckpt_dir}: {MANIFEST_NAME} lacks a 'files' table")
    manifest.setdefault("metadata", {})
    return manifest


def safe_member(root: Path, rel: str, where: str) -> Path:
    """`root / rel` for a manifest entry, which must stay inside `root`: manifests from a store or a download
    are untrusted, so an empty, absolute, '..' or NUL path is refused (`where` names the checkpoint in the error)."""
    return root / safe_relpath(rel, "file path in the manifest", where)


def publish_files(ckpt_dir: str | Path, manifest: dict) -> list[str]:
    """What a store uploads of a verified checkpoint: the manifest's files by name, then manifest.json.

    Why: files outside the manifest (logs, a stray link) are not the checkpoint, and a symbolic link among the
    listed files, or a directory on their way, would upload whatever host file it points to; it is refused.
    """
    ckpt_dir = Path(ckpt_dir)
    names = sorted(manifest["files"]) + [MANIFEST_NAME]
    for rel in names:
        path = ckpt_dir
        for part in safe_relpath(rel, "file path in the manifest", f"checkpoint {ckpt_dir}").split("/"):
            path = path / part
            if path.is_symlink():
                raise CheckpointError(
                    f"cannot publish {ckpt_dir}: {path.relative_to(ckpt_dir).as_posix()} is a symbolic link (to "
                    f"{os.readlink(path)}); a store upload takes only the checkpoint's own files — replace the link "
                    "by a copy of the file"
                )
    return names


def verify_checkpoint(ckpt_dir: str | Path, require_complete: bool = True) -> dict:
    """Check the marker and every listed file's size and sha256; return the manifest.

    Extra files not in the manifest are tolerated (e.g. a log written after the save).
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"checkpoint {ckpt_dir} does not exist or is not a directory")
    if not (ckpt_dir / MANIFEST_NAME).is_file():
        read_manifest(ckpt_dir)  # raises: says what the directory lacks
    if require_complete and not (ckpt_dir / COMPLETE_MARKER).is_file():
        raise CheckpointError(
            f"checkpoint {ckpt_dir} is incomplete (no {COMPLETE_MARKER} marker): a save was interrupted; "
            "use an earlier checkpoint"
        )
    manifest = read_manifest(ckpt_dir)
    marker = ckpt_dir / COMPLETE_MARKER
    if marker.is_file():
        recorded = marker.read_text(encoding="utf-8", errors="replace").strip()
        if re.fullmatch(r"[0-9a-f]{64}", recorded) and recorded != sha256_file(ckpt_dir / MANIFEST_NAME):
            raise CheckpointError(
                f"checkpoint {ckpt_dir}: file {MANIFEST_NAME} does not match the hash in {COMPLETE_MARKER} (corrupted)"
            )
    for rel, entry in sorted(manifest["files"].items()):
        path = safe_member(ckpt_dir, rel, f"checkpoint {ckpt_dir}")
        if not path.is_file():
            raise CheckpointError(f"checkpoint {ckpt_dir}: file {rel} listed in the manifest is missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise CheckpointError(
                f"checkpoint {ckpt_dir}: file {rel} has size {size}, manifest says {entry.get('size')} (corrupted)"
            )
        if sha256_file(path) != entry.get("sha256"):
            raise CheckpointError(f"checkpoint {ckpt_dir}: file {rel} fails its sha256 check (corrupted)")
    from dylora_moe.checkpoint.parse_check import first_parse_problem

    problem = first_parse_problem(ckpt_dir, sorted(manifest["files"]))
    if problem is not None:
        raise CheckpointError(f"checkpoint {ckpt_dir}: file {problem[0]} {problem[1]}")
    return manifest


def verify_named_checkpoint(ckpt_dir: str | Path, log: Callable[[str], object] = print) -> dict:
    """verify_checkpoint for a directory the user names, where a manifest that verifies in full stands in for a
    missing COMPLETE marker: W&B's own tools (`wandb artifact get`, `Artifact.download()`) fetch the uploaded
    files, which never include the marker. Scans of an output directory keep requiring the marker (no hashing)."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / COMPLETE_MARKER).is_file() or not (ckpt_dir / MANIFEST_NAME).is_file():
        return verify_checkpoint(ckpt_dir)
    manifest = verify_checkpoint(ckpt_dir, require_complete=False)
    log(f"checkpoint {ckpt_dir} has no {COMPLETE_MARKER} marker (as when fetched with W&B's own tools); verified "
        f"by its {MANIFEST_NAME} instead: all {len(manifest['files'])} files present with matching sha256")
    return manifest


def _fsync_path(path: Path, directory: bool = False) -> None:
    """fsync a file or directory; directories cannot be fsynced everywhere, so that part is best effort."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _write_marker(final_dir: Path) -> None:
    """Write COMPLETE (holding the manifest's sha256 when there is one) and make it durable."""
    manifest = final_dir / MANIFEST_NAME
    content = sha256_file(manifest) if manifest.is_file() else "complete"
    marker = final_dir / COMPLETE_MARKER
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(content + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_path(final_dir, directory=True)


def publish_atomically(tmp_dir: str | Path, final_dir: str | Path) -> Path:
    """Make tmp_dir durable, rename it to final_dir, then write the COMPLETE marker last.

    An existing final_dir is moved aside before the rename and deleted only after the marker is down,
    so a crash at any point leaves either the old or the new checkpoint recognisable.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if not tmp_dir.is_dir():
        raise CheckpointError(f"cannot publish {tmp_dir}: not a directory")
    (tmp_dir / COMPLETE_MARKER).unlink(missing_ok=True)  # only the publish step may mark complete
    for path in sorted(tmp_dir.rglob("*"), reverse=True):
        if path.is_symlink():
            continue
        _fsync_path(path, directory=path.is_dir())
    _fsync_path(tmp_dir, directory=True)

    parent = final_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if final_dir.exists():
        aside = parent / f".old-{final_dir.name}-{os.getpid()}"
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(final_dir, aside)
    os.replace(tmp_dir, final_dir)
    _fsync_path(parent, directory=True)
    _write_marker(final_dir)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
        _fsync_path(parent, directory=True)
    return final_dir


def incomplete_reason(ckpt_dir: str | Path) -> str | None:
    """Why a checkpoint directory is not a finished save (None when it is): no manifest, or no marker."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / MANIFEST_NAME).is_file():
        return f"no {MANIFEST_NAME} (not written by dylora-moe, or damaged)"
    if not (ckpt_dir / COMPLETE_MARKER).is_file():
        return f"incomplete (no {COMPLETE_MARKER} marker) — a save was interrupted"
    return None


def is_complete(ckpt_dir: str | Path) -> bool:
    """True when the save finished: the marker and the manifest are both present (no hashing)."""
    ckpt_dir = Path(ckpt_dir)
    return (ckpt_dir / COMPLETE_MARKER).is_file() and (ckpt_dir / MANIFEST_NAME).is_file()


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """All `checkpoint-<step>` directories in output_dir (complete or not), sorted by step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT_DIR_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found, key=lambda item: item[0])


def find_latest_checkpoint(
    output_dir: str | Path, verify: bool = True, log: Callable[[str], object] = print
) -> Path | None:
    """Newest complete checkpoint that verifies; newer partial or corrupt ones are skipped and reported."""
    for _step, path in reversed(list_checkpoints(output_dir)):
        reason = incomplete_reason(path)
        if reason is not None:
            log(f"skipping {path.name}: {reason}")
            continue
        if verify:
            try:
                verify_checkpoint(path)
            except CheckpointError as exc:
                log(f"skipping {path.name}: corrupt — {exc}")
                continue
        return path
    return None


_STALE_RE = re.compile(r"^\.(?:tmp|old|upload)-checkpoint-\d+-(?P<pid>\d+)(?:-\d+)?$")


def clean_stale_temp_dirs(
    output_dir: str | Path,
    log: Callable[[str], object] = print,
    pattern: re.Pattern = _STALE_RE,
    lock_for: Callable[[re.Match], Path] | None = None,
    left_by: str = "an interrupted checkpoint save",
) -> list[Path]:
    """Remove temp dirs matching `pattern` (default `.tmp-`/`.old-`/`.upload-checkpoint-*`) left by a killed process.

    Why: an interrupted save or download leaves its temp dir behind; it can never become a checkpoint (only
    publish_atomically marks complete), so the next run or download deletes it to reclaim the disk space.
    Which ones are stale: in an output directory (one run at a time, by its run lock) those not named with this
    process's id; with `lock_for` (the lock file a writer of that temp holds, as downloads into the cache do)
    those whose lock nobody holds, removed while holding it, so a temp of a live writer is never touched.
    """
    output_dir = Path(output_dir)
    removed = []
    if not output_dir.is_dir():
        return removed
    for child in sorted(output_dir.iterdir()):
        match = pattern.match(child.name)
        if not match or child.is_symlink() or not child.is_dir():
            continue
        if lock_for is None:
            if int(match.group("pid")) != os.getpid():
                _remove_stale(child, left_by, log, removed)
            continue
        try:
            with file_lock(lock_for(match), wait=False) as unused:
                if unused and child.is_dir():
                    _remove_stale(child, left_by, log, removed)
        except OSError:  # its lock cannot be opened (a directory of another user): not ours to judge
            continue
    return removed


def _remove_stale(path: Path, left_by: str, log: Callable[[str], object], removed: list[Path]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    log(f"removed {path.name}: left by {left_by}")
    removed.append(path)
