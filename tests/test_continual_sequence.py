"""Continual sequences on a micro base: phases at their real learning rates, growth, freezing, maturity,
skill events, the library in checkpoints, and resumption in the middle of a sequence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from train_helpers import adapter_weights, max_weight_diff, micro_config
from transformers import TrainerCallback

from dylora_moe.continual.config import ContinualConfig
from dylora_moe.continual.library import SkillLibrary
from dylora_moe.continual.orchestrator import train_continual
from dylora_moe.continual.state import ContinualState
from dylora_moe.errors import UserError

SKILLS = "stdlib:text,stdlib:math"


def _cfg(base, out, **overrides):
    values = dict(datasets="stdlib", max_examples=40, max_steps=4, save_steps=2, eval_steps=2, learning_rate=2e-3,
                  lr_scheduler_type="constant", warmup_ratio=0.0, num_experts=1, lora_dropout=0.0)
    values.update(overrides)
    cfg = micro_config(base, out, **values)
    cfg.data = dataclasses.replace(cfg.data, max_seq_length=128, eval_fraction=0.2)
    return cfg


def _ccfg(**overrides):
    values = dict(skills=SKILLS, novelty_threshold=1.0, seed_steps=2, seed_learning_rate=2e-2, embedding_samples=8)
    values.update(overrides)
    return ContinualConfig(**values)


def _expert_keys(weights: dict, expert: int) -> list[str]:
    return [k for k in weights if k.endswith(f".lora_A.{expert}") or k.endswith(f".lora_B.{expert}")]


@pytest.fixture(scope="module")
def novel_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("novel")
    return out, train_continual(_cfg(base, out), _ccfg(), log=lambda m: None)


def test_each_phase_runs_at_its_own_learning_rate(novel_run):
    _, result = novel_run
    phases = [(c.skill, c.phase, c.lrs) for c in result.phase_callbacks]
    assert [(s, p) for s, p, _ in phases] == [("stdlib:text", "seed"), ("stdlib:text", "consolidate"),
                                               ("stdlib:math", "seed"), ("stdlib:math", "consolidate")]
    for _, phase, lrs in phases:
        assert lrs == [2e-2] * 2 if phase == "seed" else lrs == [2e-3] * 4


def test_novel_skill_grows_the_pool_and_earlier_experts_stay_frozen(novel_run):
    out, result = novel_run
    assert [(r.name, r.expert, r.novel) for r in result.state.records] == [
        ("stdlib:text", 0, True), ("stdlib:math", 1, True)]
    after_a = adapter_weights(result.state.records[0].checkpoint)
    after_b = adapter_weights(result.state.records[1].checkpoint)
    assert after_b["maturity"].tolist() == [1, 1]
    keys0 = _expert_keys(after_a, 0)
    assert keys0 and max_weight_diff({k: after_a[k] for k in keys0}, {k: after_b[k] for k in keys0}) == 0.0
    keys1 = _expert_keys(after_b, 1)
    start_b = adapter_weights(sorted((out / "skill-1-stdlib_math" / "seed").glob("checkpoint-*"))[0])
    assert max_weight_diff({k: start_b[k] for k in keys1}, {k: after_b[k] for k in keys1}) > 0.0


def test_dense_while_the_new_expert_is_immature_sparse_after(novel_run):
    _, result = novel_run
    b_seed, b_cons = result.phase_callbacks[2], result.phase_callbacks[3]
    assert set(b_seed.sparse_at_step.values()) == {False}
    assert [b_cons.sparse_at_step[s] for s in (1, 2, 3, 4)] == [False, False, False, True]
    maturity = [e for e in result.log_history if e.get("event") == "maturity"]
    assert [(e["step"], e["expert"], e["maturity"]) for e in maturity] == [(6, 0, [True]), (12, 1, [True, True])]


def test_skill_events_and_library_in_checkpoints(novel_run):
    out, result = novel_run
    events = [(e["step"], e["skill"], e["expert"], e["novel"], e["phase"])
              for e in result.log_history if e.get("event") == "skill"]
    assert events == [(0, "stdlib:text", 0, True, "seed"), (2, "stdlib:text", 0, True, "consolidate"),
                      (6, "stdlib:math", 1, True, "seed"), (8, "stdlib:math", 1, True, "consolidate")]
    library = SkillLibrary.load(result.state.last_checkpoint)
    assert library.names == ["stdlib:text", "stdlib:math"] and library.experts == [0, 1]
    assert library.reference is not None and library.embeddings[0].shape == library.reference.shape
    assert json.loads((Path(result.state.last_checkpoint) / "dylora_config.json").read_text())["router_input"] == "sequence"
    # the first skill's routing prototypes (recorded when it finished) travel with the second skill's checkpoints
    assert list(library.prototypes) == ["stdlib:text"]
    gates = adapter_weights(result.state.last_checkpoint)
    # sequence routing: every gate reads the same input, so the library keeps one copy for all routers
    assert list(library.prototypes["stdlib:text"]) == ["all"]
    inputs = library.prototypes["stdlib:text"]["all"]
    assert inputs.shape[0] >= 8 and all(inputs.shape[1] == w.shape[1] for k, w in gates.items() if k.startswith("routers."))
    manifest = (Path(result.state.last_checkpoint) / "manifest.json").read_text()
    assert "skill_library.safetensors" in manifest and "optimizer_params.json" in manifest


def test_known_skill_is_trained_into_its_expert(base, tmp_path):
    result = train_continual(_cfg(base, tmp_path, max_steps=2), _ccfg(novelty_threshold=-1.0, seed_steps=0),
                             log=lambda m: None)
    assert [(r.expert, r.novel) for r in result.state.records] == [(0, True), (0, False)]
    assert result.state.num_experts == 1
    assert adapter_weights(result.state.last_checkpoint)["maturity"].tolist() == [1]


class CrashAfterSave(TrainerCallback):
    """Simulates a crash right after a checkpoint of one phase is written."""

    def __init__(self, phase_dir_part: str, step: int):
        self.part, self.step, self.fired = phase_dir_part, step, False

    def on_save(self, args, state, control, **kwargs):
        if not self.fired and self.part in args.output_dir and state.global_step == self.step:
            self.fired = True
            raise RuntimeError("simulated crash")


def test_resume_in_the_middle_of_a_sequence_matches_an_uninterrupted_run(base, novel_run, tmp_path):
    _, reference = novel_run
    crash = CrashAfterSave("skill-1-stdlib_math/consolidate", 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_continual(_cfg(base, tmp_path), _ccfg(), log=lambda m: None, extra_callbacks=[crash])
    state = ContinualState.load(tmp_path)
    assert (state.current, state.records[1].phases_done, state.num_experts) == (1, ["seed"], 2)
    with pytest.raises(UserError, match="already holds a continual run"):
        train_continual(_cfg(base, tmp_path), _ccfg(), log=lambda m: None)
    resumed = train_continual(_cfg(base, tmp_path, resume_from_checkpoint="auto"), _ccfg(), log=lambda m: None)
    assert [c.phase for c in resumed.phase_callbacks] == ["consolidate"]
    assert resumed.phase_callbacks[0].lrs == [2e-3] * 2
    diff = max_weight_diff(adapter_weights(reference.state.last_checkpoint),
                           adapter_weights(resumed.state.last_checkpoint))
    assert diff < 1e-6
    events = [e["skill"] for e in resumed.log_history if e.get("event") == "skill"]
    assert events == ["stdlib:text", "stdlib:text", "stdlib:math", "stdlib:math"]
