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
  echo "installing divsweep${extra:+[$extra]} into .venv (log: .venv/install.log) ..."
  # pip's and setuptools' chatter goes to the log; it is shown only if the install fails.
  {
    python -m pip install --upgrade pip &&
    { python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"; } &&
    python -m pip install -e ".${extra:+[$extra]}"
  } >.venv/install.log 2>&1 || { tail -40 .venv/install.log; exit 1; }
  touch "$stamp"
fi
