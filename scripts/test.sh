#!/usr/bin/env bash
# The test command: install (if needed), lint, type-check, run the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Real servers and a real browser in the tests, from Debian's packages: chromium for the results
# page, PostgreSQL for the registry, Redis for Ray's GCS fault tolerance (tests/servers.py finds
# PostgreSQL's binaries under /usr/lib/postgresql/*/bin, where Debian puts them).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; } \
  || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's ${missing[*]} for the tests ..."
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } \
    >/tmp/divsweep-apt.log 2>&1 || { tail -20 /tmp/divsweep-apt.log; exit 1; }
fi
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
if [ $# -gt 0 ]; then
  python -m pytest --durations=25 "$@"
else
  # Modules marked `isolated` start their own multi-node Ray: a pytest process of their own.
  python -m pytest --durations=25 -m "not isolated"
  python -m pytest --durations=10 -m isolated
fi
