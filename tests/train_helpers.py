"""Short real training runs on a micro base for the training/resumption tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from dylora_moe.data.config import DataConfig
from dylora_moe.training.config import TrainConfig
from dylora_moe.training.run import train

ALPACA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "code_alpaca_2k.json"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def cli_args(base: str, out: Path, *extra: str) -> list[str]:
    """The same run as micro_config (but checkpoints every 100 steps), spelled as command-line flags."""
    return [
        "train", "--model_name", base, "--output_dir", str(out), "--num_epochs", "2", "--save_steps", "100",
        "--eval_steps", "3", "--logging_steps", "1", "--train_batch_size", "4", "--eval_batch_size", "8",
        "--gradient_accumulation_steps", "2", "--lora_dropout", "0.1", "--learning_rate", "5e-3",
        "--warmup_ratio", "0.1", "--mature_after_steps", "-1", "--report_to", "none",
        "--datasets", f"code_alpaca={ALPACA}", "--max_seq_length", "96", "--max_examples_per_dataset", "60",
        "--eval_fraction", "0.1", *extra,
    ]


def cli_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WANDB_API_KEY", None)
    return env


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m dylora_moe ARGS` in a real subprocess."""
    return subprocess.run([sys.executable, "-m", "dylora_moe", *args], env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def is_loss_line(line: str) -> bool:
    """A training progress line, `[train] step 4/12 (33%): loss 6.2246 (...)`: one per logging step."""
    return re.search(r"\[train\] step \d+(/\d+ \(\d+%\))?: loss ", line) is not None


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's single `error: ...` line; fails when stderr holds a traceback or more than one error line."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = re.findall(r"error: [^\r\n]*", proc.stderr)  # may follow an unfinished progress bar
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def micro_config(base: str, output_dir, **overrides) -> TrainConfig:
    data = DataConfig(
        datasets=overrides.pop("datasets", f"code_alpaca={ALPACA}"),
        max_seq_length=96,
        max_examples_per_dataset=overrides.pop("max_examples", 60),
        eval_fraction=0.1,
    )
    values = dict(
        model_name=base, output_dir=str(output_dir), num_epochs=2, save_steps=3, eval_steps=3, logging_steps=1,
        train_batch_size=4, eval_batch_size=8, gradient_accumulation_steps=2, lora_dropout=0.1,
        learning_rate=5e-3, warmup_ratio=0.1, mature_after_steps=-1, report_to="none", data=data,
    )
    values.update(overrides)
    return TrainConfig(**values)


class StopAt(TrainerCallback):
    """Stops a run after `step` optimizer steps, saving a checkpoint there (an interruption)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def run(cfg: TrainConfig, stop_at: int | None = None):
    return train(cfg, log=lambda m: None, extra_callbacks=[StopAt(stop_at)] if stop_at else None)


def step_losses(result) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in result.log_history if "loss" in e and "event" not in e}


def adapter_weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(str(Path(checkpoint) / "adapter_model.safetensors"))


def max_weight_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)
