"""Exact resumption: an interrupted and resumed run equals an uninterrupted one, step for step."""

from __future__ import annotations

import pytest
from transformers import TrainerCallback

from dylora_moe.training.run import train
from train_helpers import StopAt, adapter_weights, max_weight_diff, micro_config, run, step_losses


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


class ConsumedRows(TrainerCallback):
    """The training rows (token ids) in the order the collator batches them."""

    def __init__(self):
        self.rows: list[tuple[int, ...]] = []

    def wrap_collator(self, collate):
        def collate_and_record(features):
            self.rows.extend(tuple(f["input_ids"]) for f in features)
            return collate(features)
        return collate_and_record


def _consumed(cfg, stop_at: int | None = None) -> tuple[list, list[str]]:
    rows, lines = ConsumedRows(), []
    train(cfg, log=lines.append, extra_callbacks=[rows] + ([StopAt(stop_at)] if stop_at else []))
    return rows.rows, lines


def test_resume_with_another_batch_split_continues_the_epoch_in_the_same_order(base, tmp_path):
    """4x1 for 5 steps, resumed as 2x2 (the same global batch): the grouped epoch neither revisits nor skips a
    row, and the resume line says the data order holds but the micro-batches differ."""
    def config(out, **options):
        cfg = micro_config(base, out, group_by_length=True, num_epochs=1, max_examples=70, **options)
        cfg.data.eval_fraction = 0.0  # no evaluation: the collator sees training rows only
        return cfg

    full, _ = _consumed(config(tmp_path / "full", gradient_accumulation_steps=1))
    first, _ = _consumed(config(tmp_path / "cut", gradient_accumulation_steps=1), stop_at=5)
    resumed, lines = _consumed(config(tmp_path / "cut", train_batch_size=2, gradient_accumulation_steps=2,
                                      resume_from_checkpoint="latest"))
    assert len(full) % 16 >= 8  # a size where per-device grouping orders 4x1 and 2x2 differently
    assert first[:5 * 4] + resumed == full
    assert any(line.endswith("per-device batch x accumulation 4x1->2x2 with the same global batch: the same "
                             "samples in the same steps, but other micro-batches, so the continuation is not "
                             "bitwise exact") for line in lines), lines


def test_a_checkpoint_without_its_accumulation_grouped_per_device_says_its_epoch_is_not_exact(base, tmp_path):
    """A checkpoint written before length groups followed the global batch records no accumulation; resumed
    mid-epoch at 2x2, the rest of its epoch is grouped otherwise than it was trained: one line says so."""
    import json

    import shutil

    from dylora_moe.checkpoint.manifest import publish_atomically, read_manifest, write_manifest
    from dylora_moe.training.state import DYLORA_STATE_NAME

    def config(**options):
        cfg = micro_config(base, tmp_path / "run", group_by_length=True, num_epochs=1, max_examples=70,
                           train_batch_size=2, gradient_accumulation_steps=2, **options)
        cfg.data.eval_fraction = 0.0
        return cfg

    _consumed(config(save_steps=3), stop_at=3)
    checkpoint, edited = tmp_path / "run" / "checkpoint-3", tmp_path / "edited"
    shutil.copytree(checkpoint, edited)
    state = json.loads((edited / DYLORA_STATE_NAME).read_text())
    del state["data_position"]["grad_accum"]  # as an earlier version wrote it
    (edited / DYLORA_STATE_NAME).write_text(json.dumps(state))
    write_manifest(edited, read_manifest(edited)["metadata"])
    publish_atomically(edited, checkpoint)
    _, lines = _consumed(config(resume_from_checkpoint=str(checkpoint), max_steps=4))
    assert any(line.startswith("[data] checkpoint from an earlier version, whose length groups were cut to the "
                               "per-device batch (now the global batch, 4): the rest of epoch 0") for line in lines), lines
