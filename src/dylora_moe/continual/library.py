"""The skill library: embeddings of known skills with their expert ids, and the novelty decision.

Saved as `skill_library.safetensors` (one row per skill, plus each skill's per-example sample) and
`skill_library.json` (names, experts, alpha, threshold) so a checkpoint carries what the model knows and a resumed
sequence decides novelty the same way.

Novelty is decided from the data: a skill is known when a permutation test cannot tell its sample from a known
skill's (`novelty_test.py`, at level `alpha`). A fixed cosine `threshold` decides instead when one is set, and
for skills saved without a sample (libraries written before samples were kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dylora_moe.continual.config import DEFAULT_ALPHA, DEFAULT_THRESHOLD
from dylora_moe.continual.novelty_test import same_skill_test

LIBRARY_WEIGHTS = "skill_library.safetensors"
LIBRARY_JSON = "skill_library.json"


@dataclass
class NoveltyDecision:
    novel: bool
    similarity: float | None  # centred cosine similarity to the nearest known skill (None when it is empty)
    nearest: str | None  # name of the nearest known skill (highest p-value, then highest similarity)
    expert: int | None  # that skill's expert
    p_value: float | None = None  # the same-skill test against the nearest skill (None: decided by threshold)


@dataclass
class SkillLibrary:
    names: list[str] = field(default_factory=list)
    experts: list[int] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)  # centred: skill mean minus `reference`
    threshold: float | None = None  # set: a fixed cosine threshold decides (else the test; this default without samples)
    alpha: float = DEFAULT_ALPHA  # a skill is novel when every known skill's test rejects it at this level
    reference: torch.Tensor | None = None  # mean hidden state of a generic reference corpus (the centre)
    prototypes: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # skill -> router key -> (N, d)
    samples: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # skill -> (sums, counts)

    def expert_of(self, name: str) -> int:
        return self.experts[self.names.index(name)]

    def centred(self, raw: torch.Tensor) -> torch.Tensor:
        """Skill means share a large common direction (cosine ~0.99 between any two code skills); removing
        a generic reference mean leaves what is specific to the skill."""
        raw = raw.detach().float().cpu().reshape(-1)
        return raw - self.reference if self.reference is not None else raw

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, expert: int, embedding: torch.Tensor,
            sample: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """`embedding` is already centred (see `centred`); `sample` is its per-example (sums, counts)."""
        self.names.append(name)
        self.experts.append(int(expert))
        self.embeddings.append(embedding.detach().float().cpu().reshape(-1))
        if sample is not None:
            self.samples[name] = (sample[0].detach().float().cpu(), sample[1].detach().float().cpu())

    def similarities(self, embedding: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of a centred embedding to every known skill."""
        if not self.embeddings:
            return torch.empty(0)
        known = torch.stack(self.embeddings)
        return F.cosine_similarity(known, embedding.detach().float().cpu().reshape(1, -1), dim=-1)

    def decide(self, embedding: torch.Tensor,
               sample: tuple[torch.Tensor, torch.Tensor] | None = None) -> NoveltyDecision:
        """Known when some known skill's same-skill test keeps it (p >= alpha), or, for a skill without a
        sample, when the cosine similarity reaches the threshold; novel otherwise (always, if empty)."""
        sims = self.similarities(embedding)
        if sims.numel() == 0:
            return NoveltyDecision(novel=True, similarity=None, nearest=None, expert=None)
        p_values = [self._p_value(name, sample) for name in self.names]
        threshold = DEFAULT_THRESHOLD if self.threshold is None else self.threshold
        keeps = [p >= self.alpha if p is not None else float(s) >= threshold for p, s in zip(p_values, sims)]
        best = max(range(len(self.names)), key=lambda i: (keeps[i], p_values[i] or 0.0, float(sims[i])))
        return NoveltyDecision(novel=not keeps[best], similarity=float(sims[best]), nearest=self.names[best],
                               expert=self.experts[best], p_value=p_values[best])

    def _p_value(self, name: str, sample: tuple[torch.Tensor, torch.Tensor] | None) -> float | None:
        known = self.samples.get(name)
        if known is None or sample is None or self.threshold is not None:
            return None
        return same_skill_test(known[0], known[1], sample[0], sample[1]).p_value

    def save(self, directory: str | Path) -> list[Path]:
        directory = Path(directory)
        tensors = {"embeddings": torch.stack(self.embeddings).contiguous()} if self.embeddings else {}
        if self.reference is not None:
            tensors["reference"] = self.reference.contiguous()
        for skill, by_router in self.prototypes.items():
            for key, inputs in by_router.items():
                tensors[f"prototypes.{self.names.index(skill)}.{key}"] = inputs.contiguous()
        for skill, (sums, counts) in self.samples.items():
            tensors[f"samples.{self.names.index(skill)}.sums"] = sums.contiguous()
            tensors[f"samples.{self.names.index(skill)}.counts"] = counts.contiguous()
        weights = directory / LIBRARY_WEIGHTS
        save_file(tensors, str(weights), metadata={"format": "dylora-moe-skill-library/1"})
        meta = directory / LIBRARY_JSON
        meta.write_text(json.dumps({"names": self.names, "experts": self.experts, "threshold": self.threshold,
                                   "alpha": self.alpha},
                                   indent=2))
        return [weights, meta]

    @classmethod
    def load(cls, directory: str | Path) -> "SkillLibrary":
        directory = Path(directory)
        meta = json.loads((directory / LIBRARY_JSON).read_text())
        tensors = load_file(str(directory / LIBRARY_WEIGHTS))
        rows = list(tensors["embeddings"].unbind(0)) if "embeddings" in tensors else []
        if len(rows) != len(meta["names"]):
            raise ValueError(f"skill library in {directory}: {len(rows)} embeddings for {len(meta['names'])} names")
        prototypes: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors.items():
            if name.startswith("prototypes."):
                _, index, key = name.split(".", 2)
                prototypes.setdefault(meta["names"][int(index)], {})[key] = tensor
        samples = {name: (tensors[f"samples.{i}.sums"], tensors[f"samples.{i}.counts"])
                   for i, name in enumerate(meta["names"]) if f"samples.{i}.sums" in tensors}
        return cls(names=list(meta["names"]), experts=[int(e) for e in meta["experts"]], embeddings=rows,
                   threshold=meta.get("threshold"), reference=tensors.get("reference"),
                   prototypes=prototypes, samples=samples, alpha=float(meta.get("alpha", DEFAULT_ALPHA)))

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / LIBRARY_JSON).is_file()
