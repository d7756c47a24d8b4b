#!/usr/bin/env bash
# The test command: install (if needed), lint, type-check, run the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
ruff check .
mypy
python -m pytest "$@"
