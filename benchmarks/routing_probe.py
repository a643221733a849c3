"""How well can a linear gate tell two skills apart? Token inputs against causal running means.

For each decoder layer of the base, collects the (RMS-normalised) hidden states of the answer tokens of two
skills, and their causal running means over the sequence (what `--router_input context` routes on; `sequence`
routes every gate on layer 0's), fits a
standardised logistic-regression probe on 75% and prints the held-out accuracy of each (balanced classes).

    python benchmarks/routing_probe.py [--skill_a stdlib:math] [--skill_b code_alpaca=FILE]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@torch.no_grad()
def features(model, rows) -> dict[int, dict[str, torch.Tensor]]:
    """layer -> {"token": (N, d), "context": (N, d)} over the answer tokens of `rows`."""
    out: dict[int, dict[str, list]] = {}
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        answer = torch.tensor(row["labels"]) != -100
        for layer, h in enumerate(model(input_ids=ids, output_hidden_states=True).hidden_states[:-1]):
            h = h[0] / h[0].pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
            running = h.cumsum(0) / torch.arange(1, h.shape[0] + 1).unsqueeze(1)
            out.setdefault(layer, {"token": [], "context": []})
            out[layer]["token"].append(h[answer])
            out[layer]["context"].append(running[answer])
    return {layer: {k: torch.cat(v) for k, v in d.items()} for layer, d in out.items()}


def probe_accuracy(xa: torch.Tensor, xb: torch.Tensor, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    n = min(len(xa), len(xb))
    xa, xb = xa[torch.randperm(len(xa), generator=g)[:n]], xb[torch.randperm(len(xb), generator=g)[:n]]
    x, y = torch.cat([xa, xb]), torch.cat([torch.zeros(n), torch.ones(n)])
    order = torch.randperm(2 * n, generator=g)
    x, y, cut = x[order], y[order], int(1.5 * n)
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-6)
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (F.binary_cross_entropy_with_logits(x[:cut] @ w + b, y[:cut]) + 1e-3 * w.pow(2).sum()).backward()
        opt.step()
    return float(((x[cut:] @ w + b > 0).float() == y[cut:]).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_name", default="tiny")
    p.add_argument("--skill_a", default="stdlib:math")
    p.add_argument("--skill_b", default=f"code_alpaca={SHARED / 'code_alpaca_2k.json'}")
    p.add_argument("--examples", type=int, default=120)
    a = p.parse_args()
    from dylora_moe.data.config import DataConfig
    from dylora_moe.data.pipeline import build_datasets
    from dylora_moe.model.loading import load_base_model

    model, tokenizer = load_base_model(a.model_name, log=lambda m: None)
    model.eval()
    feats = []
    for spec in (a.skill_a, a.skill_b):
        data = build_datasets(DataConfig(datasets=spec, max_seq_length=128, max_examples_per_dataset=200,
                                         eval_fraction=0.15), tokenizer).train
        feats.append(features(model, [data[i] for i in range(min(a.examples, len(data)))]))
    print(f"A = {a.skill_a.split('=')[0]}, B = {a.skill_b.split('=')[0]}: held-out accuracy of a linear probe")
    print(f"{'layer':>5} {'token input':>12} {'running mean':>13}")
    for layer in feats[0]:
        tok = probe_accuracy(feats[0][layer]["token"], feats[1][layer]["token"])
        ctx = probe_accuracy(feats[0][layer]["context"], feats[1][layer]["context"])
        print(f"{layer:>5} {tok:>12.3f} {ctx:>13.3f}")


if __name__ == "__main__":
    main()
