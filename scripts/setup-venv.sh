#!/usr/bin/env bash
# Creates a venv (./.venv unless DYLORA_VENV names another) with the project and its test tools. Idempotent and
# quick when nothing changed. On machines without torch it installs the CPU wheel pin first, so the `torch>=`
# range in pyproject.toml does not pull several GB of CUDA wheels. GPU users: install your torch first.
# DYLORA_CONSTRAINTS=FILE installs under pip constraints (scripts/floors.txt: the lowest allowed versions), and
# DYLORA_EXTRAS picks the extras (default dev: everything the tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${DYLORA_VENV:-.venv}
EXTRAS=${DYLORA_EXTRAS-dev}
CONSTRAINTS=${DYLORA_CONSTRAINTS:-}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY=$VENV/bin/python
stamp=$VENV/.dylora-installed
want=$(cat pyproject.toml scripts/setup-venv.sh ${CONSTRAINTS:+"$CONSTRAINTS"} | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "[setup] installing into $VENV${CONSTRAINTS:+ under $CONSTRAINTS} (first run takes ~2 minutes)" >&2
quiet() { "$@" 2>&1 | grep -v '^WARNING: Location' >&2 || true; }
quiet "$VPY" -m pip install -q --upgrade pip
if ! "$VPY" -c 'import torch' 2>/dev/null; then
  quiet "$VPY" -m pip install -q "torch==${DYLORA_TORCH_PIN:-2.13.0}"
fi
target=".${EXTRAS:+[$EXTRAS]}"
quiet "$VPY" -m pip install -q ${CONSTRAINTS:+-c "$CONSTRAINTS"} -e "$target" "pytest>=8"
"$VPY" -c 'import dylora_moe, torch, transformers'
if [ -n "$CONSTRAINTS" ]; then  # the constraints must have been met exactly, or the run proves nothing
  "$VPY" - "$CONSTRAINTS" <<'PY'
import sys
from importlib.metadata import version
pins = [line.split("#")[0].strip().split("==") for line in open(sys.argv[1])]
wrong = [f"{name} {version(name)} (want {want})" for name, want in (p for p in pins if len(p) == 2)
         if version(name) != want]
sys.exit(f"[setup] not the pinned versions: {', '.join(wrong)}" if wrong else 0)
PY
fi
echo "$want" > "$stamp"
