#!/usr/bin/env bash
# Creates .venv and installs chromowatch with its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision come from the machine's pip configuration (a local wheel cache here);
# the project's ranges admit torch 2.2 and newer.
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "chromowatch installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
