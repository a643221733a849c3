"""benchmarks/resume_startup.py runs end to end in its reduced mode and prints its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_resume_startup_benchmark_quick_prints_the_three_figures_and_deltas():
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "resume_startup.py"), "--quick"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    number = r"[-+]?\d+\.\d+"
    for pattern in (rf"^fresh: {number} s to the first optimizer step \(median of 1\)$",
                    rf"^resumed, download: {number} s, [1-9]\d* bytes fetched$",
                    rf"^resumed, from cache: {number} s, 0 bytes fetched$",
                    rf"^delta download: {number} s$", rf"^delta cache: {number} s$"):
        assert re.search(pattern, done.stdout, re.MULTILINE), (pattern, done.stdout)
