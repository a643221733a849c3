"""Trainer callbacks: early stopping with carried-over patience, maturity schedule, preemption signals.

Each keeps its state in `DyLoRATrainingState` (saved in every checkpoint) rather than in HF's
`stateful_callbacks`, because on resume HF would restore the *old* patience from the checkpoint.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time

from transformers import TrainerCallback

from dylora_moe.training.distributed import reduced_over_processes
from dylora_moe.training.state import EarlyStoppingState

EXIT_PREEMPTED = 143  # 128 + SIGTERM: the platform should restart the worker; a checkpoint was written


class PatienceEarlyStopping(TrainerCallback):
    """Stop after `patience` evaluations without improving eval_loss by more than `threshold`."""

    def __init__(self, patience: int, state: EarlyStoppingState, threshold: float = 0.0, log=print):
        self.patience = patience
        self.threshold = threshold
        self.state = state
        self.log = log

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get("eval_loss")
        if value is None or not math.isfinite(value):
            return
        es = self.state
        if es.best_metric is None or value < es.best_metric - self.threshold:
            es.best_metric, es.counter = float(value), 0
        else:
            es.counter += 1
        if es.counter >= self.patience:
            es.stopped = True
            control.should_training_stop = True
            control.should_save = True
            self.log(
                f"[train] early stopping at step {state.global_step}: eval_loss did not improve for "
                f"{es.counter} evaluations (patience {self.patience}); best {es.best_metric:.4f}"
            )


class MaturitySchedule(TrainerCallback):
    """Marks every expert mature at `maturity_step`: dense routing before, sparse top-k after."""

    def __init__(self, model, maturity_step: int | None, log=print):
        self.model = model
        self.maturity_step = maturity_step
        self.log = log

    def on_step_end(self, args, state, control, **kwargs):
        if self.maturity_step is None or state.global_step < self.maturity_step or self.model.is_sparse:
            return
        self.model.set_maturity([True] * self.model.num_experts)
        state.log_history.append(
            {"step": state.global_step, "epoch": state.epoch, "event": "maturity",
             "maturity": [bool(x) for x in self.model.maturity.tolist()]}
        )
        self.log(f"[train] step {state.global_step}: all {self.model.num_experts} experts mature -> sparse top-k routing")


class PreemptionHandler(TrainerCallback):
    """SIGTERM/SIGINT: finish the current optimizer step, save, then stop; a second signal exits at once.

    Saving happens through the trainer's normal, atomic checkpoint path, so the previous complete checkpoint
    is never touched. In multi-process runs the flag is all-reduced so every rank stops at the same step.
    """

    def __init__(self, log=print):
        self.requested_at: float | None = None
        self.signal_name = ""
        self.stopped_step: int | None = None
        self.log = log
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.requested_at is not None:
            sys.stderr.write(f"[train] second {signal.Signals(signum).name}: exiting now without saving\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.requested_at = time.monotonic()
        self.signal_name = signal.Signals(signum).name
        sys.stderr.write(f"[train] {self.signal_name} received: saving a checkpoint at the end of this step\n")
        sys.stderr.flush()

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def _any_rank_requested(self) -> bool:
        flag = bool(reduced_over_processes(int(self.requested), op="max"))
        if flag and self.requested_at is None:
            self.requested_at, self.signal_name = time.monotonic(), "peer signal"
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_requested():
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False
            self.stopped_step = state.global_step
