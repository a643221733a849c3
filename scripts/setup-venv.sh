#!/usr/bin/env bash
# Creates ./.venv with the project and its test tools. Idempotent and quick when nothing changed.
# On machines without torch it installs the CPU wheel pin first, so the `torch>=` range in
# pyproject.toml does not pull several GB of CUDA wheels. GPU users: install your torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=.venv/.dylora-installed
want=$(cat pyproject.toml scripts/setup-venv.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "[setup] installing into .venv (first run takes ~2 minutes)" >&2
"$VPY" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
if ! "$VPY" -c 'import torch' 2>/dev/null; then
  "$VPY" -m pip install -q "torch==${DYLORA_TORCH_PIN:-2.13.0}" 2>&1 | grep -v '^WARNING: Location' >&2 || true
fi
"$VPY" -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$VPY" -c 'import dylora_moe, torch, transformers' 
echo "$want" > "$stamp"
