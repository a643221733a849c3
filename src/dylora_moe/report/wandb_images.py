"""Log report figures to the active W&B run as images.

Why: runs watched on W&B should show the same pictures as the local report. wandb is optional and
slow to import, so it is imported here, only when called, and nothing happens without an active run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def log_report_to_wandb(figure_paths: Iterable[str | Path], prefix: str = "report") -> bool:
    """Log each PNG as `wandb.Image` under `<prefix>/<file stem>`; False when no run is active."""
    try:
        import wandb
    except ImportError:
        return False
    if wandb.run is None:
        return False
    images = {f"{prefix}/{Path(p).stem}": wandb.Image(str(p), caption=Path(p).stem) for p in figure_paths}
    if images:
        wandb.run.log(images)
    return True
