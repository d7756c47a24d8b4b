#!/usr/bin/env bash
# Every study of the paper, end to end, into docs/RESULTS.md: a private Ray head and the divsweep
# service on 127.0.0.1, then `divsweep reproduce`, which submits the studies over REST one after
# another (progress on stderr), waits for each, and regenerates docs/RESULTS.md (tables, figures
# under docs/img/results/, wall times, the paper's numbers, verdicts) from the results store.
#
#   bash scripts/reproduce.sh                               # every study (hours on 2 cores)
#   bash scripts/reproduce.sh --studies fig2a-mini,noops-mini   # rerun some, keep the others
#   bash scripts/reproduce.sh --smoke                       # seconds per study, into .divsweep/smoke/
#   bash scripts/reproduce.sh --render-only                 # redraw docs/RESULTS.md from the store
#
# Arguments go to `divsweep reproduce` (see `divsweep reproduce --help`). The results store
# lives in $DIVSWEEP_STATE_DIR (default .divsweep/): keep it, docs/results.json points into it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

export DIVSWEEP_STATE_DIR="${DIVSWEEP_STATE_DIR:-$PWD/.divsweep}"
export DIVSWEEP_PORT="${DIVSWEEP_PORT:-8000}"
export DIVSWEEP_URL="http://127.0.0.1:${DIVSWEEP_PORT}"
mkdir -p "$DIVSWEEP_STATE_DIR"
log="$DIVSWEEP_STATE_DIR/serve.log"

divsweep serve --port "$DIVSWEEP_PORT" >"$log" 2>&1 &
serve_pid=$!
# Stop the service (it stops its Ray head) however this script ends.
trap 'kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null || true' EXIT

echo "starting Ray and the service on $DIVSWEEP_URL (log: $log) ..."
for _ in $(seq 1 180); do
  if curl -fsS "$DIVSWEEP_URL/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$serve_pid" 2>/dev/null; then echo "service failed to start:"; tail -20 "$log"; exit 1; fi
  sleep 1
done
curl -fsS "$DIVSWEEP_URL/readyz" >/dev/null || { echo "service not ready after 180 s"; tail -20 "$log"; exit 1; }

divsweep reproduce "$@"
