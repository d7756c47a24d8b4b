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
. scripts/serve.sh

divsweep reproduce "$@"
