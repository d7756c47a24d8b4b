# Sourced by main.sh and reproduce.sh: set up .venv, start `divsweep serve` (a private Ray head
# and the service on 127.0.0.1) in the background, stop it however the caller ends, and wait
# until it answers /readyz. Exports DIVSWEEP_STATE_DIR, DIVSWEEP_PORT and DIVSWEEP_URL.
bash scripts/setup.sh
. .venv/bin/activate

export DIVSWEEP_STATE_DIR="${DIVSWEEP_STATE_DIR:-$PWD/.divsweep}"
export DIVSWEEP_PORT="${DIVSWEEP_PORT:-8000}"
export DIVSWEEP_URL="http://127.0.0.1:${DIVSWEEP_PORT}"
mkdir -p "$DIVSWEEP_STATE_DIR"
log="$DIVSWEEP_STATE_DIR/serve.log"

divsweep serve --port "$DIVSWEEP_PORT" >"$log" 2>&1 &
serve_pid=$!
# Stop the service (it stops its Ray head) however the calling script ends.
trap 'kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null || true' EXIT

echo "starting Ray and the service on $DIVSWEEP_URL (log: $log) ..."
for _ in $(seq 1 180); do
  if curl -fsS "$DIVSWEEP_URL/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$serve_pid" 2>/dev/null; then echo "service failed to start:"; tail -20 "$log"; exit 1; fi
  sleep 1
done
curl -fsS "$DIVSWEEP_URL/readyz" >/dev/null || { echo "service not ready after 180 s"; tail -20 "$log"; exit 1; }
