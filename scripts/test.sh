#!/usr/bin/env bash
# The test command: install (if needed), lint, type-check, run the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The results page is tested in a real headless browser: Debian's chromium.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the browser test ..."
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } \
    >/tmp/divsweep-apt.log 2>&1 || { tail -20 /tmp/divsweep-apt.log; exit 1; }
fi
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
