"""`train(config)`: the library entry point behind `dylora-moe train`.

Wiring only, read top to bottom: check the flags, set up tracking and training arguments, let the
`Resumption` (training/resume.py) decide where the run starts and check the command against the checkpoint,
then `_setup_model`, `_setup_data`, plan, callbacks, trainer, run, summary. Mistakes cost nothing: the resume
source is resolved and verified before the base model loads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PrinterCallback, ProgressCallback, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy

from dylora_moe.checkpoint.manifest import (clean_stale_temp_dirs, find_latest_checkpoint, incomplete_reason,
                                            list_checkpoints)
from dylora_moe.checkpoint.upload_setup import EXIT_UPLOAD_FAILED
from dylora_moe.data.collator import CausalLMCollator
from dylora_moe.data.length_sampler import SeededLengthGroupedSampler
from dylora_moe.data.packing import PackingCollator
from dylora_moe.data.pipeline import build_datasets, dropped_rows_lines
from dylora_moe.errors import UserError
from dylora_moe.model.loading import build_model
from dylora_moe.model.quantization import describe as describe_quantization
from dylora_moe.processes import is_main_process, log_main
from dylora_moe.training.callbacks import EXIT_PREEMPTED, MaturitySchedule, PatienceEarlyStopping, PreemptionHandler
from dylora_moe.training.config import TrainConfig
from dylora_moe.training.continuity import ContinuityProbe
from dylora_moe.training.distributed import check_supported_parallelism
from dylora_moe.training.divergence import NonFiniteGuard
from dylora_moe.training.output_dir import check_output_dir_location, claim_output_dir
from dylora_moe.training.progress import DataPositionTracker, FinalStepSave, RunEvents
from dylora_moe.training.progress_log import ProgressLog
from dylora_moe.training.resume import Resumption
from dylora_moe.training.resume_plan import DataLayout
from dylora_moe.training.run_lock import run_lock
from dylora_moe.training.tracking import Tracking, setup_tracking
from dylora_moe.training.trainer import DyLoRATrainer


@dataclass
class TrainResult:
    global_step: int
    epoch: float
    best_metric: float | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    preempted: bool
    exit_code: int
    log_history: list


def train(cfg: TrainConfig, log=log_main, extra_callbacks: list | None = None) -> TrainResult:
    """Train (or resume) a DyLoRA-MoE model as configured; returns a summary. Raises UserError on bad input.

    The main process holds the output directory's run lock throughout (a second run into it is refused)."""
    cfg.check()
    check_output_dir_location(cfg.output_dir)  # before the run lock writes into it
    with run_lock(cfg.output_dir, enabled=is_main_process()):
        return _train(cfg, log, extra_callbacks)


def _train(cfg: TrainConfig, log, extra_callbacks: list | None) -> TrainResult:
    started = time.monotonic()
    tracking = setup_tracking(cfg, log=log)
    args = _training_args(cfg, tracking.report_to)
    is_main = args.process_index == 0
    with args.main_process_first(desc="resolve checkpoint"):
        resumption = Resumption.prepare(cfg, log=log)  # before anything expensive
    if is_main:
        _prepare_output_dir(cfg, resumption, log)

    model, tokenizer = _setup_model(cfg, resumption, log)
    data = _setup_data(cfg, tokenizer, args, log)
    layout = DataLayout.of(len(data.train), batch=cfg.train_batch_size, grad_accum=cfg.gradient_accumulation_steps,
                           world_size=args.world_size, fingerprint=data.fingerprint)
    args.max_steps = resumption.plan_run(layout, log=log)
    maturity_step = _maturity_step(cfg, args.max_steps)
    resumption.state.maturity_step = maturity_step

    tracker = DataPositionTracker(layout, resumption.plan)
    preemption = PreemptionHandler(log=log)
    uploads = tracking.upload_callback(is_main, log=log)  # background; only the main process uploads
    callbacks = _callbacks(cfg, model, tokenizer, data, resumption, tracker, preemption, uploads, maturity_step,
                           tracking, log) + (extra_callbacks or [])
    if cfg.packing and any(callable(getattr(cb, "wrap_collator", None)) for cb in callbacks):
        raise UserError("--packing puts several examples in one row, but this mode adds per-sequence inputs "
                        "(skill-supervised routing); drop --packing or use --group_by_length")

    grouped = resumption.groups_by_length(log=log)
    trainer = DyLoRATrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval if len(data.eval) else None,
        data_collator=_train_collator(cfg, tokenizer), processing_class=tokenizer, callbacks=callbacks,
        resumption=resumption, run_config=cfg.run_config(group_by_length=grouped, attn_implementation=model.config._attn_implementation),
        position_fn=tracker.position, metadata_fn=lambda: _checkpoint_metadata(trainer, cfg, model, tracking, data, layout),
        train_sampler=_train_sampler(cfg, data, layout) if grouped else None, save_total_limit=cfg.save_total_limit,
        log=log,
    )
    for printer in (ProgressCallback, PrinterCallback):  # HF prints one (per `disable_tqdm`): logs as raw dicts
        trainer.remove_callback(printer)  # ProgressLog prints instead, with HF's bars on a terminal
    check_supported_parallelism(trainer)  # FSDP/DeepSpeed would shard what the checkpoint writer expects whole
    log(f"[train] {model.num_experts} experts x r={resumption.model_config.lora_r} on "
        f"{resumption.model_config.target_modules}: {model.trainable_parameter_count():,} trainable parameters; "
        f"{args.max_steps} steps planned ({layout.steps_per_epoch} per epoch, global batch {layout.global_batch}); "
        f"experts mature at step {maturity_step}")

    failures = _run(trainer, resumption, preemption, tracking, uploads, log)
    result = _summary(trainer, preemption, failures, uploads, started, is_main, log)
    # Other ranks leave only once the main process has uploaded and logged: under torchrun a worker that exits
    # first with 143 (preempted) counts as failed, and torchrun then SIGTERMs the still-uploading main process.
    trainer.accelerator.wait_for_everyone()
    return result


def _training_args(cfg: TrainConfig, report_to) -> TrainingArguments:
    """Everything HF's loop needs from the command; `max_steps` is set once the resume is planned."""
    return TrainingArguments(
        output_dir=str(Path(cfg.output_dir)), run_name=cfg.run_name, seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.train_batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        eval_strategy="steps", eval_steps=cfg.eval_steps or cfg.save_steps,
        load_best_model_at_end=cfg.load_best_model_at_end, metric_for_best_model="eval_loss",
        greater_is_better=False, remove_unused_columns=False, prediction_loss_only=True,
        dataloader_num_workers=0, report_to=report_to, activation_checkpointing=cfg.gradient_checkpointing,
        ddp_find_unused_parameters=False, use_cpu=not torch.cuda.is_available(), bf16=cfg.bf16, fp16=cfg.fp16,
    )


def _prepare_output_dir(cfg: TrainConfig, resumption: Resumption, log) -> None:
    """Main process only: claim the directory, drop stale temporaries, say which checkpoints are ignored."""
    output_dir = Path(cfg.output_dir)
    claim_output_dir(cfg, resumption.path, log=log)
    clean_stale_temp_dirs(output_dir, log=lambda m: log(f"[checkpoint] {m}"))
    for _step, path in list_checkpoints(output_dir):
        reason = incomplete_reason(path)
        if reason:
            log(f"[checkpoint] ignoring {path}: {reason}")


def _setup_model(cfg: TrainConfig, resumption: Resumption, log):
    """The frozen base with the merged model config; a resume's adapters load here, once, before the optimizer."""
    set_seed(cfg.seed)
    model, tokenizer = build_model(cfg.model_name, resumption.model_config, log=log,
                                   quantization=cfg.quantization(), attn_implementation=cfg.attn_implementation,
                                   training=True)
    model.label_smoothing = cfg.label_smoothing
    resumption.load_adapters(model, log=log)
    return model, tokenizer


def _setup_data(cfg: TrainConfig, tokenizer, args: TrainingArguments, log):
    """Tokenized train/eval sets; an empty eval set turns evaluation (and early stopping) off."""
    with args.main_process_first(desc="build datasets"):
        data = build_datasets(cfg.data, tokenizer)
    if len(data.train) == 0:
        raise UserError(f"the training set is empty after subsetting (--training_subset {cfg.data.training_subset})")
    if len(data.eval) == 0:
        if cfg.load_best_model_at_end:
            raise UserError("--load_best_model_at_end needs an eval set, but it is empty; raise --eval_fraction "
                            "or --max_seq_length, or drop --load_best_model_at_end")
        args.eval_strategy = IntervalStrategy.NO  # nothing to evaluate: no evaluation, no early stopping
    for line in dropped_rows_lines(data.stats):
        log(f"[data] {line}")
    for split in ("train", "eval"):
        st = data.stats[split]
        log(f"[data] {split}: {st['kept']} examples from {', '.join(data.sources)}; {st['truncated']} truncated at "
            f"{cfg.data.max_seq_length} tokens, {st['dropped_truncated'] + st['dropped_prompt_too_long']} dropped")
    log(f"[data] fingerprint {data.fingerprint[:12]}")
    return data


def _maturity_step(cfg: TrainConfig, total_steps: int) -> int | None:
    """--mature_after_steps (negative: never), else --maturity_ratio of the planned steps (1: never)."""
    if cfg.mature_after_steps is None:
        return math.ceil(cfg.maturity_ratio * total_steps) if cfg.maturity_ratio < 1 else None
    return None if cfg.mature_after_steps < 0 else cfg.mature_after_steps


def _callbacks(cfg: TrainConfig, model, tokenizer, data, resumption: Resumption, tracker, preemption, uploads,
               maturity_step: int | None, tracking: Tracking, log) -> list:
    callbacks = [NonFiniteGuard(model), tracker, MaturitySchedule(model, maturity_step, log=log), preemption,
                 FinalStepSave(), ProgressLog(log=log)]
    if not cfg.disable_early_stopping and len(data.eval) > 0:
        callbacks.append(PatienceEarlyStopping(cfg.early_stopping_patience, resumption.state.early_stopping, log=log))
    summary = tracking.wandb_run.summary.update if tracking.wandb_run is not None else None
    callbacks.append(ContinuityProbe.for_run(model, data.train, resumption, accept_drift=cfg.accept_probe_drift,
                                             summary=summary, log=log))
    callbacks.append(RunEvents(resumption, log=log))  # after the probe: the resume event carries its losses
    if uploads is not None:
        callbacks.append(uploads)
    if cfg.eval_benchmarks:
        from dylora_moe.eval.callback import BenchmarkEvalCallback  # the eval stack only when asked for

        callbacks.append(BenchmarkEvalCallback(
            tokenizer, cfg.eval_benchmarks, Path(cfg.output_dir), when=cfg.eval_benchmarks_when, log=log,
            limit=cfg.eval_benchmarks_limit, max_new_tokens=cfg.eval_max_new_tokens, mbpp_path=cfg.eval_mbpp_path,
        ))
    if cfg.write_report or tracking.wandb_run is not None:
        from dylora_moe.report.callback import ReportCallback  # the report stack only when asked for

        callbacks.append(ReportCallback(log=log))
    return callbacks


def _train_collator(cfg: TrainConfig, tokenizer):
    """Padding-free rows with --packing (for evaluation too: the losses are the same), right padding otherwise."""
    return PackingCollator() if cfg.packing else CausalLMCollator(tokenizer.pad_token_id)


def _train_sampler(cfg: TrainConfig, data, layout: DataLayout) -> SeededLengthGroupedSampler:
    """Our seeded length grouping (instead of HF's random order), resumable mid-epoch; grouped by the global
    batch, so the order does not depend on how it is split into micro-batches and processes."""
    return SeededLengthGroupedSampler([len(ids) for ids in data.train["input_ids"]], layout.global_batch, cfg.seed)


def _checkpoint_metadata(trainer, cfg: TrainConfig, model, tracking: Tracking, data, layout: DataLayout) -> dict:
    """What a checkpoint's manifest says about the run (stores list versions by it)."""
    state, config = trainer.state, trainer.resumption.model_config
    return {
        "global_step": state.global_step, "epoch": state.epoch,
        "best_metric": state.best_metric, "best_global_step": state.best_global_step,
        "run_id": tracking.run_id, "run_name": cfg.run_name, "base_model": config.base_model,
        "num_experts": model.num_experts, "lora_r": config.lora_r,
        "maturity": [bool(x) for x in model.maturity.tolist()], "datasets": data.sources,
        "dataset_fingerprint": data.fingerprint, "world_size": layout.world_size,
        "base_quantization": describe_quantization(model.base_model),
    }


def _run(trainer, resumption: Resumption, preemption, tracking: Tracking, uploads, log) -> list:
    """HF's loop with the signal handler installed; returns the failed uploads (waited for, also on error)."""
    preemption.install()
    trained = False
    try:
        trainer.train(resume_from_checkpoint=resumption.checkpoint)
        trained = True
    finally:
        preemption.uninstall()
        failures = tracking.finish(uploads, log=log, failed=not trained)  # waits for pending uploads
    return failures


def _summary(trainer, preemption, failures: list, uploads, started: float, is_main: bool, log) -> TrainResult:
    """The result, plus (main process) the final trainer state and the closing log lines."""
    output_dir = Path(trainer.args.output_dir)
    state = trainer.state
    last = None
    if is_main:  # this run's own last save; else (nothing saved) the newest one there
        last = trainer.last_saved_checkpoint or find_latest_checkpoint(output_dir, verify=False, log=lambda *_: None)
    preempted = preemption.requested
    result = TrainResult(
        global_step=state.global_step, epoch=state.epoch or 0.0, best_metric=state.best_metric,
        best_checkpoint=state.best_model_checkpoint, last_checkpoint=str(last) if last else None,
        preempted=preempted, exit_code=EXIT_PREEMPTED if preempted else (EXIT_UPLOAD_FAILED if failures else 0),
        log_history=list(state.log_history),
    )
    if not is_main:
        return result
    state.save_to_json(str(output_dir / "trainer_state.json"))
    elapsed = time.monotonic() - started
    if preempted:
        waited = time.monotonic() - preemption.requested_at
        log(f"[train] preempted ({preemption.signal_name}) at step {state.global_step}: checkpoint {last} "
            f"written{' and uploaded' if uploads else ''} {waited:.1f} s after the signal; "
            f"exit code {EXIT_PREEMPTED}; restart with --resume_from_checkpoint auto")
    best_missing = bool(state.best_global_step) and state.best_model_checkpoint is None
    if best_missing and trainer.args.load_best_model_at_end:
        log(f"[train] --load_best_model_at_end: the best checkpoint (step {state.best_global_step}) is not "
            "available here; the final weights are the last ones")
    log(f"[train] done: {state.global_step} steps, epoch {state.epoch or 0:.2f}, {elapsed:.0f} s; "
        f"{_best_text(state)}; last checkpoint {last}")
    if failures:
        log(f"[train] {len(failures)} checkpoint upload(s) failed after retries (see the [upload] lines); "
            f"exit code {EXIT_UPLOAD_FAILED}")
    return result


def _best_text(state) -> str:
    """'best eval_loss 7.1445 at <checkpoint>', naming the step when that checkpoint is not on this machine."""
    if state.best_metric is None:
        return "best eval_loss n/a"
    where = state.best_model_checkpoint or f"step {state.best_global_step} (checkpoint not available here)"
    return f"best eval_loss {state.best_metric:.4f} at {where}"
