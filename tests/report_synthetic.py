"""A realistic synthetic trainer_state.json for the report tests (no training needed).

Story: 4 experts, logging every 5 steps, eval every 20. The first run saved checkpoint-60, kept going
to step 80 (with one maturity change at 75) and died before its next save. The resumed run restarted
from step 60, so the history holds steps 65-80 twice: the abandoned values (old + 1.0) and the new
ones. A continual run also placed three skills.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

EXPERTS = 4
LOG_STEPS = list(range(5, 125, 5))
RESUME_STEP = 60
ABANDONED_STEPS = list(range(65, 85, 5))
MATURITY_STEPS = [30, 55, 90, 110]


def train_loss(step: int) -> float:
    return round(3.0 * math.exp(-step / 60) + 0.5, 6)


def _train(step: int, offset: float = 0.0) -> dict:
    loss = train_loss(step) + offset
    usage = [1.0 + ((step // 5 + i) % 3) * 0.5 for i in range(EXPERTS)]
    total = sum(usage)
    entry = {
        "step": step, "epoch": step / 40, "loss": loss, "lm_loss": loss - 0.01, "balance_loss": 0.01 + offset / 10,
        "learning_rate": 2e-4 * min(1.0, step / 20) * (1 - step / 130), "grad_norm": 1.0 + step / 100,
        "routing_entropy": 1.2 + step / 1000,
    }
    entry.update({f"expert_usage_{i}": u / total for i, u in enumerate(usage)})
    return entry


def _eval(step: int, offset: float = 0.0) -> dict:
    loss = train_loss(step) + 0.2 + offset
    return {"step": step, "epoch": step / 40, "eval_loss": loss, "eval_lm_loss": loss - 0.01,
            "eval_balance_loss": 0.012, "eval_runtime": 1.5}


def _maturity(step: int, mature: int) -> dict:
    return {"step": step, "event": "maturity", "maturity": [i < mature for i in range(EXPERTS)]}


def log_history() -> list[dict]:
    """First run up to 80, the resume event at 60, then the new timeline 65-120."""
    first: list[dict] = [{"step": 0, "event": "skill", "skill": "stdlib:text", "expert": 0, "novel": True}]
    for step in range(5, 85, 5):
        offset = 1.0 if step > RESUME_STEP else 0.0
        first.append(_train(step, offset))
        if step == 30:
            first.append(_maturity(30, 1))
        if step == 55:
            first.append(_maturity(55, 2))
        if step == 75:
            first.append(_maturity(75, 3))  # abandoned: must not show up
        if step % 20 == 0:
            first.append(_eval(step, offset))
    first.append(_train(60))  # an exact repeat, as a re-saved history can carry
    resumed: list[dict] = [
        {"step": RESUME_STEP, "epoch": 1.5, "event": "resume", "resumed_from": "wandb://team/proj/run-ckpt:v3",
         "exact": True},
        {"step": RESUME_STEP, "event": "skill", "skill": "mbpp", "expert": 1, "novel": True},
        {"step": 62, "event": "dataset_changed"},
    ]
    for step in range(65, 125, 5):
        resumed.append(_train(step))
        if step == 90:
            resumed.append(_maturity(90, 3))
            resumed.append({"step": 90, "event": "skill", "skill": "code_alpaca", "expert": 1, "novel": False})
        if step == 110:
            resumed.append(_maturity(110, 4))
        if step % 20 == 0:
            resumed.append(_eval(step))
    resumed.append({"step": 120, "epoch": 3.0, "train_runtime": 42.0, "train_loss": 1.1, "total_flos": 1.0})
    return first + resumed


def write_state(directory: Path, history: list[dict] | None = None, global_step: int = 120) -> Path:
    """Write `<directory>/trainer_state.json`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {"global_step": global_step, "epoch": global_step / 40, "best_metric": None,
             "log_history": log_history() if history is None else history}
    path = directory / "trainer_state.json"
    path.write_text(json.dumps(state, indent=1), encoding="utf-8")
    return path
