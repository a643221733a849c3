"""Multi-process training runs for the distributed tests: `torchrun` / `accelerate launch` on CPU (gloo).

`ENTRY` is a tiny torchrun script: the normal `dylora-moe` CLI plus, optionally, a callback that interrupts the
run after a given step with a checkpoint (the multi-process twin of train_helpers.StopAt) and slow uploads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from train_helpers import ALPACA

SRC = str(Path(__file__).resolve().parents[1] / "src")
TESTS = str(Path(__file__).resolve().parent)

# 87 CodeAlpaca rows at 128 tokens, 20% held out -> 64 train / 16 eval examples: 64 is a multiple of every global
# batch used here (8, 4) and 16 of every eval batch over 2 processes (2 x 4, 1 x 8), so no process ever gets a short last batch or a padded duplicate, and
# the 1- and 2-process runs see the same samples in each optimizer step and in each evaluation.
MAX_EXAMPLES = 87

ENTRY = textwrap.dedent("""
    import sys, time
    import dylora_moe.training.run as run_module
    from dylora_moe.checkpoint.uploader import BackgroundUploader
    from dylora_moe.cli import main
    from train_helpers import StopAt

    stop_at, slow_upload, real_train = int(sys.argv[1]), float(sys.argv[2]), run_module.train

    def train_with_stop(cfg, log=run_module.log_main, extra_callbacks=None):
        return real_train(cfg, log=log, extra_callbacks=[*(extra_callbacks or []), StopAt(stop_at)])

    if stop_at:
        run_module.train = train_with_stop
    if slow_upload:  # every upload takes this long: widens the window in which the main process uploads
        real_publish = BackgroundUploader._publish_with_retry
        BackgroundUploader._publish_with_retry = lambda self, job: (time.sleep(slow_upload), real_publish(self, job))
    sys.exit(main(sys.argv[3:]))
""")


def cli_args(base: str, out: Path, *extra: str, batch: int = 4, grad_accum: int = 1, eval_batch: int = 4) -> list[str]:
    """`train` flags for the micro run; dropout 0 so that no random stream differs between world sizes."""
    return [
        "train", "--model_name", base, "--output_dir", str(out), "--num_epochs", "2", "--save_steps", "3",
        "--eval_steps", "3", "--logging_steps", "1", "--train_batch_size", str(batch), "--eval_batch_size", str(eval_batch),
        "--gradient_accumulation_steps", str(grad_accum), "--lora_dropout", "0.0", "--learning_rate", "5e-3",
        "--warmup_ratio", "0.1", "--mature_after_steps", "-1", "--report_to", "none",
        "--datasets", f"code_alpaca={ALPACA}", "--max_seq_length", "128",
        "--max_examples_per_dataset", str(MAX_EXAMPLES), "--eval_fraction", "0.2", *extra,
    ]


def dist_env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([SRC, TESTS, os.environ.get("PYTHONPATH", "")]), **extra)
    for key in ("WANDB_API_KEY", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def launch_command(args: list[str], nproc: int = 2, stop_at: int = 0, slow_upload: float = 0.0) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    if not stop_at and not slow_upload:
        return [*launcher, "-m", "dylora_moe", *args]
    # torchrun runs a script file (it has no -c): write the entry next to the outputs
    script = Path(args[args.index("--output_dir") + 1]).parent / "dist_entry.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(ENTRY)
    return [*launcher, str(script), str(stop_at), str(slow_upload), *args]


def torchrun(args: list[str], nproc: int = 2, stop_at: int = 0, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(launch_command(args, nproc, stop_at), env=dist_env(), capture_output=True, text=True,
                          timeout=timeout)


def history(out: Path) -> list[dict]:
    """The log history of a finished run (written by the main process at the end)."""
    return json.loads((Path(out) / "trainer_state.json").read_text())["log_history"]


def losses(entries: list[dict], key: str = "loss") -> dict[int, float]:
    return {e["step"]: e[key] for e in entries if key in e and "event" not in e}


def config_from_cli(args: list[str]):
    """The `TrainConfig` the CLI would build from `args` (so in-process runs equal the subprocess ones)."""
    import argparse

    from dylora_moe.data.args import add_data_args
    from dylora_moe.training.cli import add_train_flags, config_from_namespace

    parser = argparse.ArgumentParser()
    add_train_flags(parser)
    add_data_args(parser)
    return config_from_namespace(parser.parse_args(args[1:]))
