"""A `transformers.TrainerCallback` that uploads every saved checkpoint to a store in the background.

Why a callback: the HF Trainer already decides when to save and tracks the best metric; the callback
only maps those events to aliases — `latest` + `step-N` on each save, `best` when the save is the new
best, `final` at the end — and reads the artifact metadata from the checkpoint's own manifest.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from dylora_moe.checkpoint.manifest import is_complete, read_manifest
from dylora_moe.checkpoint.uploader import BackgroundUploader


def save_aliases(step: int, best_global_step: int | None) -> list[str]:
    """Aliases of a save at `step` (`latest` is added by the store itself for a new version)."""
    aliases = ["latest", f"step-{step}"]
    if best_global_step is not None and best_global_step == step:
        aliases.append("best")
    return aliases


class CheckpointUploadCallback(TrainerCallback):
    """Upload `<output_dir>/checkpoint-<global_step>` after each save; `final` on train end."""

    def __init__(self, uploader: BackgroundUploader, log=print):
        self.uploader = uploader
        self.log = log
        self.last_uploaded: Path | None = None

    def _checkpoint(self, args, state) -> Path:
        return Path(args.output_dir) / f"checkpoint-{state.global_step}"

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        ckpt = self._checkpoint(args, state)
        if not is_complete(ckpt):
            self.log(f"not uploading {ckpt}: it has no COMPLETE marker (save not finished)")
            return control
        best_step = getattr(state, "best_global_step", None)
        self.uploader.submit(ckpt, save_aliases(state.global_step, best_step), read_manifest(ckpt)["metadata"])
        self.last_uploaded = ckpt
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        ckpt = self._checkpoint(args, state)
        if not is_complete(ckpt):
            ckpt = self.last_uploaded
        if ckpt is not None and is_complete(ckpt):
            # identical content: stores add the alias to the existing version instead of a new upload
            self.uploader.submit(ckpt, ["final"], read_manifest(ckpt)["metadata"])
        return control
