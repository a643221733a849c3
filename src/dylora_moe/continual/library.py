"""The skill library: embeddings of known skills with their expert ids, and the novelty decision.

Saved as `skill_library.safetensors` (one row per skill) plus `skill_library.json` (names, experts, the
threshold) so a checkpoint carries what the model knows and a resumed sequence decides novelty the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dylora_moe.continual.config import DEFAULT_THRESHOLD

LIBRARY_WEIGHTS = "skill_library.safetensors"
LIBRARY_JSON = "skill_library.json"


@dataclass
class NoveltyDecision:
    novel: bool
    similarity: float | None  # max cosine similarity to the library (None when it is empty)
    nearest: str | None  # name of the most similar known skill
    expert: int | None  # that skill's expert


@dataclass
class SkillLibrary:
    names: list[str] = field(default_factory=list)
    experts: list[int] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)  # centred: skill mean minus `reference`
    threshold: float = DEFAULT_THRESHOLD
    reference: torch.Tensor | None = None  # mean hidden state of a generic reference corpus (the centre)
    prototypes: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # skill -> router key -> (N, d)

    def expert_of(self, name: str) -> int:
        return self.experts[self.names.index(name)]

    def centred(self, raw: torch.Tensor) -> torch.Tensor:
        """Skill means share a large common direction (cosine ~0.99 between any two code skills); removing
        a generic reference mean leaves what is specific to the skill."""
        raw = raw.detach().float().cpu().reshape(-1)
        return raw - self.reference if self.reference is not None else raw

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, expert: int, embedding: torch.Tensor) -> None:
        """`embedding` is already centred (see `centred`)."""
        self.names.append(name)
        self.experts.append(int(expert))
        self.embeddings.append(embedding.detach().float().cpu().reshape(-1))

    def similarities(self, embedding: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of a centred embedding to every known skill."""
        if not self.embeddings:
            return torch.empty(0)
        known = torch.stack(self.embeddings)
        return F.cosine_similarity(known, embedding.detach().float().cpu().reshape(1, -1), dim=-1)

    def decide(self, embedding: torch.Tensor) -> NoveltyDecision:
        """Novel when the library is empty or the best cosine similarity is below the threshold."""
        sims = self.similarities(embedding)
        if sims.numel() == 0:
            return NoveltyDecision(novel=True, similarity=None, nearest=None, expert=None)
        best = int(sims.argmax())
        similarity = float(sims[best])
        return NoveltyDecision(novel=similarity < self.threshold, similarity=similarity,
                               nearest=self.names[best], expert=self.experts[best])

    def save(self, directory: str | Path) -> list[Path]:
        directory = Path(directory)
        tensors = {"embeddings": torch.stack(self.embeddings).contiguous()} if self.embeddings else {}
        if self.reference is not None:
            tensors["reference"] = self.reference.contiguous()
        for skill, by_router in self.prototypes.items():
            for key, inputs in by_router.items():
                tensors[f"prototypes.{self.names.index(skill)}.{key}"] = inputs.contiguous()
        weights = directory / LIBRARY_WEIGHTS
        save_file(tensors, str(weights), metadata={"format": "dylora-moe-skill-library/1"})
        meta = directory / LIBRARY_JSON
        meta.write_text(json.dumps({"names": self.names, "experts": self.experts, "threshold": self.threshold},
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
        return cls(names=list(meta["names"]), experts=[int(e) for e in meta["experts"]], embeddings=rows,
                   threshold=float(meta.get("threshold", DEFAULT_THRESHOLD)), reference=tensors.get("reference"),
                   prototypes=prototypes)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / LIBRARY_JSON).is_file()
