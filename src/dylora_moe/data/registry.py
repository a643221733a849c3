"""Dataset names users pass to `--datasets`, their hub ids and row formats, and the spec parser."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dylora_moe.data.formats import ALPACA, MBPP, QUERY_ANSWER, SHAREGPT, STDLIB, RowFormat
from dylora_moe.data.stdlib_mining import STDLIB_SKILLS
from dylora_moe.errors import UserError


@dataclass(frozen=True)
class RegistryEntry:
    """A known dataset: where it lives on the hub and how its rows map to examples."""

    name: str
    hub_id: str | None
    row_format: RowFormat
    hub_config: str | None = None
    hub_splits: tuple[str, ...] = ("train",)


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry("code_alpaca", "sahil2801/CodeAlpaca-20k", ALPACA),
        # all four hub splits are loaded and re-split by task id (the benchmark's test tasks are never trained on)
        RegistryEntry("mbpp", "google-research-datasets/mbpp", MBPP, "full", ("train", "validation", "test", "prompt")),
        RegistryEntry("evol_instruct", "nickrosh/Evol-Instruct-Code-80k-v1", ALPACA),
        RegistryEntry("code_feedback", "m-a-p/CodeFeedback-Filtered-Instruction", QUERY_ANSWER),
        RegistryEntry("python_code_instructions_18k", "iamtarun/python_code_instructions_18k_alpaca", ALPACA),
        RegistryEntry("python_codes_25k", "flytech/python-codes-25k", ALPACA),
        RegistryEntry("python_code_23k_sharegpt", "ajibawa-2023/Python-Code-23k-ShareGPT", SHAREGPT),
        RegistryEntry("stdlib", None, STDLIB),
    )
}


@dataclass(frozen=True)
class DatasetSpec:
    """One item of `--datasets`: `name`, `name=path` or `stdlib:skill`."""

    name: str  # as written before any '=' (also the key of --mix_weights)
    base: str  # registry name, or the name itself for a custom local file
    path: str | None = None
    skill: str | None = None


DATA_DIR_VAR = "DYLORA_DATA_DIR"
MIRROR_SUFFIXES = (".jsonl", ".json", ".parquet")


def local_mirror(base: str) -> str | None:
    """`$DYLORA_DATA_DIR/<name>.jsonl` (or .json, .parquet) standing in for a hub dataset of the registry.

    Why: air-gapped machines (and the tests) run the same `--datasets code_alpaca,mbpp` command lines; the
    file is then loaded exactly as `name=path` would be, so both spellings give the same fingerprint."""
    entry, root = REGISTRY.get(base), os.environ.get(DATA_DIR_VAR, "").strip()
    if not root or entry is None or entry.hub_id is None:
        return None
    directory = Path(root).expanduser()
    if not directory.is_dir():
        raise UserError(f"{DATA_DIR_VAR}={root} is not a directory; point it at a directory of NAME.jsonl files "
                        "(e.g. code_alpaca.jsonl) or unset it")
    return next((str(directory / f"{base}{s}") for s in MIRROR_SUFFIXES if (directory / f"{base}{s}").is_file()),
                None)


def known_names() -> list[str]:
    return list(REGISTRY) + [f"stdlib:{s}" for s in STDLIB_SKILLS]


def parse_datasets(text: str) -> list[DatasetSpec]:
    """Parse `--datasets`; unknown names list the known ones, duplicates are refused."""
    specs: list[DatasetSpec] = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        name, eq, path = (s.strip() for s in item.partition("="))
        base, _, skill = name.partition(":")
        if not name or (eq and not path):
            raise UserError(f"bad --datasets item '{item}'; expected NAME or NAME=PATH, e.g. code_alpaca=data.json")
        if base not in REGISTRY and not path:
            raise UserError(
                f"unknown dataset '{name}'; known: {', '.join(known_names())}; "
                f"or bind any name to a local file: --datasets \"{name}=path/to/file.jsonl\""
            )
        if skill and (base != "stdlib" or skill not in STDLIB_SKILLS):
            raise UserError(f"unknown dataset '{name}'; only stdlib has skills: "
                            f"{', '.join(f'stdlib:{s}' for s in STDLIB_SKILLS)}")
        if any(s.name == name for s in specs):
            raise UserError(f"dataset '{name}' is listed twice in --datasets; list each dataset once")
        path = path or (local_mirror(base) if not skill else None)
        specs.append(DatasetSpec(name=name, base=base, path=path or None, skill=skill or None))
    if not specs:
        raise UserError("--datasets is empty; expected e.g. --datasets stdlib or --datasets code_alpaca,mbpp")
    return specs
