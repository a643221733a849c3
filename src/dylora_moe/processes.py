"""Which process is this, and a log line that only the main one prints.

Under torchrun every process runs the same code; user-facing lines (progress, decisions, errors) come once,
from rank 0. `RANK` is what torchrun and accelerate set; a plain `python` run is rank 0.
"""

from __future__ import annotations

import os
import sys


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0


def log_stderr(message: str) -> None:
    """Print `message` to stderr: the log of single-process commands (generate, checkpoints). On a terminal
    with progress bars the line goes above them (tqdm clears and redraws them) instead of into one."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


def log_main(message: str) -> None:
    """Print `message` to stderr on the main process only (the default `log` of the library entry points)."""
    if is_main_process():
        log_stderr(message)
