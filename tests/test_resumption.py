"""`Resumption` on its own (no model, no training): the source it picks, the config it builds, what it loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dylora_moe.training.resume as resume
from dylora_moe.checkpoint.manifest import RUN_CONFIG_NAME, publish_atomically, write_manifest
from dylora_moe.errors import UserError
from dylora_moe.training.config import TrainConfig
from dylora_moe.training.progress import DataPositionTracker
from dylora_moe.training.resume import Resumption, command_model_config
from dylora_moe.training.resume_plan import DataLayout
from dylora_moe.training.state import DyLoRATrainingState
from dylora_moe.training.trainer import DyLoRATrainer

SAVED_TARGETS = ["q_proj", "v_proj"]


def _checkpoint(output_dir: Path, step: int, cfg: TrainConfig, *, full: bool = True, position: dict | None = None,
                run_config: dict | None = None):
    """A checkpoint with a 3-expert config on `SAVED_TARGETS` with context routing, and the full-resume files."""
    tmp = output_dir / f".tmp-checkpoint-{step}-0"
    tmp.mkdir(parents=True)
    saved = command_model_config(cfg)
    saved.num_experts, saved.target_modules, saved.router_input = 3, SAVED_TARGETS, "context"
    saved.save(tmp)
    if full:
        for name in ("optimizer.pt", "scheduler.pt"):
            torch.save({}, tmp / name)
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        state = DyLoRATrainingState(data_position=position or {})
        state.early_stopping.counter = 2
        state.save(tmp)
    if run_config is not None:
        (tmp / RUN_CONFIG_NAME).write_text(json.dumps(run_config))
    write_manifest(tmp, {"global_step": step})
    return publish_atomically(tmp, output_dir / f"checkpoint-{step}")


def _cfg(tmp_path: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{"output_dir": str(tmp_path / "out"), "num_experts": 3, **overrides})


def test_fresh_start_is_the_command_config_and_a_fresh_state(tmp_path):
    r = Resumption.prepare(_cfg(tmp_path, router_input=None), log=lambda m: None)
    assert (r.path, r.label, r.saved_config, r.checkpoint, r.full) == (None, None, None, None, False)
    assert r.model_config.router_input == "token" and r.model_config.num_experts == 3
    assert r.state == DyLoRATrainingState()


def test_merge_rules_apply_once_and_open_flags_come_from_the_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, num_experts=5, grow_experts=1, resume_from_checkpoint="latest")
    ckpt = _checkpoint(Path(cfg.output_dir), 4, cfg)
    calls = []
    real = resume.merge_model_config
    monkeypatch.setattr(resume, "merge_model_config", lambda *a: (calls.append(1), real(*a))[1])
    r = Resumption.prepare(cfg, log=lambda m: None)
    assert len(calls) == 1
    assert r.path == ckpt and r.checkpoint == str(ckpt) and r.full
    assert r.model_config.num_experts == 3  # --grow_experts keeps the saved pool; it grows after loading
    assert r.model_config.target_modules == SAVED_TARGETS
    assert r.model_config.router_input == "context"
    assert r.state.early_stopping.counter == 0  # a grown pool gets a fresh patience


def test_explicit_flags_win_and_a_mismatch_is_one_line(tmp_path):
    cfg = _cfg(tmp_path, resume_from_checkpoint="latest", router_input="token")
    _checkpoint(Path(cfg.output_dir), 4, cfg)
    with pytest.raises(UserError, match="has router_input=context but the model has router_input=token"):
        Resumption.prepare(cfg, log=lambda m: None)


def test_full_resume_needs_optimizer_and_state_files_weights_only_does_not(tmp_path):
    cfg = _cfg(tmp_path, resume_from_checkpoint="latest")
    _checkpoint(Path(cfg.output_dir), 4, cfg, full=False)
    with pytest.raises(UserError, match="has no optimizer.pt, scheduler.pt, trainer_state.json, dylora_state.json: it cannot continue"):
        Resumption.prepare(cfg, log=lambda m: None)
    cfg.weights_only_resume = True
    r = Resumption.prepare(cfg, log=lambda m: None)
    assert not r.full and r.checkpoint is None and r.state == DyLoRATrainingState()


class _Pool:
    """Stands in for the model: counts what the resumption does to it."""

    def __init__(self, experts: int):
        self.num_experts, self.copies = experts, []
        self.base_model = torch.nn.Linear(2, 2)  # a full-precision base, as the checkpoint's (no quantization line)

    def add_experts(self, n: int) -> list[int]:
        self.num_experts += n
        return list(range(self.num_experts - n, self.num_experts))

    def copy_expert(self, source: int, target: int) -> None:
        self.copies.append((source, target))


def test_a_grown_pool_loads_the_adapters_once(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, grow_experts=2, grow_experts_from=1, resume_from_checkpoint="latest")
    ckpt = _checkpoint(Path(cfg.output_dir), 4, cfg)
    loads = []
    monkeypatch.setattr(resume, "load_adapter", lambda model, path: loads.append(path))
    r = Resumption.prepare(cfg, log=lambda m: None)
    pool, logs = _Pool(3), []
    r.load_adapters(pool, log=logs.append)
    assert loads == [ckpt] and pool.num_experts == 5 and pool.copies == [(1, 3), (1, 4)]
    assert logs[-1] == "[train] grew the expert pool by 2: new immature experts [3, 4]"
    # the trainer's checkpoint loading leaves the weights alone
    import dylora_moe.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "load_adapter", lambda *a: loads.append("trainer"))
    assert DyLoRATrainer._load_from_checkpoint(None, str(ckpt), pool) is None
    assert loads == [ckpt]


def test_grow_from_an_expert_that_does_not_exist_is_one_line(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, grow_experts=1, grow_experts_from=7, resume_from_checkpoint="latest")
    _checkpoint(Path(cfg.output_dir), 4, cfg)
    monkeypatch.setattr(resume, "load_adapter", lambda model, path: None)
    with pytest.raises(UserError, match=r"--grow_experts_from 7 is not an existing expert; .* experts 0\.\.2"):
        Resumption.prepare(cfg, log=lambda m: None).load_adapters(_Pool(3), log=lambda m: None)


@pytest.mark.parametrize("remote_step, picked", [(9, "store"), (4, "local"), (2, "local")])
def test_auto_picks_the_newest_of_local_and_store(tmp_path, monkeypatch, remote_step, picked):
    cfg = _cfg(tmp_path, resume_from_checkpoint="auto", checkpoint_store=str(tmp_path / "store"),
               weights_only_resume=True)
    local = _checkpoint(Path(cfg.output_dir), 4, cfg, full=False)
    remote = _checkpoint(tmp_path / "downloaded", remote_step, cfg, full=False)
    asked = []
    monkeypatch.setattr(resume, "newest_in_store",
                        lambda uri, run, log: (asked.append(uri), (remote_step, remote, f"{uri}:v1"))[1])
    r = Resumption.prepare(cfg, log=lambda m: None)
    assert asked == [cfg.checkpoint_store]
    assert (r.path, r.label) == ((remote, f"{cfg.checkpoint_store}:v1") if picked == "store" else (local, str(local)))


def test_auto_without_any_checkpoint_starts_fresh_and_says_so(tmp_path):
    logs = []
    r = Resumption.prepare(_cfg(tmp_path, resume_from_checkpoint="auto"), log=logs.append)
    assert r.path is None and logs[-1].endswith("; starting fresh")


def test_the_plan_hands_tracker_and_data_skip_the_same_position(tmp_path):
    """Saved mid-epoch after 5 steps of 8 samples: HF skips 10 micro-batches (accumulation 2), the tracker counts
    on from step 5 and its next save names the same sample."""
    layout = DataLayout.of(100, batch=4, grad_accum=2, world_size=1, fingerprint="fp")
    assert (layout.global_batch, layout.steps_per_epoch) == (8, 13)
    position = {"global_step": 18, "epoch": 1, "samples_in_epoch": 40, "global_batch": 8, "steps_per_epoch": 13,
                "num_examples": 100, "dataset_fingerprint": "fp", "world_size": 1, "grad_accum": 2}
    cfg = _cfg(tmp_path, resume_from_checkpoint="latest", num_epochs=2)
    _checkpoint(Path(cfg.output_dir), 18, cfg, position=position)
    r = Resumption.prepare(cfg, log=lambda m: None)
    logs = []
    total = r.plan_run(layout, log=logs.append)
    assert (r.plan.epochs_trained, r.plan.steps_in_epoch, r.plan.batches_to_skip) == (1, 5, 10)
    assert total == r.plan.max_steps == 18 + 13 - 5 and r.plan.exact
    assert logs == ["[train] resuming at step 18, epoch 1, batch 5/13 of the epoch"]
    tracker = DataPositionTracker(layout, r.plan)
    tracker.global_step = 18
    assert tracker.position() == position


@pytest.mark.parametrize("saved,flag,packing,expected", [
    (None, None, False, True),  # a new run groups by length: the fastest order here
    (None, None, True, False),  # ... unless packing already removes the padding
    (None, False, False, False),  # --no_group_by_length
    ({"group_by_length": False}, None, False, False),  # resumed: the order the checkpoint was trained in
    ({}, None, False, False),  # a checkpoint from before grouping existed was trained in random order
    ({"group_by_length": True}, None, False, True),
    ({"group_by_length": False}, True, False, True),  # an explicit flag wins (the log says: not exact)
])
def test_length_grouping_default_keeps_a_resume_exact(tmp_path, saved, flag, packing, expected):
    cfg = _cfg(tmp_path, group_by_length=flag, packing=packing,
               resume_from_checkpoint="latest" if saved is not None else None)
    if saved is not None:
        _checkpoint(Path(cfg.output_dir), 4, cfg, run_config=saved)
    lines = []
    assert Resumption.prepare(cfg, log=lambda m: None).groups_by_length(log=lines.append) is expected
    if flag is None and not packing:
        assert len(lines) == 1 and lines[0].startswith("[data] ")  # the decision is said once


def test_group_by_length_flags_are_true_false_and_unset():
    import argparse

    from dylora_moe.training.cli import add_train_flags, config_from_namespace

    parser = argparse.ArgumentParser()
    add_train_flags(parser)
    values = [config_from_namespace(parser.parse_args(argv)).group_by_length
              for argv in ([], ["--group_by_length"], ["--no_group_by_length"], ["--no-group-by-length"])]
    assert values == [None, True, False, False]


@pytest.mark.parametrize("value", ["None", "none", "NULL", "", "  None "])
def test_wandb_checkpoint_artifact_none_is_a_fresh_start(tmp_path, monkeypatch, value):
    """The seed's Vertex submission sets WANDB_CHECKPOINT_ARTIFACT=None to start fresh, not to fetch "None"."""
    from dylora_moe.training.tracking import check_resume_artifact

    monkeypatch.setenv("WANDB_CHECKPOINT_ARTIFACT", value)
    cfg = _cfg(tmp_path)
    assert cfg.resume_artifact() is None
    check_resume_artifact(cfg)  # no W&B path to check
    assert Resumption.prepare(cfg, log=lambda m: None).path is None


def test_wandb_checkpoint_artifact_flag_none_overrides_the_variable(tmp_path, monkeypatch):
    from dylora_moe.cli import build_parser
    from dylora_moe.training.cli import config_from_namespace

    monkeypatch.setenv("WANDB_CHECKPOINT_ARTIFACT", "ent/proj/best-dylora-model-full:latest")
    cfg = config_from_namespace(build_parser().parse_args(
        ["train", "--wandb_checkpoint_artifact", "None", "--output_dir", str(tmp_path / "out")]))
    assert cfg.resume_artifact() is None
    assert Resumption.prepare(cfg, log=lambda m: None).path is None
    assert _cfg(tmp_path, wandb_checkpoint_artifact="").resume_artifact() == "ent/proj/best-dylora-model-full:latest"
    assert _cfg(tmp_path, wandb_checkpoint_artifact="e/p/a:v1").resume_artifact() == "e/p/a:v1"
