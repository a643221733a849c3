"""May this run write checkpoints into `--output_dir`? Not over another run's, unless told to.

Why: a new run numbers its checkpoints from step 0, so writing into a directory that holds another run's
`checkpoint-*` replaces some of them and leaves the rest, and `auto` would later resume a mixture (the
closing summary named the old run's last checkpoint). As in Hugging Face's `overwrite_output_dir`, a fresh
run (or a weights-only resume, which also restarts at step 0) is refused there; `--overwrite_output_dir`
deletes the old checkpoints first, and a full resume continues the run that wrote them.

An output dir inside a checkpoint (the one being resumed, say) is refused outright: the run would overwrite
that checkpoint's trainer state and nest new checkpoints in it, so it would no longer verify.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dylora_moe.checkpoint.manifest import CHECKPOINT_DIR_RE, MANIFEST_NAME, list_checkpoints
from dylora_moe.errors import UserError


def enclosing_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint directory that `output_dir` (symlinks resolved) is or lies in, else None: a directory
    with a checkpoint manifest, or a `checkpoint-N` holding a trainer_state.json (HF's layout) and no
    checkpoints of its own (a run directory that happens to be named so holds them)."""
    resolved = Path(output_dir).resolve()
    for directory in (resolved, *resolved.parents):
        if (directory / MANIFEST_NAME).is_file():
            return directory
        if (CHECKPOINT_DIR_RE.match(directory.name) and (directory / "trainer_state.json").is_file()
                and not list_checkpoints(directory)):
            return directory
    return None


def check_output_dir_location(output_dir: str | Path) -> None:
    """Refuse an --output_dir inside a checkpoint, before anything (the run lock included) is written."""
    checkpoint = enclosing_checkpoint(output_dir)
    if checkpoint is not None:
        raise UserError(
            f"--output_dir {output_dir} is inside the checkpoint {checkpoint}; training there would overwrite it; "
            f"choose an --output_dir outside any checkpoint (e.g. {checkpoint.parent} to continue that run)"
        )


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint directory; a symlinked one loses only the link, never the directory it points to."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)


def claim_output_dir(cfg, resume_path: Path | None, log=print) -> None:
    """Refuse (or, with --overwrite_output_dir, clear) an output dir that holds checkpoints this run would not continue."""
    output_dir = Path(cfg.output_dir)
    existing = [path for _, path in list_checkpoints(output_dir)]
    continues_them = resume_path is not None and not cfg.weights_only_resume
    fresh_by_auto = resume_path is None and cfg.resume_from_checkpoint == "auto"  # only unusable ones are left
    if not existing or continues_them or fresh_by_auto:
        return
    names = ", ".join(p.name for p in existing[-3:])
    source = resume_path.resolve() if resume_path is not None else None
    inside = source is not None and any(source == p.resolve() for p in existing)
    if not cfg.overwrite_output_dir:
        what = "a weights-only resume starts at step 0 and would overwrite them" if cfg.weights_only_resume else \
            "a fresh run would overwrite them"
        raise UserError(
            f"--output_dir {output_dir} already holds checkpoints of another run ({names}); {what}; choose a new "
            "--output_dir, continue that run with --resume_from_checkpoint auto, or pass --overwrite_output_dir "
            "to delete them"
        )
    if inside:
        raise UserError(
            f"--overwrite_output_dir would delete {resume_path}, the checkpoint this weights-only resume loads; "
            "choose a new --output_dir for the new run"
        )
    for path in existing:
        remove_checkpoint(path)
    log(f"[train] --overwrite_output_dir: deleted {len(existing)} checkpoint(s) of the previous run in {output_dir}")
