"""Log pass@k to the active W&B run, if there is one; without wandb or without a run, do nothing."""

from __future__ import annotations


def log_to_wandb(results: dict, prefix: str = "eval") -> bool:
    """`{prefix}/{benchmark}/pass@k` scalars plus a pass@k table; True when something was logged."""
    try:
        import wandb
    except ImportError:
        return False
    if getattr(wandb, "run", None) is None:
        return False
    benchmarks = results["benchmarks"]
    metrics: dict = {}
    rows = []
    for name, bench in benchmarks.items():
        for key, value in bench["pass@k"].items():
            metrics[f"{prefix}/{name}/{key}"] = value
            rows.append([name, key, value, bench["num_problems"], bench["n"]])
    metrics[f"{prefix}/pass_at_k"] = wandb.Table(columns=["benchmark", "metric", "value", "problems", "n"], data=rows)
    wandb.run.log(metrics)
    for key, value in metrics.items():
        if not key.endswith("pass_at_k"):
            wandb.run.summary[key] = value
    return True
