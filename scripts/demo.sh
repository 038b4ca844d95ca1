#!/usr/bin/env bash
# Set up (venv + packages, torch CPU build when available) and run `cloudrec demo`.
# Extra arguments go to `cloudrec demo` (e.g. --bucket s3://b/prefix --ranks 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[demo]'
# torch: the CPU build of 2.13.0 (installs offline here); the demo still runs without it
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0 \
  || echo "[demo] torch not installable here: the demo will iterate instead of training"
exec .venv/bin/cloudrec demo "$@"
