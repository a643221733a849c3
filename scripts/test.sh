#!/usr/bin/env bash
# The test command of the README and of CI: installs what it needs, then runs the whole suite.
# With CI set, every cache the project or its libraries keep (mined stdlib data, artifact downloads, W&B and
# Hugging Face dirs) goes to a fresh .ci-cache/ inside the clone: each run starts from nothing, like a new machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
if [ -n "${CI:-}" ]; then
  root="$PWD/.ci-cache"
  rm -rf "$root"
  mkdir -p "$root"/{dylora,hf/datasets,wandb/cache,wandb/config,wandb/data,xdg}
  export DYLORA_CACHE_DIR="$root/dylora" HF_HOME="$root/hf" HF_DATASETS_CACHE="$root/hf/datasets" \
    WANDB_DIR="$root/wandb" WANDB_CACHE_DIR="$root/wandb/cache" WANDB_CONFIG_DIR="$root/wandb/config" \
    WANDB_DATA_DIR="$root/wandb/data" XDG_CACHE_HOME="$root/xdg" MPLCONFIGDIR="$root/xdg/matplotlib"
  unset DYLORA_MOE_CACHE_DIR
  echo "[test] CI: caches in $root (fresh)" >&2
fi
"${DYLORA_VENV:-.venv}/bin/python" -c 'from importlib.metadata import version as v; print("[test] " + ", ".join(f"{n} {v(n)}" for n in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "safetensors")))' >&2
exec "${DYLORA_VENV:-.venv}/bin/python" -m pytest "$@"
