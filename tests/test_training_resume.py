"""Exact resumption: an interrupted and resumed run equals an uninterrupted one, step for step."""

from __future__ import annotations

import pytest

from train_helpers import adapter_weights, max_weight_diff, micro_config, run, step_losses


@pytest.fixture(scope="module")
def uninterrupted(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return run(micro_config(base, out))


@pytest.mark.parametrize("stop_at", [5, 6], ids=["mid-epoch", "epoch-boundary"])
def test_resume_continues_bit_for_bit(base, uninterrupted, tmp_path, stop_at):
    first = run(micro_config(base, tmp_path), stop_at=stop_at)
    assert first.global_step == stop_at
    resumed = run(micro_config(base, tmp_path, resume_from_checkpoint="latest"))
    assert resumed.global_step == uninterrupted.global_step == 12
    expected, got = step_losses(uninterrupted), step_losses(resumed)
    assert sorted(got) == list(range(1, 13))
    for step in range(stop_at + 1, 13):
        assert abs(got[step] - expected[step]) <= 1e-6, (step, got[step], expected[step])
    assert max_weight_diff(adapter_weights(resumed.last_checkpoint), adapter_weights(uninterrupted.last_checkpoint)) <= 1e-6
    assert resumed.best_metric == pytest.approx(uninterrupted.best_metric, abs=1e-6)
    events = [e for e in resumed.log_history if e.get("event") == "resume"]
    assert len(events) == 1 and events[0]["step"] == stop_at and events[0]["exact"] is True


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["group_by_length", "packing"])
def test_resume_mid_epoch_is_exact_with_length_grouping_and_packing(base, tmp_path, mode):
    """Without dropout, so that a packed run can also be compared with the padded one (dropout masks have the
    batch's shape, so they differ between the two layouts)."""
    options = {mode: True, "lora_dropout": 0.0}
    full = run(micro_config(base, tmp_path / "full", **options))
    first = run(micro_config(base, tmp_path / "cut", **options), stop_at=5)
    assert first.global_step == 5
    resumed = run(micro_config(base, tmp_path / "cut", resume_from_checkpoint="latest", **options))
    expected, got = step_losses(full), step_losses(resumed)
    assert sorted(got) == sorted(expected) == list(range(1, 13))
    for step in range(6, 13):
        assert abs(got[step] - expected[step]) <= 1e-6, (step, got[step], expected[step])
    assert max_weight_diff(adapter_weights(resumed.last_checkpoint), adapter_weights(full.last_checkpoint)) <= 1e-6
    padded = step_losses(run(micro_config(base, tmp_path / "padded", lora_dropout=0.0, group_by_length=False)))
    if mode == "packing":  # the same batches without padding: the same training
        assert all(abs(padded[s] - expected[s]) <= 1e-4 for s in expected), (padded, expected)
    else:  # other batches
        assert any(abs(padded[s] - expected[s]) > 1e-4 for s in expected)
