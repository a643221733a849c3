"""The seed document's command lines, verbatim, resuming through the real W&B SDK from the loopback server.

A first run (W&B on through WANDB_PROJECT/WANDB_ENTITY, as on the seed's machines) trains 9 of 10 epochs and
uploads `user/project/best-dylora-model-full:v0`; each seed line then runs in a fresh working directory (a new
VM: no output dir) as a real `dylora-moe` subprocess and continues from v0. The registry datasets come from a
local mirror (`DYLORA_DATA_DIR`) cut from ../shared/data at test time, one global batch per epoch.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from seed_data import SEED_DATASETS, write_seed_mirror
from train_helpers import SRC
from wandb_server.fixtures import wandb_server  # noqa: F401 - loopback W&B server as a fixture

ARTIFACT = "user/project/best-dylora-model-full:v0"
SEED = ["--datasets", SEED_DATASETS, "--bf16", "--num_epochs", "10", "--num_experts", "2"]
SEED_LINES = {
    "flag": ["--wandb_checkpoint_artifact", ARTIFACT, *SEED],
    "subsets": ["--wandb_checkpoint_artifact", ARTIFACT, *SEED, "--training_subset", "10", "--eval_subset", "20",
                "--num_epochs", "1"],
    "patience": ["--wandb_checkpoint_artifact", ARTIFACT, *SEED, "--early_stopping_patience", "5"],
}


def dylora_moe(args: list[str], cwd, env: dict, module: str = "dylora_moe") -> subprocess.CompletedProcess:
    """`dylora-moe train ARGS` (or the Vertex container entrypoint) in `cwd`, its default output dir."""
    prefix = ["train"] if module == "dylora_moe" else []
    done = subprocess.run([sys.executable, "-m", module, *prefix, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


@pytest.fixture
def seed_env(wandb_server, shared_data, tmp_path):
    wandb_server.state.entities.add("user")  # the seed's `user/project/...`: an account of the loopback server
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               DYLORA_DATA_DIR=str(write_seed_mirror(shared_data, tmp_path / "data", rows=3)),
               WANDB_PROJECT="project", WANDB_ENTITY="user")
    first = dylora_moe(["--datasets", SEED_DATASETS, "--bf16", "--num_epochs", "9", "--num_experts", "2"],
                       tmp_path, env)
    assert "[train] done: 9 steps" in first.stderr, first.stderr[-3000:]
    collection = wandb_server.state.collections[("user", "project", "best-dylora-model-full")]
    assert len(collection.versions) == 1
    return env


def resumed_from_v0(done: subprocess.CompletedProcess) -> str:
    """The resume line of a run that continued v0 (step 9); fails when the run started fresh."""
    line = re.search(r"\[train\] (resuming at step 9, .*|training data changed .* from step 9)", done.stderr)
    assert line, done.stderr[-3000:]
    return line.group(1)


@pytest.mark.slow
def test_seed_command_lines_and_vertex_variable_resume_from_the_wandb_artifact(seed_env, wandb_server, tmp_path):
    runs = {}
    for name, args in SEED_LINES.items():
        (tmp_path / name).mkdir()
        runs[name] = dylora_moe(args, tmp_path / name, seed_env)
    assert resumed_from_v0(runs["flag"]) == "resuming at step 9, epoch 9, batch 0/1 of the epoch"
    assert "[train] done: 10 steps" in runs["flag"].stderr
    assert resumed_from_v0(runs["patience"]) == "resuming at step 9, epoch 9, batch 0/1 of the epoch"
    assert "[train] done: 10 steps" in runs["patience"].stderr
    # other subsets are other data: no mid-epoch skip, one more epoch on the new subsets from step 9
    assert resumed_from_v0(runs["subsets"]).startswith("training data changed")
    assert "[train] done: 10 steps" in runs["subsets"].stderr

    # the seed's Vertex submission sets WANDB_CHECKPOINT_ARTIFACT; the container entrypoint passes it through
    (tmp_path / "vertex").mkdir()
    vertex = dylora_moe(SEED, tmp_path / "vertex", dict(seed_env, WANDB_CHECKPOINT_ARTIFACT=ARTIFACT),
                        module="dylora_moe.cloud.entrypoint")
    assert resumed_from_v0(vertex) == "resuming at step 9, epoch 9, batch 0/1 of the epoch"
    assert "[train] done: 10 steps" in vertex.stderr

    v0 = wandb_server.state.collections[("user", "project", "best-dylora-model-full")].versions[0]
    resumed = [r for r in wandb_server.state.runs.values() if v0.id in r.used]
    assert len(resumed) == 4  # each line's W&B run records the artifact it came from
