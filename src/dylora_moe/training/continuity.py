"""The continuity probe: a resume proves that the model computes here what it computed when it was saved.

Why: "the loss jumps after a resume" has many causes the other checks cannot see (a base with the same files and
matrices but another norm weight, another kernel, precision or library version). Every checkpoint carries
`continuity_probe.json`: a few fixed training sequences (token ids, chosen once at the run's start and carried
forward by every resume, so a resume on swapped datasets still has them), their LM loss scored right before the
save, and the setup that scored it. A full resume scores the same ids after the state is restored and before the
first step, logs one line, and stops beyond the tolerance unless --accept_probe_drift is given;
`dylora-moe checkpoints verify --probe DIR` does the same without training. Tolerances: docs/training.md.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from dylora_moe.errors import UserError
from dylora_moe.files import atomic_write_text

PROBE_NAME = "continuity_probe.json"
PROBE_FORMAT = "dylora-moe-continuity-probe/1"
PROBE_SEQUENCES = 8
PROBE_MAX_TOKENS = 256
# relative |Δ| / saved loss; measured in docs/training.md: thread counts and CPU kernels (ATEN_CPU_CAPABILITY) move
# the probe by under 1e-6 on the micro and tiny bases; bf16 by ~1e-3, NF4 by a few percent
TOLERANCE = 1e-4  # same precision, quantization and device type
CROSS_SETUP_TOLERANCE = 0.05  # precision, quantization or device type differ
_MAX_STORED = 64  # sequences / 4096 tokens: bounds on an untrusted file


@dataclass(frozen=True)
class Verdict:
    line: str  # `probe loss A at save (setup) -> B here (setup): Δ d`
    saved: float
    here: float
    delta: float
    relative: float
    tolerance: float
    differences: list[str]

    @property
    def ok(self) -> bool:
        return self.relative <= self.tolerance


def choose_sequences(train_dataset, count: int = PROBE_SEQUENCES, max_tokens: int = PROBE_MAX_TOKENS) -> list[dict]:
    """`count` rows spread evenly over the training set (deterministic: same data, same probe), cut to
    `max_tokens`; rows whose cut leaves no scored token are passed over."""
    n = len(train_dataset)
    spread = list(dict.fromkeys(i * n // count for i in range(count)))
    fallback = [i for i in range(min(n, len(spread) + 4 * count)) if i not in spread]
    chosen: list[dict] = []
    for index in spread + fallback:
        if len(chosen) == count:
            break
        row = train_dataset[index]
        ids = [int(t) for t in row["input_ids"][:max_tokens]]
        labels = [int(t) for t in (row["labels"] if "labels" in row else row["input_ids"])[:max_tokens]]
        if any(t != -100 for t in labels[1:]):
            chosen.append({"input_ids": ids, "labels": labels})
    return chosen


def read_probe(ckpt_dir: str | Path) -> dict | None:
    """The checkpoint's probe (None: written before probes existed); checked, as everything from a store is."""
    path = Path(ckpt_dir) / PROBE_NAME
    if not path.is_file():
        return None
    where = f"checkpoint {ckpt_dir}: {PROBE_NAME}"
    try:
        probe = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{where} is unreadable ({exc})") from None
    if not isinstance(probe, dict) or probe.get("format") != PROBE_FORMAT or not _valid_sequences(probe.get("sequences")) \
            or not isinstance(probe.get("loss"), (int, float)):
        raise UserError(f"{where} is not a {PROBE_FORMAT} file (sequences of token ids and a loss)")
    return probe


def _valid_sequences(sequences) -> bool:
    if not isinstance(sequences, list) or not 0 < len(sequences) <= _MAX_STORED:
        return False
    for seq in sequences:
        ids, labels = (seq.get("input_ids"), seq.get("labels")) if isinstance(seq, dict) else (None, None)
        if not isinstance(ids, list) or not isinstance(labels, list) or len(ids) != len(labels) \
                or not 0 < len(ids) <= 4096:
            return False
        if not all(type(t) is int and t >= 0 for t in ids) or not all(type(t) is int and t >= -100 for t in labels):
            return False
    return True


def setup_of(model) -> dict:
    """What the probe's loss depends on besides the weights: precision, quantization, device, versions, threads."""
    import transformers

    from dylora_moe.model.quantization import describe, quantization_label

    return {
        "precision": str(model.get_input_embeddings().weight.dtype).replace("torch.", ""),
        "quantization": quantization_label(describe(model.base_model)),
        "device": model.device.type, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def score(model, sequences: list[dict]) -> float:
    """Mean next-token loss over the probe's scored tokens: the model's own LM loss (no label smoothing, no
    balance loss), one sequence at a time (no padding), in eval mode; the train mode and every random stream
    are as before (the training run continues bit for bit)."""
    from dylora_moe.model.moe_model import shifted_lm_loss

    vocab = model.get_input_embeddings().weight.shape[0]
    if any(t >= vocab for seq in sequences for t in seq["input_ids"]):
        raise UserError(f"the continuity probe holds token ids beyond this model's vocabulary ({vocab}): it was "
                        "saved with another tokenizer")
    was_training = model.training
    devices = [model.device] if model.device.type == "cuda" else []
    total, count = 0.0, 0
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices):
            for seq in sequences:
                ids = torch.tensor([seq["input_ids"]], device=model.device)
                labels = torch.tensor([seq["labels"]], device=model.device)
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                seq_total, seq_count = shifted_lm_loss(logits, labels, 0.0)
                total += float(seq_total)
                count += int(seq_count)
    finally:
        model.train(was_training)
    return total / max(count, 1)


def write_probe(directory: str | Path, model, sequences: list[dict], fingerprint: dict) -> dict:
    """Score `sequences` now and store them with the loss, the setup and the base's fingerprint."""
    probe = {"format": PROBE_FORMAT, "loss": score(model, sequences), **setup_of(model),
             "base_fingerprint": fingerprint, "sequences": sequences}
    atomic_write_text(Path(directory) / PROBE_NAME, json.dumps(probe) + "\n")
    return probe


def compare(saved: dict, loss: float, here: dict, fingerprint_here: dict | None = None) -> Verdict:
    """The saved probe against this machine's score; the tolerance is looser where the setup differs."""
    from dylora_moe.model.base_fingerprint import same_base

    keys = ("precision", "quantization", "device")
    cross = [k for k in keys if saved.get(k) != here.get(k)]
    differences = [f"{k} {saved.get(k)} -> {here.get(k)}" for k in (*keys, "torch", "transformers", "python", "threads")
                   if saved.get(k) != here.get(k)]
    if fingerprint_here is not None and not same_base(saved.get("base_fingerprint") or {}, fingerprint_here):
        differences.insert(0, "base fingerprint")
    before = float(saved["loss"])
    delta = loss - before
    relative = abs(delta) / max(abs(before), 1e-12) if math.isfinite(loss) else math.inf
    line = (f"probe loss {before:.5f} at save ({saved.get('device')}, {_precision(saved)}) -> {loss:.5f} here "
            f"({here['device']}, {_precision(here)}): Δ {delta:.3g}")
    return Verdict(line, before, loss, delta, relative, CROSS_SETUP_TOLERANCE if cross else TOLERANCE, differences)


def _precision(setup: dict) -> str:
    quantized = setup.get("quantization")
    return f"{setup.get('precision')}, {quantized}" if quantized and quantized != "full precision" else \
        str(setup.get("precision"))


def drift_message(verdict: Verdict, where: str, flag: str) -> str:
    """The one line of a refused resume (or a failed verify): what moved, what differs, which flag accepts it."""
    differs = ("differs: " + ", ".join(verdict.differences)) if verdict.differences else \
        "base fingerprint, precision, quantization, device and versions all match: the base's weights or the " \
        "code compute otherwise than at save"
    return (f"continuity probe of {where}: {verdict.line} is {verdict.relative:.2%} of the saved loss, beyond the "
            f"tolerance {verdict.tolerance:.2%}; {differs}; {flag}")


def check_here(probe: dict, model, fingerprint: dict | None = None) -> Verdict:
    """Score the saved probe on `model` as it is now and compare (`fingerprint`: the base's, when known)."""
    fingerprint = fingerprint if fingerprint is not None else model.current_base_fingerprint()
    return compare(probe, score(model, probe["sequences"]), setup_of(model), fingerprint)


class ContinuityProbe(TrainerCallback):
    """Writes the probe into every checkpoint (`checkpoint_files`, before the manifest) and checks it once on a
    full resume (`on_train_begin`: the state is restored, no step taken yet)."""

    def __init__(self, model, sequences: list[dict], resumption, accept_drift: bool = False, summary=None,
                 log=print):
        self.model = model
        self.sequences = sequences
        self.resumption = resumption
        self.accept_drift = accept_drift
        self.summary = summary  # (dict) -> None: W&B summary values, when a W&B run is open
        self.log = log
        self.saved: dict | None = None  # the resumed checkpoint's probe
        self.unreadable: str | None = None  # why the resumed checkpoint's probe could not be read (accepted)
        self._fingerprint: dict | None = None  # the frozen base's, computed at the first save (a 4-bit base
        # is dequantized for it)

    @classmethod
    def for_run(cls, model, train_dataset, resumption, **kwargs) -> "ContinuityProbe":
        """The resumed checkpoint's probe ids when it has one (every later checkpoint scores the same), else
        chosen from this run's training data."""
        saved, unreadable = None, None
        if resumption.path is not None:
            try:
                saved = read_probe(resumption.path)
            except UserError as exc:  # a full resume needs the flag; a weights-only one does not check
                if resumption.full and not kwargs.get("accept_drift"):
                    raise UserError(f"{exc}; pass --accept_probe_drift to resume without the continuity check") \
                        from None
                unreadable = str(exc)
        sequences = saved["sequences"] if saved else choose_sequences(train_dataset)
        probe = cls(model, sequences, resumption, **kwargs)
        probe.saved, probe.unreadable = saved, unreadable
        return probe

    def _base_fingerprint(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = self.model.current_base_fingerprint()
        return self._fingerprint

    def checkpoint_files(self, directory) -> None:
        if not self.sequences:
            return
        write_probe(directory, self.model, self.sequences, self._base_fingerprint())

    def on_train_begin(self, args, state, control, **kwargs):
        resumption = self.resumption
        if not resumption.full or not args.should_save:
            return
        if self.unreadable is not None:
            self.log(f"[resume] continuity: not checked ({self.unreadable}; accepted by --accept_probe_drift)")
            return
        if self.saved is None:
            self.log(f"[resume] continuity: {resumption.label} has no {PROBE_NAME} (saved before continuity "
                     "probes existed): continuity is not checked for this resume")
            return
        if resumption.cfg.grow_experts:  # new experts join the routing: the model is meant to differ from the save
            self.log(f"[resume] continuity: not checked: --grow_experts {resumption.cfg.grow_experts} adds experts "
                     f"to {resumption.label}, so the model no longer computes as it did at save")
            return
        try:
            verdict = check_here(self.saved, self.model, self._base_fingerprint())
        except UserError as exc:
            if not self.accept_drift:
                raise UserError(f"{exc}; pass --accept_probe_drift to resume anyway") from None
            self.log(f"[resume] continuity: not checked ({exc}; accepted by --accept_probe_drift)")
            return
        resumption.continuity = {"probe_loss_saved": verdict.saved, "probe_loss_here": verdict.here,
                                 "probe_delta": verdict.delta, "probe_within_tolerance": verdict.ok}
        if not verdict.ok and not self.accept_drift:
            raise UserError(drift_message(verdict, resumption.label, "pass --accept_probe_drift to resume anyway"))
        accepted = "" if verdict.ok else " (beyond the tolerance, accepted by --accept_probe_drift)"
        self.log(f"[resume] continuity: {verdict.line}{accepted}")
        if self.summary is not None:
            self.summary({"resume/probe_delta": verdict.delta, "resume/probe_loss": verdict.here})
