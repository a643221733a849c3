#!/usr/bin/env bash
# The README's main job: train on the embedded defaults (tiny base, stdlib data). No downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/dylora-moe train --write_report "$@"
