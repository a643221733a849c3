"""Resume semantics: patience and counters carry over, mismatches fail early, checkpoints stay small."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from dylora_moe.checkpoint.manifest import write_manifest
from dylora_moe.errors import UserError
from micro import save_micro_base
from train_helpers import adapter_weights, max_weight_diff, micro_config, run, step_losses

LOG_KEYS = {"loss", "lm_loss", "balance_loss", "learning_rate", "routing_entropy",
            "expert_usage_0", "expert_usage_1", "expert_usage_2", "expert_usage_3"}


@pytest.fixture(scope="module")
def early_stopped(base, tmp_path_factory):
    """learning_rate 0: eval loss never improves, so patience 2 stops at the third evaluation (step 9)."""
    out = tmp_path_factory.mktemp("early")
    result = run(micro_config(base, out, learning_rate=0.0, early_stopping_patience=2, num_epochs=3))
    return out, result


def _state(checkpoint) -> dict:
    return json.loads((Path(checkpoint) / "dylora_state.json").read_text())


def test_early_stop_then_resume_with_more_patience(base, early_stopped, tmp_path):
    out, first = early_stopped
    assert first.global_step == 9
    saved = _state(out / "checkpoint-9")["early_stopping"]
    assert saved["counter"] == 2 and saved["stopped"] is True
    resumed = run(micro_config(base, tmp_path, learning_rate=0.0, early_stopping_patience=4, num_epochs=6,
                               resume_from_checkpoint=str(out / "checkpoint-9")))
    # training continues: counter 2 carries over, patience 4 stops it two evaluations later
    assert resumed.global_step == 15
    final = _state(Path(tmp_path) / "checkpoint-15")["early_stopping"]
    assert final["counter"] == 4 and final["best_metric"] == pytest.approx(saved["best_metric"], abs=0)
    assert resumed.best_metric == pytest.approx(first.best_metric, abs=0)
    # the resumed run writes to its own output dir and continues the step numbering
    assert sorted(p.name for p in Path(tmp_path).glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-15"]


def test_every_log_line_carries_the_moe_metrics(early_stopped):
    _, result = early_stopped
    train_logs = [e for e in result.log_history if "loss" in e and "train_runtime" not in e]
    assert len(train_logs) == 9
    for entry in train_logs:
        assert LOG_KEYS <= entry.keys(), LOG_KEYS - entry.keys()
        assert sum(entry[f"expert_usage_{i}"] for i in range(4)) == pytest.approx(1.0, abs=1e-3)
    evals = [e for e in result.log_history if "eval_loss" in e]
    assert evals and all({"eval_lm_loss", "eval_balance_loss"} <= e.keys() for e in evals)


def test_checkpoint_holds_only_trainable_state_and_is_small(early_stopped):
    out, _ = early_stopped
    ckpt = out / "checkpoint-9"
    tensors = load_file(str(ckpt / "adapter_model.safetensors"))
    assert all(".lora_A." in k or ".lora_B." in k or k.startswith("routers.") or k == "maturity" for k in tensors)
    trainable = sum(t.numel() for k, t in tensors.items() if k != "maturity")
    size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    limit = 1.05 * trainable * 12 + 2**20
    print(f"checkpoint {size} bytes for {trainable} trainable parameters; limit {limit:.0f}")
    assert size <= limit
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state_0.pth", "manifest.json", "COMPLETE"):
        assert (ckpt / name).is_file(), name
    position = _state(ckpt)["data_position"]
    assert position["global_step"] == 9 and position["dataset_fingerprint"]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"num_experts": 2}, "has num_experts=4 but the model has num_experts=2; pass --num_experts 4"),
        ({"lora_r": 8}, "has lora_r=16 but the model has lora_r=8; pass --lora_r 16"),
        ({"target_modules": "q_proj,k_proj"}, "has target_modules=['q_proj', 'v_proj'] but the model has "
         "target_modules=['k_proj', 'q_proj']; pass --target_modules q_proj,v_proj"),
    ],
)
def test_model_mismatch_is_one_clear_error_before_training(base, early_stopped, tmp_path, override, message):
    out, _ = early_stopped
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(micro_config(base, tmp_path, resume_from_checkpoint=str(out / "checkpoint-9"), **override))
    assert not list(Path(tmp_path).iterdir())  # nothing was trained or written


def test_other_base_model_is_refused(early_stopped, tmp_path):
    out, _ = early_stopped
    other = save_micro_base(tmp_path / "other-base", seed=1)
    with pytest.raises(UserError, match=r"has base_model=.*micro but the model has base_model=.*other-base; pass --model_name"):
        run(micro_config(other, tmp_path / "out", resume_from_checkpoint=str(out / "checkpoint-9")))


def _weights_only_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for name in ("optimizer.pt", "scheduler.pt", "COMPLETE"):
        (dest / name).unlink()
    write_manifest(dest, {})
    (dest / "COMPLETE").write_text("")
    return dest


def test_missing_optimizer_is_an_error_unless_weights_only(base, early_stopped, tmp_path):
    out, _ = early_stopped
    ckpt = _weights_only_copy(out / "checkpoint-9", tmp_path / "weights-only")
    with pytest.raises(UserError, match=r"has no optimizer.pt, scheduler.pt: it cannot continue the run exactly; "
                                        r"pass --weights_only_resume"):
        run(micro_config(base, tmp_path / "a", resume_from_checkpoint=str(ckpt)))
    result = run(micro_config(base, tmp_path / "b", resume_from_checkpoint=str(ckpt), weights_only_resume=True,
                              max_steps=2))
    assert result.global_step == 2  # a fresh schedule from step 0, starting from the saved experts


def test_checkpoint_saved_under_bf16_resumes_in_fp32(base, tmp_path):
    first = run(micro_config(base, tmp_path, bf16=True, max_steps=4), stop_at=3)
    assert first.global_step == 3
    resumed = run(micro_config(base, tmp_path, max_steps=4, resume_from_checkpoint="latest"))
    assert resumed.global_step == 4
    weights = adapter_weights(resumed.last_checkpoint)
    assert {t.dtype for k, t in weights.items() if k != "maturity"} == {torch.float32}


def _logged_run(cfg, stop_at=None):
    from dylora_moe.training.run import train
    from train_helpers import StopAt

    lines: list[str] = []
    result = train(cfg, log=lines.append, extra_callbacks=[StopAt(stop_at)] if stop_at else None)
    return result, lines


def test_more_epochs_extend_the_run_and_replan_the_schedule(base, tmp_path):
    first, _ = _logged_run(micro_config(base, tmp_path, num_epochs=1, early_stopping_patience=10))
    assert first.global_step == 6
    resumed, lines = _logged_run(micro_config(base, tmp_path, num_epochs=2, early_stopping_patience=10,
                                              resume_from_checkpoint="latest"))
    assert resumed.global_step == 12
    replanned = [line for line in lines if "LR schedule re-planned for 12 steps" in line]
    assert len(replanned) == 1, lines
    before, after = (float(x) for x in replanned[0].split(" was ")[1].split(", continues at "))
    assert before < 1e-4 < after  # the old cosine had ended; the new plan continues from its middle


def test_changed_dataset_restarts_epochs_without_skipping(base, tmp_path):
    _logged_run(micro_config(base, tmp_path, early_stopping_patience=10), stop_at=4)
    resumed, lines = _logged_run(micro_config(base, tmp_path, max_examples=80, num_epochs=1,
                                              early_stopping_patience=10, resume_from_checkpoint="latest"))
    assert any("training data changed" in line and "epochs restart on the new data from step 4" in line
               for line in lines), lines
    per_epoch = int(next(line for line in lines if "steps planned" in line).split("(")[1].split(" per epoch")[0])
    assert resumed.global_step == 4 + per_epoch
    assert any(e.get("event") == "dataset_changed" for e in resumed.log_history)


def test_save_total_limit_keeps_the_best_and_best_is_loaded_at_end(base, tmp_path):
    # learning rate 0: every evaluation ties, so the first one (step 3) stays the best
    result, lines = _logged_run(micro_config(base, tmp_path, learning_rate=0.0, disable_early_stopping=True,
                                             save_total_limit=1, load_best_model_at_end=True))
    assert result.global_step == 12
    assert sorted(p.name for p in Path(tmp_path).glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-3"]
    assert result.best_checkpoint.endswith("checkpoint-3")
    assert any("loading the best checkpoint" in line and "checkpoint-3" in line for line in lines)


def test_no_eval_set_trains_without_evaluation(base, tmp_path):
    cfg = micro_config(base, tmp_path, max_steps=3)
    cfg.data.eval_fraction = 0.0
    result = run(cfg)
    assert result.global_step == 3 and result.best_metric is None
    assert not [e for e in result.log_history if "eval_loss" in e]


def test_gradient_checkpointing_gives_the_same_steps(base, tmp_path):

    plain = run(micro_config(base, tmp_path / "plain", max_steps=3))
    checkpointed = run(micro_config(base, tmp_path / "ckpt", max_steps=3, gradient_checkpointing=True))
    a, b = step_losses(plain), step_losses(checkpointed)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a)


class FirstStepLR(TrainerCallback):
    """The optimizer's learning rate at the first step this run takes, and the schedule's multiplier there."""

    def __init__(self):
        self.lr = self.multiplier = None

    def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if self.lr is None:
            self.lr = optimizer.param_groups[0]["lr"]
            self.multiplier = lr_scheduler.lr_lambdas[0](state.global_step)


def test_new_learning_rate_on_resume_applies_from_the_resume_step(base, tmp_path):
    from dylora_moe.training.run import train

    first = tmp_path / "first"
    run(micro_config(base, first), stop_at=3)
    probes, logs = {}, {}
    for lr in (5e-3, 1e-4):  # the checkpoint's own, a new one
        probes[lr], logs[lr] = FirstStepLR(), []
        train(micro_config(base, tmp_path / str(lr), max_steps=4, learning_rate=lr,
                           resume_from_checkpoint=str(first / "checkpoint-3")),
              log=logs[lr].append, extra_callbacks=[probes[lr]])
    new = probes[1e-4]
    assert new.lr == pytest.approx(new.multiplier * 1e-4, rel=1e-9) and 0 < new.multiplier < 1
    assert [line for line in logs[1e-4] if line.startswith("[train] learning rate")] == [
        f"[train] learning rate 1.0e-04 from the command (checkpoint trained with 5.0e-03): continues at "
        f"{new.lr:.1e} at step 3"]
    assert not [line for line in logs[5e-3] if line.startswith("[train] learning rate")]
    assert max_weight_diff(adapter_weights(tmp_path / "0.0001" / "checkpoint-4"),
                           adapter_weights(tmp_path / "0.005" / "checkpoint-4")) > 1e-6


def test_divergence_advice_to_resume_with_a_lower_learning_rate_works(base, tmp_path):
    from dylora_moe.training.divergence import TrainingDiverged

    run(micro_config(base, tmp_path), stop_at=3)
    with pytest.raises(TrainingDiverged, match=r"last checkpoint .*checkpoint-3 is intact; resume from it with a "
                                               r"lower --learning_rate \(now 1e\+30\)"):
        run(micro_config(base, tmp_path, max_steps=6, learning_rate=1e30, resume_from_checkpoint="latest"))
    resumed = run(micro_config(base, tmp_path, max_steps=6, learning_rate=1e-4, resume_from_checkpoint="latest"))
    assert resumed.global_step == 6
    assert all(math.isfinite(v) for v in step_losses(resumed).values())


class FinalWeights(TrainerCallback):
    """Saves the model's adapters as they are when training ends (after --load_best_model_at_end loaded any)."""

    def __init__(self, directory: Path):
        self.directory = directory

    def on_train_end(self, args, state, control, model=None, **kwargs):
        from dylora_moe.model.adapter_io import save_adapter

        save_adapter(model, self.directory)


@pytest.mark.parametrize("with_store", [True, False], ids=["store", "no-store"])
def test_best_model_at_end_when_resumed_elsewhere(base, tmp_path, monkeypatch, with_store):
    """The best (step 3) was evaluated on another machine, whose step 4 (learning rate 1e3) made the model worse; the
    run resumes from its checkpoint-4 elsewhere and ends at step 5 without improving (learning rate 0): the store's
    `best` is the final model, else the last weights, said so."""
    from dylora_moe.training.run import train

    monkeypatch.setenv("DYLORA_MOE_CACHE_DIR", str(tmp_path / "cache"))  # store downloads land here
    store = str(tmp_path / "store") if with_store else None
    first = tmp_path / "first"
    run(micro_config(base, first, checkpoint_store=store), stop_at=3)
    run(micro_config(base, first, checkpoint_store=store, learning_rate=1e3, resume_from_checkpoint="latest"),
        stop_at=4)
    best_weights = adapter_weights(first / "checkpoint-3")
    moved = Path(shutil.copytree(first / "checkpoint-4", tmp_path / "moved" / "checkpoint-4"))
    shutil.rmtree(first)  # the other machine's output dir is gone
    lines: list[str] = []
    result = train(micro_config(base, tmp_path / "second", max_steps=5, load_best_model_at_end=True, learning_rate=0.0,
                                checkpoint_store=store, resume_from_checkpoint=str(moved)),
                   log=lines.append, extra_callbacks=[FinalWeights(tmp_path / "final")])
    assert result.global_step == 5
    final = adapter_weights(tmp_path / "final")
    assert not [line for line in lines if "at None" in line], lines
    if with_store:
        assert max_weight_diff(final, best_weights) == 0
        assert any(f"is not here; fetched {store}:best for --load_best_model_at_end" in line for line in lines), lines
    else:
        assert max_weight_diff(final, adapter_weights(tmp_path / "second" / "checkpoint-5")) == 0
        assert max_weight_diff(final, best_weights) > 0
        said = [line for line in lines if "not available here" in line]
        assert said[0].startswith("[train] the best checkpoint (step 3, eval_loss ") and said[0].endswith(
            "is not available here (no --checkpoint_store to fetch it from): unless a later evaluation beats it, "
            "--load_best_model_at_end ends with the last weights")
        assert said[1] == ("[train] --load_best_model_at_end: the best checkpoint (step 3) is not available here; "
                           "the final weights are the last ones")
        assert said[2].startswith("[train] done: 5 steps") and " at step 3 (checkpoint not available here);" in said[2]
