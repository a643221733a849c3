"""Turn a trainer's `log_history` into tidy per-metric series and event lists.

Why: the raw history mixes train logs, eval logs, events and a final summary in one list, every key
is optional, and a resume can leave a stretch of steps twice (the abandoned timeline after the
checkpoint, then the new one). Plots and summaries want one sorted, duplicate-free curve per metric
and the events on their own.

Rule for repeats: a resume event at step S abandons everything logged after S before it; entries
of the same kind at the same step are merged, later values winning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_TRAIN_HINTS = ("loss", "lm_loss", "balance_loss", "learning_rate", "grad_norm", "routing_entropy")
_SUMMARY_KEYS = ("train_runtime", "train_loss", "train_samples_per_second", "train_steps_per_second")
_NOT_METRICS = {"step", "epoch", "total_flos"}
USAGE_PREFIX = "expert_usage_"


@dataclass(frozen=True)
class Series:
    """One metric over optimizer steps, sorted by step, one value per step."""

    steps: tuple[int, ...]
    values: tuple[float, ...]

    def last(self) -> tuple[int, float]:
        return self.steps[-1], self.values[-1]


@dataclass(frozen=True)
class ResumeEvent:
    step: int
    resumed_from: str
    exact: bool | None
    probe_loss_saved: float | None = None  # the continuity probe's loss at save, and here (None: not checked)
    probe_loss_here: float | None = None


@dataclass(frozen=True)
class MaturityChange:
    """A maturity vector that differs from the one before it (initially all experts immature)."""

    step: int
    maturity: tuple[bool, ...]
    newly_mature: tuple[int, ...]


@dataclass(frozen=True)
class SkillEvent:
    step: int
    skill: str
    expert: int | None
    novel: bool | None


@dataclass
class RunHistory:
    """Everything the figures and the summary need, already deduplicated and sorted."""

    train: dict[str, Series] = field(default_factory=dict)
    eval: dict[str, Series] = field(default_factory=dict)
    resumes: list[ResumeEvent] = field(default_factory=list)
    maturity_changes: list[MaturityChange] = field(default_factory=list)
    skills: list[SkillEvent] = field(default_factory=list)
    dataset_changes: list[int] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    global_step: int | None = None
    epoch: float | None = None
    best_metric: float | None = None
    dropped_nonfinite: dict[str, int] = field(default_factory=dict)

    @property
    def num_experts(self) -> int:
        """Experts seen in usage logs or maturity vectors (0 when neither was logged)."""
        usage = [int(k[len(USAGE_PREFIX):]) for k in self.train if k[len(USAGE_PREFIX):].isdigit()]
        widths = [len(c.maturity) for c in self.maturity_changes]
        return max([i + 1 for i in usage] + widths + [0])

    @property
    def resume_steps(self) -> list[int]:
        return [r.step for r in self.resumes]


def classify(entry: dict) -> str:
    """'event', 'summary', 'eval', 'train' or 'other' for one log_history entry."""
    if "event" in entry:
        return "event"
    if any(k in entry for k in _SUMMARY_KEYS) and "loss" not in entry:
        return "summary"
    if any(k.startswith("eval_") for k in entry):
        return "eval"
    if any(k in entry for k in _TRAIN_HINTS) or any(k.startswith(USAGE_PREFIX) for k in entry):
        return "train"
    return "other"


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _drop_abandoned(kept: list[tuple[str, int | None, dict]], resume_step: int) -> list:
    """Entries logged after the resumed checkpoint belong to a timeline the resume replaced."""
    return [item for item in kept if item[1] is None or item[1] <= resume_step]


def _merge_by_step(kept: list, kind: str) -> dict[int, dict]:
    merged: dict[int, dict] = {}
    for item_kind, step, entry in kept:
        if item_kind == kind and step is not None:
            merged.setdefault(step, {}).update(entry)
    return merged


def _series(rows: dict[int, dict], keep: Callable[[str], bool], dropped: dict[str, int]) -> dict[str, Series]:
    """Per-metric series from step -> merged entry; non-finite values are left out and counted."""
    points: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(rows):
        for key, raw in rows[step].items():
            value = _as_number(raw)
            if key in _NOT_METRICS or not keep(key) or value is None:
                continue
            if not math.isfinite(value):
                dropped[key] = dropped.get(key, 0) + 1
                continue
            points.setdefault(key, []).append((step, value))
    return {k: Series(tuple(s for s, _ in p), tuple(v for _, v in p)) for k, p in sorted(points.items())}


def _unique_events(kept: list) -> list[dict]:
    """Events in order, exact repeats (same JSON) removed."""
    seen: set[str] = set()
    events = []
    for kind, _step, entry in kept:
        if kind != "event":
            continue
        key = json.dumps(entry, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            events.append(entry)
    return sorted(events, key=lambda e: (_as_int(e.get("step")) is None, _as_int(e.get("step")) or 0))


def _maturity_changes(events: list[dict]) -> list[MaturityChange]:
    changes: list[MaturityChange] = []
    previous: tuple[bool, ...] | None = None
    for entry in events:
        step, raw = _as_int(entry.get("step")), entry.get("maturity")
        if entry.get("event") != "maturity" or step is None or not isinstance(raw, list):
            continue
        current = tuple(bool(x) for x in raw)
        before = previous if previous is not None and len(previous) == len(current) else (False,) * len(current)
        if current != before:
            newly = tuple(i for i, (a, b) in enumerate(zip(before, current)) if b and not a)
            changes.append(MaturityChange(step, current, newly))
        previous = current
    return changes


def _events(history: RunHistory, events: list[dict]) -> None:
    for entry in events:
        step, name = _as_int(entry.get("step")), entry.get("event")
        if step is None:
            continue
        if name == "resume":
            exact = entry.get("exact")
            history.resumes.append(ResumeEvent(
                step, str(entry.get("resumed_from", "?")), exact if isinstance(exact, bool) else None,
                _as_number(entry.get("probe_loss_saved")), _as_number(entry.get("probe_loss_here")),
            ))
        elif name == "skill":
            novel = entry.get("novel")
            history.skills.append(
                SkillEvent(step, str(entry.get("skill", "?")), _as_int(entry.get("expert")),
                           novel if isinstance(novel, bool) else None)
            )
        elif name == "dataset_changed":
            history.dataset_changes.append(step)
    history.maturity_changes = _maturity_changes(events)


def normalise(log_history: list, state: dict | None = None) -> RunHistory:
    """Tidy series and events from a raw log_history (and the state's global_step/epoch/best_metric)."""
    kept: list[tuple[str, int | None, dict]] = []
    for entry in log_history:
        if not isinstance(entry, dict):
            continue
        kind, step = classify(entry), _as_int(entry.get("step"))
        if kind == "event" and entry.get("event") == "resume" and step is not None:
            kept = _drop_abandoned(kept, step)
        kept.append((kind, step, entry))

    history = RunHistory()
    history.train = _series(_merge_by_step(kept, "train"), lambda k: not k.startswith("eval_"),
                            history.dropped_nonfinite)
    history.eval = _series(_merge_by_step(kept, "eval"), lambda k: k.startswith("eval_"), history.dropped_nonfinite)
    _events(history, _unique_events(kept))
    for kind, _step, entry in kept:
        if kind == "summary":
            history.summary = {k: float(v) for k, v in entry.items() if _as_number(v) is not None}
    state = state or {}
    history.global_step = _as_int(state.get("global_step"))
    history.epoch = _as_number(state.get("epoch"))
    history.best_metric = _as_number(state.get("best_metric"))
    return history


def load_history(state_file: str | Path) -> RunHistory:
    """Read a trainer_state.json and normalise its log_history."""
    from dylora_moe.report.source import read_state

    state = read_state(Path(state_file))
    return normalise(state.get("log_history", []), state)
