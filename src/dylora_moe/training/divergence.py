"""Stop a run whose loss or trainable weights turn non-finite, before anything from it is saved.

Why: a diverged run (a learning rate far too high, say) used to finish with exit 0, `eval_loss nan` and NaN
experts published as the verified last checkpoint, the one `auto` resumes. HF calls `on_step_end`, then
`on_log`, `on_evaluate` and only then saves, so raising in any of them keeps the diverged state off disk
and the previous checkpoint the newest one.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

from dylora_moe.errors import UserError


class TrainingDiverged(UserError):
    """The loss or the weights became NaN/inf; the message names the step and the last good checkpoint."""


class NonFiniteGuard(TrainerCallback):
    """Checks the trainable weights after every optimizer step, and every logged train/eval loss."""

    def __init__(self, model):
        self.model = model

    def _weights_finite(self) -> bool:
        flags = [p.detach().isfinite().all() for p in self.model.parameters() if p.requires_grad]
        return not flags or bool(torch.stack(flags).all().item())  # one device sync per step

    def _stop(self, args, state, what: str) -> None:
        from dylora_moe.checkpoint.manifest import find_latest_checkpoint

        last = find_latest_checkpoint(args.output_dir, verify=False, log=lambda *_: None)
        then = f"the last checkpoint {last} is intact; resume from it with" if last else "nothing was saved; start again with"
        raise TrainingDiverged(
            f"training diverged at step {state.global_step}: {what} is not finite; this step was not saved and "
            f"{then} a lower --learning_rate (now {args.learning_rate:g})"
        )

    def on_step_end(self, args, state, control, **kwargs):
        if not self._weights_finite():
            self._stop(args, state, "a trainable weight (expert or gate)")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                self._stop(args, state, f"{key} ({value})")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get("eval_loss")
        if isinstance(value, float) and not math.isfinite(value):
            self._stop(args, state, f"eval_loss ({value})")
