"""pyproject's lower bounds are the versions scripts/test-floors.sh installs, and nothing unused is required."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, str]:
    """name -> specifier of pyproject's runtime dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    parsed = (re.match(r"([A-Za-z0-9_.-]+)(.*)", d.replace(" ", "")) for d in deps)
    return {m.group(1).lower(): m.group(2) for m in parsed}


def _floors() -> dict[str, str]:
    pins = (line.split("#")[0].strip() for line in (ROOT / "scripts" / "floors.txt").read_text().splitlines())
    return dict(pin.lower().split("==") for pin in pins if pin)


def _lower_bound(specifier: str) -> Version | None:
    bounds = [Version(s.version) for s in SpecifierSet(specifier) if s.operator == ">="]
    return bounds[0] if bounds else None


def test_every_pinned_floor_is_pyprojects_lower_bound():
    requirements = _requirements()
    for name, version in _floors().items():
        if name in requirements:
            assert _lower_bound(requirements[name]) == Version(version), (name, requirements[name], version)


def test_the_hugging_face_stack_has_a_tested_floor_and_an_upper_bound_ci_has_run():
    requirements, floors = _requirements(), _floors()
    for name in ("transformers", "accelerate", "datasets", "tokenizers", "safetensors"):
        assert name in floors, f"{name} has no tested floor in scripts/floors.txt"
        assert _lower_bound(requirements[name]) == Version(floors[name]), (name, requirements[name])
    upper = [s for s in SpecifierSet(requirements["transformers"]) if s.operator == "<"]
    assert upper, "transformers needs an upper bound no higher than CI has run"


def test_runtime_dependencies_are_imported_by_the_package():
    """peft and friends belong in the dev extras unless src/ imports them."""
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "dylora_moe").rglob("*.py"))
    imported = set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]+)", source, flags=re.M))
    aliases = {"pyyaml": "yaml"}
    needed_by_transformers = {"accelerate"}  # HF's Trainer requires it; our code reaches it only through Trainer
    for name in set(_requirements()) - needed_by_transformers:
        module = aliases.get(name, name.replace("-", "_"))
        assert module in imported, f"{name} is a runtime dependency, but src/ never imports {module}"


def test_the_installed_versions_are_within_pyprojects_ranges():
    """Whichever venv runs this (the newest allowed, or the floors), it is one pyproject allows."""
    from importlib.metadata import version

    for name, specifier in _requirements().items():
        installed = Version(version(name))
        assert SpecifierSet(specifier).contains(installed, prereleases=True), (name, str(installed), specifier)
