"""DDP on CPU (gloo) through torchrun: 2 processes equal 1 process at the same global batch; resume 2->2, 2->1.

What is compared and why the tolerances are tight: 1 process with batch 4 x grad-accum 2 against 2 processes
with batch 4 x grad-accum 1. HF/accelerate shard the *same* seeded permutation batch-wise (process p gets
batches p, p+2, ...), so optimizer step k of both runs consumes the same 8 samples; the LM loss is normalised
by the token count of the whole global batch in both; dropout is 0 (each process has its own RNG stream, so
dropout masks could never match). The data sizes (64 train / 16 eval) leave no short or padded batch. What
remains is float summation order (gloo all-reduce vs in-process accumulation): measured 0.0 for the training
loss and the weights, 5e-6 for eval_loss.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from dist_helpers import cli_args, config_from_cli, dist_env, history, losses, torchrun
from train_helpers import adapter_weights, max_weight_diff

pytestmark = pytest.mark.slow

STEPS = 16  # 64 train examples / global batch 8 = 8 steps per epoch, 2 epochs
STOP = 5  # mid-epoch 0


def _ok(proc):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


@pytest.fixture(scope="module")
def two_procs(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "out"
    proc = _ok(torchrun(cli_args(base, out)))
    return out, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def one_proc(base, tmp_path_factory):
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("one") / "out"
    _ok(subprocess.run([sys.executable, "-m", "dylora_moe", *cli_args(base, out, grad_accum=2, eval_batch=8)],
                       env=dist_env(), capture_output=True, text=True, timeout=300))
    return out


@pytest.fixture(scope="module")
def stopped(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped") / "out"
    _ok(torchrun(cli_args(base, out), stop_at=STOP))
    return out / f"checkpoint-{STOP}"


def test_two_processes_match_one_process_at_the_same_global_batch(two_procs, one_proc):
    two, one = history(two_procs[0]), history(one_proc)
    assert sorted(losses(two)) == sorted(losses(one)) == list(range(1, STEPS + 1))
    for key, tolerance in (("loss", 1e-6), ("grad_norm", 1e-6), ("eval_loss", 1e-4)):
        a, b = losses(one, key), losses(two, key)
        assert a.keys() == b.keys() and a
        worst = max(abs(a[s] - b[s]) for s in a)
        print(f"{key}: max |1 proc - 2 procs| = {worst:.2e}")
        assert worst <= tolerance, (key, a, b)
    diff = max_weight_diff(adapter_weights(one_proc / f"checkpoint-{STEPS}"),
                           adapter_weights(two_procs[0] / f"checkpoint-{STEPS}"))
    assert diff <= 1e-6


def test_two_process_checkpoints_hold_every_rank_rng_and_only_trainable_state(two_procs, one_proc):
    out, log = two_procs
    for step in (3, 6, 9, 12, 15, STEPS):
        ckpt = out / f"checkpoint-{step}"
        assert (ckpt / "COMPLETE").is_file()
        assert sorted(p.name for p in ckpt.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
        assert json.loads((ckpt / "manifest.json").read_text())["metadata"]["world_size"] == 2
    assert not list(out.glob(".tmp-checkpoint-*"))
    # the same tensors as a 1-process checkpoint: experts, routers and maturity, no base weight
    keys = set(load_file(str(out / f"checkpoint-{STEPS}" / "adapter_model.safetensors")))
    assert keys == set(load_file(str(one_proc / f"checkpoint-{STEPS}" / "adapter_model.safetensors")))
    assert not [k for k in keys if "embed_tokens" in k or k.endswith("q_proj.weight") or "mlp" in k]
    # the two RNG files really are two processes' states (torch streams advance identically per rank here,
    # but the files must exist separately so a 2-process resume restores each rank its own)
    for rank in (0, 1):
        state = torch.load(out / f"checkpoint-{STEPS}" / f"rng_state_{rank}.pth", weights_only=True)
        assert set(state) >= {"python", "numpy", "cpu"}
    # only the main process logs our lines
    assert log.count("[train] done: 16 steps") == 1
    assert log.count("[data] train: 64 examples") == 1


def test_resume_two_to_two_continues_exactly(base, two_procs, stopped, tmp_path):
    out = tmp_path / "resumed"
    proc = _ok(torchrun(cli_args(base, out, "--resume_from_checkpoint", str(stopped))))
    log = proc.stdout + proc.stderr
    assert f"resuming at step {STOP}, epoch 0, batch {STOP}/8 of the epoch" in log
    assert "no longer bitwise exact" not in log
    full, resumed = losses(history(two_procs[0])), losses(history(out))
    for step in range(STOP + 1, STEPS + 1):
        assert abs(resumed[step] - full[step]) <= 1e-6, (step, resumed[step], full[step])
    diff = max_weight_diff(adapter_weights(out / f"checkpoint-{STEPS}"),
                           adapter_weights(two_procs[0] / f"checkpoint-{STEPS}"))
    assert diff <= 1e-6
    events = [e for e in history(out) if e.get("event") == "resume"]
    assert len(events) == 1 and events[0]["exact"] is True and events[0]["step"] == STOP


class _Probe:
    """Records what the trainer holds when training (re)starts: after weights, optimizer and scheduler load."""

    def __init__(self):
        from transformers import TrainerCallback

        probe = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
                probe.step, probe.best = state.global_step, state.best_metric
                from dylora_moe.model.adapter_io import adapter_state_dict

                probe.weights = {k: v.detach().clone() for k, v in adapter_state_dict(model).items()}
                probe.optimizer = copy.deepcopy(optimizer.state_dict())  # live tensors otherwise
                probe.scheduler_epoch = lr_scheduler.last_epoch

        self.callback = Callback()


def test_resume_two_to_one_restores_state_and_says_it_is_not_exact(base, stopped, tmp_path):
    from dylora_moe.training.run import train

    lines: list[str] = []
    probe = _Probe()
    cfg = config_from_cli(cli_args(base, tmp_path / "out", "--resume_from_checkpoint", str(stopped)))
    result = train(cfg, log=lines.append, extra_callbacks=[probe.callback])
    saved_state = json.loads((stopped / "trainer_state.json").read_text())

    # step, best metric, scheduler position
    assert probe.step == STOP and probe.best == saved_state["best_metric"] is not None
    assert probe.scheduler_epoch == STOP
    # weights: experts, routers and maturity equal the checkpoint's tensors
    assert max_weight_diff(probe.weights, adapter_weights(stopped)) == 0.0
    # optimizer: Adam moments and step counts as saved by the 2-process run
    saved_opt = torch.load(stopped / "optimizer.pt", weights_only=True)
    assert saved_opt["state"].keys() == probe.optimizer["state"].keys() and saved_opt["state"]
    for idx, moments in saved_opt["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, probe.optimizer["state"][idx][name]), (idx, name)
    # data position recomputed for world size 1 (global batch 8 -> 4): 40 samples = 10 of 16 batches
    message = next(line for line in lines if "resuming at step" in line)
    assert message == (
        "[train] resuming at step 5, epoch 0, batch 10/16 of the epoch; world size 2->1, global batch 8->4: "
        "data position recomputed in samples, the continuation is no longer bitwise exact"
    )
    assert result.global_step == STOP + (2 * 16 - 10)
    assert not any("no RNG state for process 0" in line for line in lines)
    events = [e for e in result.log_history if e.get("event") == "resume"]
    assert len(events) == 1 and events[0]["exact"] is False


def test_resume_one_to_two_recomputes_the_position_and_continues_the_same_samples(base, two_procs, tmp_path):
    # saved by 1 process (batch 4 x accumulation 2), continued by 2 (batch 4 x 1): same global batch and data
    # order, so with no random op in play the continuation lands on the uninterrupted 2-process run
    _ok(torchrun(cli_args(base, tmp_path / "one", grad_accum=2, eval_batch=8), nproc=1, stop_at=STOP))
    saved = tmp_path / "one" / f"checkpoint-{STOP}"
    assert sorted(p.name for p in saved.glob("rng_state_*")) == ["rng_state_0.pth"]
    out = tmp_path / "two"
    log = "".join(_ok(torchrun(cli_args(base, out, "--resume_from_checkpoint", str(saved)))).stderr)
    assert (f"resuming at step {STOP}, epoch 0, batch {STOP}/8 of the epoch; world size 1->2, global batch 8->8: "
            "data position recomputed in samples, the continuation is no longer bitwise exact") in log
    full, resumed = losses(history(two_procs[0])), losses(history(out))
    worst = max(abs(resumed[s] - full[s]) for s in range(STOP + 1, STEPS + 1))
    print(f"1 -> 2 processes: max loss difference to the uninterrupted 2-process run {worst:.2e}")
    assert worst <= 1e-6  # measured 0.0
    assert max_weight_diff(adapter_weights(out / f"checkpoint-{STEPS}"),
                           adapter_weights(two_procs[0] / f"checkpoint-{STEPS}")) <= 1e-6
