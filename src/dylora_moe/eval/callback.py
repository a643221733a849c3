"""Benchmark evaluation during training, on the *trained* weights in memory (no reload from disk).

For the trainer's `--eval_benchmarks`: add `BenchmarkEvalCallback(...)` to the HF Trainer's callbacks. It runs
`evaluate()` at the end of training (`when="end"`) or after every epoch (`when="epoch"`), on the main process
only, writes `eval_results_<tag>.json` in `output_dir`, and logs pass@k to the active W&B run.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from dylora_moe.errors import UserError
from dylora_moe.eval.benchmarks import parse_benchmarks


class BenchmarkEvalCallback(TrainerCallback):
    """Run HumanEval/MBPP on the model being trained; `results` keeps the latest results dict."""

    def __init__(self, tokenizer, benchmarks: str | list[str], output_dir: str | Path, when: str = "end",
                 log=print, **evaluate_kwargs):
        if when not in ("end", "epoch"):
            raise UserError(f"eval timing {when!r} is not known; expected 'end' or 'epoch'")
        self.tokenizer = tokenizer
        self.benchmarks = parse_benchmarks(benchmarks)
        self.output_dir = Path(output_dir)
        self.when = when
        self.log = log
        self.evaluate_kwargs = evaluate_kwargs
        self.results: dict | None = None

    def _run(self, state, model, tag: str) -> None:
        if model is None or not getattr(state, "is_world_process_zero", True):
            return
        from dylora_moe.eval.runner import evaluate
        from dylora_moe.eval.table import format_table

        path = self.output_dir / f"eval_results_{tag}.json"
        self.results = evaluate(model, self.tokenizer, self.benchmarks, output=path, log=self.log,
                                metadata={"global_step": state.global_step, "epoch": state.epoch},
                                **self.evaluate_kwargs)
        self.log(f"benchmarks at {tag} (step {state.global_step}):\n{format_table(self.results)}\nresults: {path}")

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.when == "epoch":
            self._run(state, model, f"epoch{round(state.epoch or 0)}")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.when == "end":
            self._run(state, model, "final")
