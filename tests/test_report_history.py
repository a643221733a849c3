"""The log_history normaliser: one duplicate-free curve per metric, events on their own."""

from __future__ import annotations

import math

import report_synthetic as syn

from dylora_moe.report.history import MaturityChange, ResumeEvent, SkillEvent, classify, normalise


def test_classify_each_kind_of_entry():
    assert classify({"step": 5, "loss": 1.0}) == "train"
    assert classify({"step": 5, "expert_usage_0": 0.5}) == "train"
    assert classify({"step": 5, "eval_loss": 1.0, "epoch": 1.0}) == "eval"
    assert classify({"step": 5, "event": "resume"}) == "event"
    assert classify({"step": 5, "train_runtime": 3.0, "train_loss": 1.0}) == "summary"
    assert classify({"step": 5, "epoch": 1.0}) == "other"


def test_loss_is_one_continuous_curve_across_the_resume():
    history = normalise(syn.log_history())
    loss = history.train["loss"]
    assert list(loss.steps) == syn.LOG_STEPS  # 5..120, each once, sorted
    # the re-run stretch 65-80 keeps the resumed timeline's values, not the abandoned ones (+1.0)
    assert list(loss.values) == [syn.train_loss(s) for s in syn.LOG_STEPS]
    assert list(history.eval["eval_loss"].steps) == [20, 40, 60, 80, 100, 120]
    assert history.eval["eval_loss"].values[3] == syn.train_loss(80) + 0.2


def test_events_resume_maturity_skills_dataset():
    history = normalise(syn.log_history())
    assert history.resumes == [ResumeEvent(60, "wandb://team/proj/run-ckpt:v3", True)]
    assert [c.step for c in history.maturity_changes] == syn.MATURITY_STEPS  # abandoned change at 75 dropped
    assert history.maturity_changes[1] == MaturityChange(55, (True, True, False, False), (1,))
    assert history.skills == [
        SkillEvent(0, "stdlib:text", 0, True),
        SkillEvent(60, "mbpp", 1, True),
        SkillEvent(90, "code_alpaca", 1, False),
    ]
    assert history.dataset_changes == [62]
    assert history.num_experts == 4
    assert history.summary == {"step": 120.0, "epoch": 3.0, "train_runtime": 42.0, "train_loss": 1.1,
                               "total_flos": 1.0}


def test_entries_at_one_step_merge_later_values_winning():
    history = normalise([
        {"step": 10, "loss": 2.0, "learning_rate": 1e-4},
        {"step": 10, "routing_entropy": 1.1},
        {"step": 10, "loss": 1.5},
    ])
    assert history.train["loss"].values == (1.5,)
    assert history.train["learning_rate"].values == (1e-4,)
    assert history.train["routing_entropy"].steps == (10,)


def test_nonfinite_values_are_dropped_and_counted():
    history = normalise([
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": math.nan},
        {"step": 3, "loss": math.inf, "grad_norm": 3.0},
        {"step": 4, "loss": 1.0, "note": "text", "flag": True},
    ])
    assert history.train["loss"].steps == (1, 4)
    assert history.dropped_nonfinite == {"loss": 2}
    assert set(history.train) == {"loss", "grad_norm"}


def test_unchanged_maturity_vector_is_not_a_change_and_missing_keys_are_tolerated():
    history = normalise([
        {"step": 5, "event": "maturity", "maturity": [False, False]},
        {"step": 8, "event": "maturity", "maturity": [True, False]},
        {"step": 9, "event": "maturity", "maturity": [True, False]},
        {"event": "resume"},
        {"step": 12, "event": "resume"},
        "not a dict",
    ])
    assert [c.step for c in history.maturity_changes] == [8]
    assert history.resumes == [ResumeEvent(12, "?", None)]
    assert history.train == {} and history.eval == {}
