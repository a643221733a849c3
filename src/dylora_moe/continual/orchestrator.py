"""`train_continual`: learn skills one after another, growing the expert pool for novel ones.

An outer loop over `training.run.train`: each (skill, phase) is one ordinary run in its own directory
(`<output_dir>/skill-<i>-<slug>/<phase>/`), started from the previous phase's final checkpoint as a
weights-only resume (a phase has its own learning rate and schedule), with `--grow_experts 1` when the skill
is novel. Every checkpoint, resumption, upload and signal behaviour of a normal run therefore applies per
phase, and `continual_state.json` records which skill and phase come next, so a restart continues mid-sequence.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from dylora_moe.checkpoint.manifest import write_run_config
from dylora_moe.continual.callbacks import ContinualPhase
from dylora_moe.continual.config import DEFAULT_THRESHOLD, ContinualConfig
from dylora_moe.continual.library import SkillLibrary
from dylora_moe.continual.state import ContinualState, SkillRecord
from dylora_moe.errors import UserError
from dylora_moe.processes import log_main
from dylora_moe.training.config import TrainConfig

SEED, CONSOLIDATE = "seed", "consolidate"


@dataclass
class ContinualResult:
    state: ContinualState
    library: SkillLibrary
    exit_code: int
    log_history: list  # every phase's history, steps offset to one global count
    phase_callbacks: list  # the ContinualPhase of each phase run in this call (lrs, routing per step)


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.split("=")[0].replace(",", "+"))[:40]


def phase_dir(output_dir: Path, index: int, spec: str, phase: str) -> Path:
    return output_dir / f"skill-{index}-{_slug(spec)}" / phase


def _phases(ccfg: ContinualConfig) -> list[str]:
    return ([SEED] if ccfg.seed_steps > 0 else []) + [CONSOLIDATE]


def _has_checkpoint(directory: Path) -> bool:
    from dylora_moe.checkpoint.manifest import find_latest_checkpoint

    return directory.is_dir() and find_latest_checkpoint(directory, verify=False, log=lambda *_: None) is not None


class _Embedder:
    """The frozen base, loaded once, for skill embeddings (the adapters never enter the embedding)."""

    def __init__(self, cfg: TrainConfig, ccfg: ContinualConfig, log):
        from dylora_moe.model.loading import load_base_model

        self.cfg, self.ccfg = cfg, ccfg
        self.model, self.tokenizer = load_base_model(cfg.model_name, log=log,
                                                     attn_implementation=cfg.attn_implementation)
        self.model.eval()

    def skill_data(self, spec: str):
        from dylora_moe.data.pipeline import build_datasets

        return build_datasets(dataclasses.replace(self.cfg.data, datasets=spec), self.tokenizer)

    def embed(self, spec: str):
        """(mean hidden state, per-example (sums, counts)) of a seeded sample of the skill's training split."""
        from dylora_moe.continual.embedding import dataset_sample

        sums, counts = dataset_sample(self.model, self.skill_data(spec).train, self.tokenizer.pad_token_id,
                                      sample=self.ccfg.novelty_samples, seed=self.cfg.seed)
        return sums.sum(0) / counts.sum().clamp_min(1), (sums, counts)

    def prototypes(self, spec: str, checkpoint: str, log) -> dict:
        """Gate inputs of the model in `checkpoint` on a sample of the skill's training examples."""
        import torch

        from dylora_moe.continual.prototypes import collect_prototypes
        from dylora_moe.model.loading import load_model_for_inference

        device = "cuda" if torch.cuda.is_available() else None
        model, _ = load_model_for_inference(checkpoint, device=device, log=log)
        return collect_prototypes(model, self.skill_data(spec).train, sample=self.ccfg.embedding_samples,
                                  seed=self.cfg.seed)


def _load_library(output_dir: Path, ccfg: ContinualConfig, embedder: _Embedder, log) -> SkillLibrary:
    if SkillLibrary.exists(output_dir):
        return SkillLibrary.load(output_dir)
    library = SkillLibrary(threshold=ccfg.novelty_threshold, alpha=ccfg.novelty_alpha)
    if ccfg.reference.lower() != "none":
        library.reference = embedder.embed(ccfg.reference)[0]
        log(f"[continual] embeddings centred on the mean hidden state of '{ccfg.reference}'")
    return library


def _decide(index: int, spec: str, state: ContinualState, library: SkillLibrary, embedder: _Embedder,
            output_dir: Path, log) -> SkillRecord:
    mean, sample = embedder.embed(spec)
    embedding = library.centred(mean)
    decision = library.decide(embedding, sample)
    if decision.novel:
        expert = state.num_experts  # the next id: the pool grows by one when this skill starts
    else:
        expert = decision.expert
    library.add(spec, expert, embedding, sample)
    record = SkillRecord(name=spec, expert=expert, novel=decision.novel, similarity=decision.similarity,
                         nearest=decision.nearest, nearest_expert=decision.expert, step_offset=state.total_steps)
    sim = "n/a (empty library)" if decision.similarity is None else f"{decision.similarity:.3f} to {decision.nearest}"
    test = (f"same-skill test p={decision.p_value:.3f} (alpha {library.alpha})" if decision.p_value is not None
            else f"cosine threshold {DEFAULT_THRESHOLD if library.threshold is None else library.threshold}")
    log(f"[continual] skill {index + 1}/{len(state.skills)} {spec}: nearest similarity {sim}, {test} -> "
        f"{'novel: new expert' if decision.novel else 'known: expert'} {expert}")
    library.save(output_dir)
    return record


def phase_data(cfg: TrainConfig, ccfg: ContinualConfig, index: int, skills: list[str]):
    """The DataConfig of skill `index`: its datasets, plus the earlier skills' at a `replay` share.

    Always `interleave`, which splits each dataset into train/eval on its own (seeded by its name): a dataset
    then has the same held-out examples in every phase, so replay never trains on another skill's eval set.
    """
    from dylora_moe.data.registry import parse_datasets

    current = [s.name for s in parse_datasets(skills[index])]
    earlier: list[str] = []
    specs = [skills[index]]
    if ccfg.replay > 0:
        for spec in skills[:index]:
            new = [s for s in parse_datasets(spec) if s.name not in current and s.name not in earlier]
            if new:
                earlier += [s.name for s in new]
                specs.append(",".join(s.name if s.path is None else f"{s.name}={s.path}" for s in new))
    weights = {n: (1.0 - ccfg.replay) / len(current) if earlier else 1.0 / len(current) for n in current}
    weights.update({n: ccfg.replay / len(earlier) for n in earlier})
    return dataclasses.replace(cfg.data, datasets=",".join(specs), mixing="interleave",
                               mix_weights=",".join(f"{n}={w:.6g}" for n, w in weights.items()))


def _routing_targets(data_cfg, state: ContinualState, index: int, embedder: "_Embedder") -> dict[tuple, int]:
    """Token ids of each of the phase's training rows -> the expert of the skill it came from (the phase's data
    is built here with the same config, hence the same rows, as inside the phase's run)."""
    from dylora_moe.continual.callbacks import routing_targets
    from dylora_moe.data.pipeline import build_datasets
    from dylora_moe.data.registry import parse_datasets

    expert_of_source: dict[str, int] = {}
    for record in state.records[:index]:
        expert_of_source.update({s.name: record.expert for s in parse_datasets(record.name)})
    expert_of_source.update({s.name: state.records[index].expert for s in parse_datasets(state.records[index].name)})
    data = build_datasets(data_cfg, embedder.tokenizer)
    return routing_targets(data.train["input_ids"], data.train_sources, expert_of_source)


def _phase_config(cfg: TrainConfig, ccfg: ContinualConfig, state: ContinualState, record: SkillRecord,
                  phase: str, directory: Path, first_phase: bool, index: int) -> TrainConfig:
    lr = cfg.learning_rate
    if phase == SEED:
        lr = ccfg.seed_learning_rate if ccfg.seed_learning_rate is not None else 10 * cfg.learning_rate
    values = dict(
        output_dir=str(directory), learning_rate=lr, data=phase_data(cfg, ccfg, index, state.skills),
        disable_early_stopping=True, load_best_model_at_end=False, mature_after_steps=-1,
        run_name=f"{cfg.run_name or 'continual'}-{directory.parent.name}-{phase}", wandb_checkpoint_artifact=None,
        checkpoint_store=None, grow_experts=0, weights_only_resume=False,
        router_input=cfg.router_input or "sequence",  # skills differ by sequence, not by token (model/router.py)
    )
    if phase == SEED:
        values.update(max_steps=ccfg.seed_steps, warmup_ratio=0.0)
    grow = 1 if (first_phase and record.novel and state.num_experts > 0) else 0
    if _has_checkpoint(directory):  # interrupted inside this phase: continue it exactly
        values.update(resume_from_checkpoint="latest", num_experts=max(state.num_experts, record.expert + 1))
    elif state.last_checkpoint:
        values.update(resume_from_checkpoint=state.last_checkpoint, weights_only_resume=True, grow_experts=grow,
                      num_experts=state.num_experts)
        if grow and ccfg.new_expert_init == "nearest" and record.nearest_expert is not None:
            values.update(grow_experts_from=record.nearest_expert)
    else:
        values.update(resume_from_checkpoint=None, num_experts=1)
    return dataclasses.replace(cfg, **values)


def _offset_history(history: list, offset: int) -> list:
    return [{**entry, "step": entry.get("step", 0) + offset} for entry in history]


def train_continual(cfg: TrainConfig, ccfg: ContinualConfig, log=log_main, extra_callbacks: list | None = None) -> ContinualResult:
    """Learn `ccfg.skills` in order (or continue an interrupted sequence in `cfg.output_dir`)."""
    from dylora_moe.training.run import train

    ccfg.check()
    specs = ccfg.skill_specs()
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if ContinualState.exists(output_dir):
        if not cfg.resume_from_checkpoint:
            raise UserError(f"{output_dir} already holds a continual run; pass --resume_from_checkpoint auto to "
                            "continue it, or choose another --output_dir")
        state = ContinualState.load(output_dir)
        if state.skills != specs:
            raise UserError(f"{output_dir} holds a continual run over skills {state.skills} but --skills gives "
                            f"{specs}; pass the same --skills to continue it")
        log(f"[continual] resuming at skill {state.current + 1}/{len(specs)}"
            + (f" ({specs[state.current]})" if not state.done else " (all done)"))
    else:
        if cfg.resume_from_checkpoint not in (None, "auto"):
            raise UserError("--mode continual resumes only its own runs (--resume_from_checkpoint auto); "
                            f"{output_dir} holds none")
        state = ContinualState(skills=specs)
    # the whole sequence's options (`--config OUTPUT_DIR` re-runs it); each phase's dir holds that phase's own
    write_run_config(output_dir, cfg.run_config(mode="continual", continual=ccfg.to_dict()))
    embedder = None if state.done else _Embedder(cfg, ccfg, log)
    library = SkillLibrary.load(output_dir) if state.done else _load_library(output_dir, ccfg, embedder, log)
    library.threshold, library.alpha = ccfg.novelty_threshold, ccfg.novelty_alpha
    history_path = output_dir / "continual_history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    phase_callbacks: list[ContinualPhase] = []
    phases = _phases(ccfg)
    while not state.done:
        index = state.current
        if len(state.records) <= index:
            state.records.append(_decide(index, specs[index], state, library, embedder, output_dir, log))
            state.save(output_dir)
        record = state.records[index]
        for phase in phases:
            if phase in record.phases_done:
                continue
            directory = phase_dir(output_dir, index, record.name, phase)
            phase_cfg = _phase_config(cfg, ccfg, state, record, phase, directory, first_phase=not record.phases_done,
                                      index=index)
            targets = None
            if ccfg.routing_supervision > 0:
                if embedder is None:
                    embedder = _Embedder(cfg, ccfg, log)
                targets = _routing_targets(phase_cfg.data, state, index, embedder)
            callback = ContinualPhase(skill=record.name, expert=record.expert, novel=record.novel, phase=phase,
                                      library=library, freeze=ccfg.freeze_experts,
                                      mark_mature_at_end=phase == phases[-1], log=log,
                                      routing_supervision=ccfg.routing_supervision, routing_targets=targets,
                                      prototype_routing=ccfg.prototype_routing)
            phase_callbacks.append(callback)
            log(f"[continual] {record.name} / {phase}: lr {phase_cfg.learning_rate:g}, expert {record.expert}")
            result = train(phase_cfg, log=log, extra_callbacks=[callback, *(extra_callbacks or [])])
            if result.preempted or result.exit_code != 0:
                state.save(output_dir)
                return ContinualResult(state, library, result.exit_code, history, phase_callbacks)
            history += _offset_history(result.log_history, state.total_steps)
            history_path.write_text(json.dumps(history))
            state.total_steps += result.global_step
            state.last_checkpoint = result.last_checkpoint
            state.num_experts = max(state.num_experts, record.expert + 1)
            record.phases_done.append(phase)
            record.checkpoint = result.last_checkpoint
            state.save(output_dir)
        if ccfg.prototype_routing > 0 and index + 1 < len(specs) and record.name not in library.prototypes:
            embedder = embedder or _Embedder(cfg, ccfg, log)
            library.prototypes[record.name] = embedder.prototypes(record.name, state.last_checkpoint, lambda m: None)
            library.save(output_dir)
            count = next(iter(library.prototypes[record.name].values())).shape[0]
            log(f"[continual] {record.name}: recorded {count} routing prototypes per router for later skills")
        state.current += 1
        state.save(output_dir)
    log(f"[continual] done: {len(specs)} skills, {state.num_experts} experts, last checkpoint {state.last_checkpoint}")
    return ContinualResult(state, library, 0, history, phase_callbacks)
