#!/usr/bin/env bash
# The resume and generation tests under the lowest versions pyproject.toml allows for the Hugging Face stack
# (scripts/floors.txt), in a venv of their own (.venv-floors): every floor in pyproject is a version CI has run.
# tests/test_dependency_floors.py keeps floors.txt equal to pyproject's lower bounds. CI runs this after test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export DYLORA_VENV=.venv-floors DYLORA_CONSTRAINTS=scripts/floors.txt DYLORA_EXTRAS=""
exec bash scripts/test.sh tests/test_dependency_floors.py tests/test_training_resume.py tests/test_resumption.py \
  tests/test_generate_cli.py tests/test_generation_fast_path.py "$@"
