"""hub_offline: each caller honours the variables its library honours."""

from __future__ import annotations

import pytest

from dylora_moe.hub import hub_offline

VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def clean_env(monkeypatch):
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var, datasets, models", [
    ("HF_HUB_OFFLINE", True, True), ("HF_DATASETS_OFFLINE", True, False), ("TRANSFORMERS_OFFLINE", False, True),
])
def test_each_variable_reaches_its_library(clean_env, var, datasets, models):
    assert (hub_offline(), hub_offline(for_models=True)) == (False, False)
    clean_env.setenv(var, "1")
    assert (hub_offline(), hub_offline(for_models=True)) == (datasets, models)


@pytest.mark.parametrize("value, offline", [("1", True), ("true", True), (" YES ", True), ("on", True),
                                            ("0", False), ("", False), ("false", False)])
def test_values_are_read_as_huggingface_hub_reads_them(clean_env, value, offline):
    clean_env.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline(for_models=True) is offline
