"""The one cache root of the project: `$DYLORA_CACHE_DIR`, else `~/.cache/dylora-moe`.

Mined stdlib data lives directly in it, verified artifact downloads in `<root>/artifacts` (`$DYLORA_MOE_CACHE_DIR`
moves only those, for tests that want an isolated download cache). CI points the root at a fresh folder
inside the clone, so every run mines and downloads from nothing, as a new machine does.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("DYLORA_CACHE_DIR") or Path.home() / ".cache" / "dylora-moe")


def artifact_cache_dir() -> Path:
    return Path(os.environ.get("DYLORA_MOE_CACHE_DIR") or cache_root() / "artifacts")
