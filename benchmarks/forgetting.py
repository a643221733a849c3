"""Forgetting after learning skill A then skill B: DyLoRA-MoE (new expert for B, A's expert frozen) against a
single LoRA (one expert, fine-tuned on A then on B), same base, data, steps and learning rates.

Prints, for both, the eval loss on A after A, on A after B (the rise is the forgetting) and on B after B, and
where each skill's held-out tokens are routed. The DyLoRA arm runs with continual mode's defaults (sequence
routing, skill-supervised routing, routing prototypes); flags switch each off for ablations. Defaults run in
about a minute on 2 CPU cores on the embedded tiny base:

    python benchmarks/forgetting.py --output_dir /tmp/forgetting
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_name", default="tiny")
    p.add_argument("--skill_a", default="stdlib:math")
    p.add_argument("--skill_b", default=f"code_alpaca={SHARED / 'code_alpaca_2k.json'}")
    p.add_argument("--skill_c", default=None, help="optional third skill, learned after B (forgetting of A and B after C)")
    p.add_argument("--steps", type=int, default=20, help="consolidation steps per skill")
    p.add_argument("--seed_steps", type=int, default=0)
    p.add_argument("--learning_rate", type=float, default=5e-3)
    p.add_argument("--lora_r", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--examples", type=int, default=200, help="examples per skill before the split")
    p.add_argument("--novelty_threshold", type=float, default=1.0,
                   help="DyLoRA run: 1.0 gives B its own expert whatever the detector measures (printed)")
    p.add_argument("--replay", type=float, default=0.0, help="share of B's training examples replayed from A")
    p.add_argument("--routing_supervision", type=float, default=1.0,
                   help="weight of the skill-supervised routing loss (both arms get it; with one expert it is 0)")
    p.add_argument("--prototype_routing", type=float, default=1.0,
                   help="weight of the routing-prototype loss (continual mode's default 1; 0 = off)")
    p.add_argument("--new_expert_init", default="nearest", choices=("nearest", "fresh"),
                   help="the new expert for B starts as a copy of A's expert (nearest) or from scratch (fresh)")
    p.add_argument("--router_input", default="sequence", choices=("token", "context", "sequence"),
                   help="what the DyLoRA gates read (continual mode's default: sequence)")
    p.add_argument("--arms", default="dylora,single_lora", help="which runs (comma-separated)")
    p.add_argument("--output_dir", default="outputs/forgetting")
    p.add_argument("--json", default=None, help="also write the figures here")
    return p.parse_args()


def _configs(a: argparse.Namespace, out: Path):
    from dylora_moe.continual.config import ContinualConfig
    from dylora_moe.data.config import DataConfig
    from dylora_moe.training.config import TrainConfig

    data = DataConfig(max_seq_length=a.max_seq_length, max_examples_per_dataset=a.examples, eval_fraction=0.15)
    cfg = TrainConfig(model_name=a.model_name, output_dir=str(out), max_steps=a.steps, learning_rate=a.learning_rate,
                      lr_scheduler_type="constant", warmup_ratio=0.0, lora_r=a.lora_r, lora_alpha=2.0 * a.lora_r,
                      lora_dropout=0.0, router_input=a.router_input, train_batch_size=a.batch, eval_batch_size=16, save_steps=a.steps,
                      eval_steps=a.steps, logging_steps=max(a.steps // 4, 1), report_to="none", data=data)
    ccfg = ContinualConfig(skills=",".join(s for s in (a.skill_a, a.skill_b, a.skill_c) if s), seed_steps=a.seed_steps, embedding_samples=32,
                           replay=a.replay, routing_supervision=a.routing_supervision,
                           prototype_routing=a.prototype_routing,
                           new_expert_init=a.new_expert_init)
    return cfg, ccfg


def _losses(checkpoints: dict[str, str], evals: dict[str, object]) -> dict[str, float]:
    from dylora_moe.continual.evaluate import eval_metrics
    from dylora_moe.model.loading import load_model_for_inference

    figures = {}
    order = list(evals)  # skills in the order they are learned: a, b[, c]
    for when, checkpoint in checkpoints.items():
        model, tokenizer = load_model_for_inference(checkpoint, log=lambda m: None)
        for skill, dataset in evals.items():
            if order.index(skill) > order.index(when.removeprefix("after_")):
                continue  # not learned yet
            metrics = eval_metrics(model, dataset, tokenizer.pad_token_id, batch_size=16)
            figures[f"loss_{skill}_{when}"] = metrics["loss"]
            figures[f"usage_{skill}_{when}"] = metrics["usage"]
    figures["forgetting_a"] = figures["loss_a_after_b"] - figures["loss_a_after_a"]
    if "after_c" in checkpoints:
        figures["forgetting_a_after_c"] = figures["loss_a_after_c"] - figures["loss_a_after_a"]
        figures["forgetting_b_after_c"] = figures["loss_b_after_c"] - figures["loss_b_after_b"]
    return figures


def main() -> int:
    a = _args()
    from dylora_moe.continual.config import ContinualConfig
    from dylora_moe.continual.orchestrator import phase_data, train_continual
    from dylora_moe.data.pipeline import build_datasets
    from dylora_moe.model.loading import load_base_model

    root = Path(a.output_dir)
    quiet = lambda m: print(m) if m.startswith("[continual] skill") else None  # noqa: E731
    results = {}
    for name, threshold in (("dylora", a.novelty_threshold), ("single_lora", -1.0)):
        if name not in a.arms.split(","):
            continue
        out = root / name
        cfg, ccfg = _configs(a, out)
        ccfg.novelty_threshold = threshold
        if (out / "continual_state.json").exists():
            cfg.resume_from_checkpoint = "auto"
        started = time.monotonic()
        run = train_continual(cfg, ccfg, log=quiet)
        _, tokenizer = load_base_model(a.model_name, log=lambda m: None)
        alone = ContinualConfig(skills=ccfg.skills)  # each skill's own held-out split, as in training
        keys = ("a", "b", "c")[: len(alone.skill_specs())]
        evals = {key: build_datasets(phase_data(cfg, alone, i, alone.skill_specs()), tokenizer).eval
                 for i, key in enumerate(keys)}
        figures = _losses({f"after_{key}": record.checkpoint for key, record in zip(keys, run.state.records)}, evals)
        figures["experts"] = run.state.num_experts
        figures["seconds"] = round(time.monotonic() - started, 1)
        results[name] = figures
    print(f"\nA = {a.skill_a.split('=')[0]}, B = {a.skill_b.split('=')[0]}; {a.steps} steps per skill, lr "
          f"{a.learning_rate:g}, r={a.lora_r}, batch {a.batch}, replay {a.replay:g}, routing supervision {a.routing_supervision:g}, prototype routing {a.prototype_routing:g}, router input {a.router_input}, "
          f"base {a.model_name}")
    print(f"{'':12} {'experts':>7} {'A after A':>10} {'A after B':>10} {'forgetting':>10} {'B after B':>10}   "
          "expert usage on A after B / on B after B")
    for name, f in results.items():
        print(f"{name:12} {f['experts']:>7} {f['loss_a_after_a']:>10.4f} {f['loss_a_after_b']:>10.4f} "
              f"{f['forgetting_a']:>+10.4f} {f['loss_b_after_b']:>10.4f}   {f['usage_a_after_b']} / {f['usage_b_after_b']}")
    if a.skill_c:
        print(f"\nthen C = {a.skill_c.split('=')[0]}:")
        print(f"{'':12} {'A after C':>10} {'forgot A':>9} {'B after C':>10} {'forgot B':>9} {'C after C':>10}   "
              "expert usage on A / on B after C")
        for name, f in results.items():
            print(f"{name:12} {f['loss_a_after_c']:>10.4f} {f['forgetting_a_after_c']:>+9.4f} {f['loss_b_after_c']:>10.4f} "
                  f"{f['forgetting_b_after_c']:>+9.4f} {f['loss_c_after_c']:>10.4f}   {f['usage_a_after_c']} / "
                  f"{f['usage_b_after_c']}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
