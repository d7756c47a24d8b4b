#!/usr/bin/env bash
# The main job, end to end on the embedded defaults: a private Ray head and the divsweep service
# on 127.0.0.1, a study submitted over REST (default: the fig2a-mini preset), a progress bar
# while it runs, then the result table and the path of the phase diagram.
#
#   bash scripts/main.sh              # fig2a-mini (~7 min on 2 cores)
#   bash scripts/main.sh smoke        # any preset name or spec file
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

spec="${1:-fig2a-mini}"
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

id=$(divsweep submit "$spec")
echo "experiment $id: $DIVSWEEP_URL/experiments/$id (Ray dashboard: see $log)"
divsweep watch "$id"

out="$DIVSWEEP_STATE_DIR/reports/$id"
python -m sweeps report "$id" --store "$DIVSWEEP_STATE_DIR/results" --out "$out"
echo "status: $(divsweep status "$id" | python -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
