"""What training prints while it runs: one formatted line per logging step and per evaluation.

HF's ProgressCallback writes every log as a raw dict above its tqdm bars, and tqdm's carriage-return updates
fill a log file with overwritten lines. `ProgressLog` takes the place of HF's printers (run.py removes them
from the trainer's callbacks): it writes one line per log through the run's `log`, and only when stderr is a
terminal does it also show HF's bars. It reads the logs and never changes them, so
W&B and the trainer state's history get exactly what HF gives them.
"""

from __future__ import annotations

import sys
import time

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from dylora_moe.training.distributed import reduced_over_processes

# keys of HF's end-of-training summary log; the `[train] done` line says the same
SUMMARY_KEYS = ("train_runtime", "train_loss")


def train_line(logs: dict, step: int, total: int, tokens_per_s: float | None, eta_s: float | None) -> str:
    """`[train] step 10/40 (25%): loss 5.5901 (lm 5.5800, balance 1.0312), lr 9.19e-04, 1,234 tokens/s, ETA 0:00:17`"""
    parts = [f"loss {logs['loss']:.4f}{_loss_parts(logs, '')}"]
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:,.0f} tokens/s")
    if eta_s is not None:
        parts.append(f"ETA {_clock(eta_s)}")
    return f"[train] {_step(step, total)}: {', '.join(parts)}"


def eval_line(logs: dict, step: int, total: int) -> str:
    """`[eval] step 40/40 (100%): loss 5.4816 (lm 5.4700, balance 0.9999) in 10.9 s`"""
    took = f" in {logs['eval_runtime']:.1f} s" if "eval_runtime" in logs else ""
    return f"[eval] {_step(step, total)}: loss {logs['eval_loss']:.4f}{_loss_parts(logs, 'eval_')}{took}"


def other_line(logs: dict, step: int, total: int) -> str:
    """Any other log (a callback's own values), as `name value` pairs rather than a dict."""
    values = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                       for key, value in logs.items() if key != "epoch")
    return f"[train] {_step(step, total)}: {values}"


def _loss_parts(logs: dict, prefix: str) -> str:
    named = [(label, logs.get(f"{prefix}{key}")) for label, key in (("lm", "lm_loss"), ("balance", "balance_loss"))]
    shown = [f"{label} {value:.4f}" for label, value in named if value is not None]
    return f" ({', '.join(shown)})" if shown else ""


def _step(step: int, total: int) -> str:
    if total <= 0:
        return f"step {step}"
    return f"step {step}/{total} ({100 * step // total}%)"


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ProgressLog(TrainerCallback):
    """The progress lines of a run, through `log`; with `bars` (default: stderr is a terminal) also HF's bars.

    Tokens per second count the non-padding input tokens of every process (the trainer hands each training
    micro-batch to `count_batch`) over the time since the previous line, evaluations left out; the ETA
    extrapolates this session's time per step, evaluations included."""

    def __init__(self, log=print, bars: bool | None = None):
        self.log = log
        self.bars = ProgressCallback() if (sys.stderr.isatty() if bars is None else bars) else None
        self.tokens: torch.Tensor | int = 0  # since the last line, this process; kept on device until logged
        self.started = self.since = time.monotonic()
        self.start_step = 0
        self.paused = 0.0  # seconds of evaluation since the last line

    def count_batch(self, inputs: dict) -> None:
        """Called by the trainer with every training micro-batch."""
        mask = inputs.get("attention_mask")
        self.tokens = self.tokens + (mask.sum() if mask is not None else inputs["input_ids"].numel())

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.since = time.monotonic()
        self.start_step, self.tokens, self.paused = state.global_step, 0, 0.0
        self._bars("on_train_begin", args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        self._bars("on_step_end", args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, **kwargs):
        self._bars("on_prediction_step", args, state, control, **kwargs)

    def on_evaluate(self, args, state, control, **kwargs):
        self._bars("on_evaluate", args, state, control, **kwargs)

    def on_predict(self, args, state, control, **kwargs):
        self._bars("on_predict", args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        self._bars("on_train_end", args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:  # every process gets here together: the token count is summed over them
            line = train_line(logs, state.global_step, state.max_steps, *self._rates(state))
        elif "eval_loss" in logs:
            self.paused += logs.get("eval_runtime", 0.0)
            line = eval_line(logs, state.global_step, state.max_steps)
        elif any(key in logs for key in SUMMARY_KEYS):
            return
        else:
            line = other_line(logs, state.global_step, state.max_steps)
        if state.is_world_process_zero:
            self.log(line)  # log_main puts it above the bars on a terminal

    def _rates(self, state) -> tuple[float | None, float | None]:
        """(tokens/s since the last line, seconds left); None where nothing was measured yet."""
        now = time.monotonic()
        tokens = reduced_over_processes(int(self.tokens))
        busy = now - self.since - self.paused
        tokens_per_s = tokens / busy if tokens and busy > 0 else None
        self.tokens, self.since, self.paused = 0, now, 0.0
        done = state.global_step - self.start_step
        eta = (now - self.started) / done * (state.max_steps - state.global_step) if done > 0 else None
        return tokens_per_s, eta

    def _bars(self, event: str, args, state, control, **kwargs) -> None:
        if self.bars is not None:
            getattr(self.bars, event)(args, state, control, **kwargs)
