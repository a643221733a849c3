"""`train(config)`: the library entry point behind `dylora-moe train`.

Order of work, chosen so that mistakes cost nothing: resolve and verify the resume source, check the new
command against the checkpoint's model config, then load the base, build data and train. Training arguments,
datasets and hardware always come from the new command; the checkpoint supplies model state, optimizer,
schedule, step/epoch, best metric, early-stopping counter and RNG.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from dylora_moe.errors import UserError
from dylora_moe.processes import is_main_process, log_main
from dylora_moe.training.config import TrainConfig


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


def _model_config(cfg: TrainConfig):
    from dylora_moe.model.config import DyLoRAConfig

    targets = [t.strip() for t in cfg.target_modules.split(",") if t.strip()] if cfg.target_modules else None
    return DyLoRAConfig(
        num_experts=cfg.num_experts, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=targets, top_k=cfg.top_k, router_temperature=cfg.router_temperature,
        router_input=cfg.router_input or "token", balance_coefficient=cfg.balance_coefficient, base_model=cfg.model_name,
    )


def _check_flags(cfg: TrainConfig) -> None:
    cfg.check()
    _check_datasets(cfg.data.datasets)
    base_quantization(cfg)  # bad quantization options (or no bitsandbytes) fail before anything loads
    if cfg.checkpoint_store:
        from dylora_moe.checkpoint.stores.uri import check_local_store

        check_local_store(cfg.checkpoint_store, "--checkpoint_store", must_exist=False)
    artifact = cfg.resume_artifact()
    if artifact and cfg.resume_from_checkpoint not in (None, "auto"):
        raise UserError("both --resume_from_checkpoint and --wandb_checkpoint_artifact were given; pass one")


def base_quantization(cfg: TrainConfig):
    """The `Quantization` of the frozen base this run asks for (None: full precision)."""
    from dylora_moe.model.quantization import quantization_from_flags

    return quantization_from_flags(cfg.load_in_4bit, cfg.load_in_8bit, cfg.bnb_4bit_compute_dtype, cfg.bf16, cfg.fp16)


def _check_datasets(text: str) -> None:
    """Unknown names and hub datasets while the hub is offline fail before any model is loaded."""
    from dylora_moe.data.loading import hub_offline, hub_unreachable_error
    from dylora_moe.data.registry import REGISTRY, parse_datasets

    for spec in parse_datasets(text):
        hub_id = REGISTRY[spec.base].hub_id if spec.base in REGISTRY else None
        if not spec.path and hub_id and hub_offline():
            raise hub_unreachable_error(spec.name, hub_id)


def _check_against_checkpoint(cfg: TrainConfig, new_config, resume_dir: Path) -> object:
    """Compare the new command with the checkpoint's model config before any training; returns the saved config."""
    from dylora_moe.model.adapter_io import check_compatible
    from dylora_moe.model.config import DyLoRAConfig

    saved = DyLoRAConfig.load(resume_dir)
    candidate = DyLoRAConfig.from_dict(new_config.to_dict())
    if cfg.grow_experts:
        candidate.num_experts = saved.num_experts
    if not candidate.target_modules:
        candidate.target_modules = saved.target_modules
    if cfg.router_input is None:
        candidate.router_input = saved.router_input
    check_compatible(saved, candidate, str(resume_dir))
    if not cfg.weights_only_resume:
        needed = ["optimizer.pt", "scheduler.pt", "trainer_state.json", "dylora_state.json"]
        missing = [n for n in needed if not (resume_dir / n).is_file()]
        if missing:
            raise UserError(
                f"checkpoint {resume_dir} has no {', '.join(missing)}: it cannot continue the run exactly; "
                "pass --weights_only_resume to load only the experts and start optimizer and schedule fresh"
            )
    return saved


def _steps_per_epoch(num_examples: int, batch: int, world: int, grad_accum: int) -> int:
    len_dataloader = math.ceil(num_examples / (batch * world))
    return max(len_dataloader // grad_accum + int(len_dataloader % grad_accum > 0), 1)


def _train_collator(cfg: TrainConfig, tokenizer):
    """Padding-free rows with --packing (for evaluation too: the losses are the same), right padding otherwise."""
    if cfg.packing:
        from dylora_moe.data.packing import PackingCollator

        return PackingCollator()
    from dylora_moe.data.collator import CausalLMCollator

    return CausalLMCollator(tokenizer.pad_token_id)


def train(cfg: TrainConfig, log=log_main, extra_callbacks: list | None = None) -> TrainResult:
    """Train (or resume) a DyLoRA-MoE model as configured; returns a summary. Raises UserError on bad input.

    The main process holds the output directory's run lock throughout (a second run into it is refused)."""
    from dylora_moe.training.run_lock import run_lock

    _check_flags(cfg)
    with run_lock(cfg.output_dir, enabled=is_main_process()):
        return _train(cfg, log, extra_callbacks)


def _train(cfg: TrainConfig, log, extra_callbacks: list | None) -> TrainResult:
    started = time.monotonic()
    import torch
    from transformers import TrainingArguments, set_seed

    from dylora_moe.training.resume_source import resolve_resume
    from dylora_moe.data.pipeline import build_datasets
    from dylora_moe.model.adapter_io import load_adapter
    from dylora_moe.model.loading import build_model
    from dylora_moe.model.quantization import describe as describe_quantization
    from dylora_moe.training.callbacks import EXIT_PREEMPTED, MaturitySchedule, PatienceEarlyStopping, PreemptionHandler
    from dylora_moe.training.progress import DataPositionTracker, FinalStepSave, RunEvents
    from dylora_moe.training.resume_plan import DataPosition, plan_resume
    from dylora_moe.training.state import DyLoRATrainingState
    from dylora_moe.training.trainer import DyLoRATrainer
    from dylora_moe.checkpoint.upload_setup import EXIT_UPLOAD_FAILED
    from dylora_moe.training.tracking import setup_tracking

    output_dir = Path(cfg.output_dir)
    eval_steps = cfg.eval_steps or cfg.save_steps
    mixed = {"bf16": cfg.bf16, "fp16": cfg.fp16}
    tracking = setup_tracking(cfg, log=log)
    args = TrainingArguments(
        output_dir=str(output_dir), run_name=cfg.run_name, seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.train_batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        eval_strategy="steps", eval_steps=eval_steps,
        load_best_model_at_end=cfg.load_best_model_at_end, metric_for_best_model="eval_loss",
        greater_is_better=False, remove_unused_columns=False, prediction_loss_only=True,
        dataloader_num_workers=0, report_to=tracking.report_to, activation_checkpointing=cfg.gradient_checkpointing,
        ddp_find_unused_parameters=False, use_cpu=not torch.cuda.is_available(), **mixed,
    )
    is_main = args.process_index == 0

    # 1. resume source: resolved and verified before anything expensive
    with args.main_process_first(desc="resolve checkpoint"):
        resume = resolve_resume(cfg, log=log)
    new_config = _model_config(cfg)
    saved_config = _check_against_checkpoint(cfg, new_config, resume.path) if resume.path else None
    if saved_config is not None and not new_config.target_modules:
        new_config.target_modules = saved_config.target_modules
    if saved_config is not None and cfg.grow_experts:
        new_config.num_experts = saved_config.num_experts
    if saved_config is not None and cfg.router_input is None:
        new_config.router_input = saved_config.router_input

    if is_main:
        from dylora_moe.checkpoint.manifest import clean_stale_temp_dirs, incomplete_reason, list_checkpoints
        from dylora_moe.training.output_dir import claim_output_dir

        claim_output_dir(cfg, resume.path, log=log)
        clean_stale_temp_dirs(output_dir, log=lambda m: log(f"[checkpoint] {m}"))
        for step, path in list_checkpoints(output_dir):
            if incomplete_reason(path):
                log(f"[checkpoint] ignoring {path}: {incomplete_reason(path)}")

    # 2. model and data
    set_seed(cfg.seed)
    model, tokenizer = build_model(cfg.model_name, new_config, log=log, quantization=base_quantization(cfg),
                                   attn_implementation=cfg.attn_implementation, training=True)
    model.label_smoothing = cfg.label_smoothing
    full_resume = resume.path is not None and not cfg.weights_only_resume
    if resume.path is not None:
        load_adapter(model, resume.path)
        if cfg.grow_experts:
            new_ids = model.add_experts(cfg.grow_experts)
            if cfg.grow_experts_from is not None:
                if not 0 <= cfg.grow_experts_from < new_ids[0]:
                    raise UserError(f"--grow_experts_from {cfg.grow_experts_from} is not an existing expert; "
                                    f"the checkpoint has experts 0..{new_ids[0] - 1}")
                for new_id in new_ids:
                    model.copy_expert(cfg.grow_experts_from, new_id)
                log(f"[train] new experts {new_ids} start as copies of expert {cfg.grow_experts_from}")
            log(f"[train] grew the expert pool by {cfg.grow_experts}: new immature experts {new_ids}")
    with args.main_process_first(desc="build datasets"):
        data = build_datasets(cfg.data, tokenizer)
    if len(data.train) == 0:
        raise UserError(f"the training set is empty after subsetting (--training_subset {cfg.data.training_subset})")
    if len(data.eval) == 0:
        if cfg.load_best_model_at_end:
            raise UserError("--load_best_model_at_end needs an eval set, but it is empty; raise --eval_fraction "
                            "or --max_seq_length, or drop --load_best_model_at_end")
        from transformers.trainer_utils import IntervalStrategy

        args.eval_strategy = IntervalStrategy.NO  # nothing to evaluate: no evaluation, no early stopping
    from dylora_moe.data.pipeline import dropped_rows_lines

    for line in dropped_rows_lines(data.stats):
        log(f"[data] {line}")
    for split in ("train", "eval"):
        st = data.stats[split]
        log(f"[data] {split}: {st['kept']} examples from {', '.join(data.sources)}; {st['truncated']} truncated at "
            f"{cfg.data.max_seq_length} tokens, {st['dropped_truncated'] + st['dropped_prompt_too_long']} dropped")
    log(f"[data] fingerprint {data.fingerprint[:12]}")

    # 3. plan: steps, data position, schedule
    world = args.world_size
    spe = _steps_per_epoch(len(data.train), cfg.train_batch_size, world, cfg.gradient_accumulation_steps)
    global_batch = cfg.train_batch_size * cfg.gradient_accumulation_steps * world
    dylora_state = DyLoRATrainingState()
    plan = None
    if full_resume:
        dylora_state = DyLoRATrainingState.load(resume.path)
        if cfg.grow_experts:
            dylora_state.early_stopping.counter = 0
        plan = plan_resume(
            DataPosition.from_dict(dylora_state.data_position), steps_per_epoch=spe,
            grad_accum=cfg.gradient_accumulation_steps, global_batch=global_batch, num_epochs=cfg.num_epochs,
            max_steps=cfg.max_steps, dataset_fingerprint=data.fingerprint, world_size=world,
        )
        log(f"[train] {plan.message}")
        total_steps = plan.max_steps
    else:
        total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * spe)
        if resume.path is not None:
            log(f"[train] weights-only resume from {resume.label}: optimizer and LR schedule start fresh at step 0")
    args.max_steps = total_steps
    if full_resume and cfg.grow_experts:
        log("[train] --grow_experts: the optimizer keeps the state of existing parameters; new experts start fresh")

    maturity_step = cfg.mature_after_steps
    if maturity_step is None:
        maturity_step = math.ceil(cfg.maturity_ratio * total_steps) if cfg.maturity_ratio < 1 else None
    elif maturity_step < 0:
        maturity_step = None
    dylora_state.maturity_step = maturity_step

    # 4. trainer and callbacks
    preemption = PreemptionHandler(log=log)
    tracker = DataPositionTracker(
        steps_per_epoch=spe, global_batch=global_batch, num_examples=len(data.train),
        fingerprint=data.fingerprint, world_size=world,
        epoch=plan.epochs_trained if plan else 0,
        steps_in_epoch=(plan.batches_to_skip // cfg.gradient_accumulation_steps) if plan else 0,
    )
    from dylora_moe.training.divergence import NonFiniteGuard

    callbacks = [NonFiniteGuard(model), tracker, MaturitySchedule(model, maturity_step, log=log), preemption,
                 FinalStepSave()]
    if not cfg.disable_early_stopping and len(data.eval) > 0:
        callbacks.append(PatienceEarlyStopping(cfg.early_stopping_patience, dylora_state.early_stopping, log=log))
    callbacks.append(RunEvents(resume, plan, log=log))
    uploads = tracking.upload_callback(is_main, log=log)  # background; only the main process uploads
    if uploads is not None:
        callbacks.append(uploads)
    if cfg.eval_benchmarks:
        from dylora_moe.eval.callback import BenchmarkEvalCallback

        callbacks.append(BenchmarkEvalCallback(
            tokenizer, cfg.eval_benchmarks, output_dir, when=cfg.eval_benchmarks_when, log=log,
            limit=cfg.eval_benchmarks_limit, max_new_tokens=cfg.eval_max_new_tokens, mbpp_path=cfg.eval_mbpp_path,
        ))
    if cfg.write_report or tracking.wandb_run is not None:
        from dylora_moe.report.callback import ReportCallback

        callbacks.append(ReportCallback(log=log))
    callbacks += extra_callbacks or []

    if cfg.packing and any(callable(getattr(cb, "wrap_collator", None)) for cb in callbacks):
        raise UserError("--packing puts several examples in one row, but this mode adds per-sequence inputs "
                        "(skill-supervised routing); drop --packing or use --group_by_length")
    run_config = cfg.to_dict()

    def metadata() -> dict:
        return {
            "global_step": trainer.state.global_step, "epoch": trainer.state.epoch,
            "best_metric": trainer.state.best_metric, "best_global_step": trainer.state.best_global_step,
            "run_id": tracking.run_id, "run_name": cfg.run_name, "base_model": new_config.base_model,
            "num_experts": model.num_experts, "lora_r": new_config.lora_r,
            "maturity": [bool(x) for x in model.maturity.tolist()], "datasets": data.sources,
            "dataset_fingerprint": data.fingerprint, "world_size": world,
            "base_quantization": describe_quantization(model.base_model),
        }

    trainer = DyLoRATrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval if len(data.eval) else None,
        data_collator=_train_collator(cfg, tokenizer), processing_class=tokenizer, callbacks=callbacks,
        dylora_state=dylora_state, run_config=run_config, metadata_fn=metadata, log=log,
    )
    trainer.resume_plan = plan
    if cfg.group_by_length:
        from dylora_moe.data.length_sampler import SeededLengthGroupedSampler

        lengths = [len(ids) for ids in data.train["input_ids"]]
        trainer.train_sampler = SeededLengthGroupedSampler(lengths, cfg.train_batch_size, cfg.seed)
    from dylora_moe.training.distributed import check_supported_parallelism

    check_supported_parallelism(trainer)  # FSDP/DeepSpeed would shard what the checkpoint writer expects whole
    trainer.save_total_limit = cfg.save_total_limit
    trainer.position_fn = tracker.position
    log(f"[train] {model.num_experts} experts x r={new_config.lora_r} on {new_config.target_modules}: "
        f"{model.trainable_parameter_count():,} trainable parameters; {total_steps} steps planned "
        f"({spe} per epoch, global batch {global_batch}); experts mature at step {maturity_step}")

    # 5. train
    preemption.install()
    trained = False
    try:
        trainer.train(resume_from_checkpoint=str(resume.path) if full_resume else None)
        trained = True
    finally:
        preemption.uninstall()
        failures = tracking.finish(uploads, log=log, failed=not trained)  # waits for pending uploads

    # 6. summary
    from dylora_moe.checkpoint.manifest import find_latest_checkpoint

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
    if is_main:
        state.save_to_json(str(output_dir / "trainer_state.json"))
        elapsed = time.monotonic() - started
        best = f"{state.best_metric:.4f}" if state.best_metric is not None else "n/a"
        if preempted:
            waited = time.monotonic() - preemption.requested_at
            log(f"[train] preempted ({preemption.signal_name}) at step {state.global_step}: checkpoint {last} "
                f"written{' and uploaded' if uploads else ''} {waited:.1f} s after the signal; "
                f"exit code {EXIT_PREEMPTED}; restart with --resume_from_checkpoint auto")
        log(f"[train] done: {state.global_step} steps, epoch {state.epoch or 0:.2f}, {elapsed:.0f} s; "
            f"best eval_loss {best} at {state.best_model_checkpoint}; last checkpoint {last}")
        if failures:
            log(f"[train] {len(failures)} checkpoint upload(s) failed after retries (see the [upload] lines); "
                f"exit code {EXIT_UPLOAD_FAILED}")
    # Other ranks leave only once the main process has uploaded and logged: under torchrun a worker that exits
    # first with 143 (preempted) counts as failed, and torchrun then SIGTERMs the still-uploading main process.
    trainer.accelerator.wait_for_everyone()
    return result
