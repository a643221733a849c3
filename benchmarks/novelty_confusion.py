"""The novelty detector's confusion table on one base: every stdlib skill plus CodeAlpaca and MBPP.

Each skill's training split gives the library sample (seed 0); a disjoint sample of its eval split (seed 1) is
then judged against every library skill. Same skill judged novel and other skill judged known are the two
errors; both are counted for the permutation test (the default) and for the old fixed cosine threshold 0.75
(embeddings centred on the `stdlib` mean). About a minute per base on 2 CPU cores:

    python benchmarks/novelty_confusion.py [--model_name tiny|DIR] [--samples 32] [--alpha 0.01]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch.nn.functional as F  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _skills(shared: Path) -> list[str]:
    from dylora_moe.data.stdlib_mining import STDLIB_SKILLS

    return [f"stdlib:{s}" for s in STDLIB_SKILLS] + [f"code_alpaca={shared / 'code_alpaca_2k.json'}",
                                                      f"mbpp={shared / 'mbpp.jsonl'}"]


def _short(spec: str) -> str:
    return spec.split("=")[0].replace("stdlib:", "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_name", default="tiny")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--threshold", type=float, default=0.75)
    p.add_argument("--examples", type=int, default=120, help="examples per skill before the train/eval split")
    p.add_argument("--save", type=Path, default=None, help="also save every sample (sums, counts) to this .pt file")
    p.add_argument("--data_dir", type=Path, default=SHARED, help="where mbpp.jsonl and code_alpaca_2k.json are")
    a = p.parse_args()

    from dylora_moe.continual.embedding import dataset_sample
    from dylora_moe.continual.novelty_test import same_skill_test
    from dylora_moe.data.config import DataConfig
    from dylora_moe.data.pipeline import build_datasets
    from dylora_moe.model.loading import load_base_model

    model, tokenizer = load_base_model(a.model_name, log=lambda m: None)
    pad = tokenizer.pad_token_id

    def data(spec):
        return build_datasets(DataConfig(datasets=spec, max_seq_length=128, max_examples_per_dataset=a.examples,
                                         eval_fraction=0.5), tokenizer)

    def mean(sample):
        return sample[0].sum(0) / sample[1].sum()

    reference = mean(dataset_sample(model, data("stdlib").train, pad, sample=a.samples, seed=0))
    skills = _skills(a.data_dir)
    known, probe = {}, {}
    for spec in skills:
        split = data(spec)
        known[spec] = dataset_sample(model, split.train, pad, sample=a.samples, seed=0)
        probe[spec] = dataset_sample(model, split.eval, pad, sample=a.samples, seed=1)
    if a.save:
        import torch

        torch.save({"known": known, "probe": probe, "reference": reference}, a.save)
    errors = {"test": [0, 0], "cosine": [0, 0]}
    print("p-values (rows: probe sample of the eval split; columns: library sample of the train split); "
          "* = judged known")
    print(f"{'':>12}" + "".join(f"{_short(s):>14}" for s in skills))
    for spec in skills:
        cells = []
        for other in skills:
            p_value = same_skill_test(*known[other], *probe[spec]).p_value
            cosine = float(F.cosine_similarity(mean(known[other]) - reference, mean(probe[spec]) - reference, dim=0))
            same = spec == other
            for rule, keeps in (("test", p_value >= a.alpha), ("cosine", cosine >= a.threshold)):
                errors[rule][0 if same else 1] += int(keeps != same)
            cells.append(f"{p_value:.3f}{'*' if p_value >= a.alpha else ' '}/{cosine:+.2f}")
        print(f"{_short(spec):>12}" + "".join(f"{c:>14}" for c in cells))
    n = len(skills)
    for rule, label in (("test", f"permutation test, alpha {a.alpha}"), ("cosine", f"cosine >= {a.threshold}")):
        print(f"{label}: same skill judged novel {errors[rule][0]}/{n}, "
              f"other skill judged known {errors[rule][1]}/{n * (n - 1)}")


if __name__ == "__main__":
    main()
