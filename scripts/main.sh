#!/usr/bin/env bash
# The main job, end to end on the embedded defaults: a private Ray head and the divsweep service
# on 127.0.0.1, a study submitted over REST (default: the fig2a-mini preset), a progress bar
# while it runs, then the result table and the path of the phase diagram.
#
#   bash scripts/main.sh              # fig2a-mini (~15 min on 2 cores)
#   bash scripts/main.sh smoke        # any preset name or spec file
set -euo pipefail
cd "$(dirname "$0")/.."
spec="${1:-fig2a-mini}"
. scripts/serve.sh

id=$(divsweep submit "$spec")
echo "experiment $id: $DIVSWEEP_URL/experiments/$id (Ray dashboard: see $log)"
divsweep watch "$id"

out="$DIVSWEEP_STATE_DIR/reports/$id"
python -m sweeps report "$id" --store "$DIVSWEEP_STATE_DIR/results" --out "$out"
echo "status: $(divsweep status "$id" | python -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
