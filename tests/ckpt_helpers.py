"""Build small real checkpoints for the checkpoint/store tests (no trainer needed)."""

from __future__ import annotations

import os
from pathlib import Path

from dylora_moe.checkpoint.manifest import publish_atomically, write_manifest


def sample_metadata(step: int, **overrides) -> dict:
    """Metadata with every key the trainer writes, so stores and CLI see realistic manifests."""
    meta = {
        "global_step": step,
        "epoch": step / 10,
        "best_metric": 1.0 / (step + 1),
        "best_global_step": step,
        "run_id": "run123",
        "run_name": "unit",
        "base_model": "tiny/base",
        "num_experts": 3,
        "lora_r": 4,
        "maturity": [True, False, True],
        "datasets": ["mbpp", "code_alpaca"],
        "dataset_fingerprint": "fp-abc",
        "world_size": 1,
    }
    meta.update(overrides)
    return meta


def make_checkpoint(output_dir: Path, step: int, payload: bytes | None = None, **meta) -> Path:
    """Write a few files (one nested) into a temp dir, manifest it and publish it as checkpoint-<step>."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    (tmp / "experts").mkdir(parents=True)
    (tmp / "adapter.safetensors").write_bytes(payload if payload is not None else bytes(range(256)) * (step + 1))
    (tmp / "trainer_state.json").write_text(f'{{"global_step": {step}}}\n')
    (tmp / "experts" / "expert_0.bin").write_bytes(b"expert-%d" % step)
    write_manifest(tmp, sample_metadata(step, **meta))
    return publish_atomically(tmp, output_dir / f"checkpoint-{step}")
