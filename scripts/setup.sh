#!/usr/bin/env bash
# Create .venv and install divsweep into it, from scratch if needed (idempotent).
# The CPU build of torch goes in first: otherwise the resolver pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"   # "test" adds the test tools
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=".venv/.divsweep-installed${extra:+-$extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".${extra:+[$extra]}"
  touch "$stamp"
fi
