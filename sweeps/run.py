"""``python -m sweeps.run SPEC [--experiment-id ID] [--store URI]``: the Ray job entry point.

Loads the spec (YAML/JSON file, or a preset name), connects to the cluster named by
``RAY_ADDRESS`` (or starts a local Ray), runs the sweep and prints the experiment id. The same
command works under ``ray job submit --working-dir . -- python -m sweeps.run SPEC ...``.
Exit codes: 0 done (individual trials may have failed: see the store), 2 bad spec, 1 other error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sweeps.errors import SweepError
from sweeps.running.driver import run_experiment
from sweeps.specs.presets import load_preset
from sweeps.specs.spec import load_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.run", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("spec", help="a spec file (.yaml/.json) or a preset name")
    parser.add_argument("--experiment-id", default=None, help="id to record results under")
    parser.add_argument("--store", default=None, help="results-store URI (default: the spec's)")
    parser.add_argument("--quiet", action="store_true", help="no Tune progress table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        spec = load_spec(args.spec) if Path(args.spec).suffix else load_preset(args.spec)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201 - a CLI
        return 2
    try:
        exp_id = run_experiment(
            spec, args.experiment_id, args.store, verbose=0 if args.quiet else 1
        )
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)  # noqa: T201 - a CLI
        return 1
    print(f"experiment {exp_id} done")  # noqa: T201 - a CLI
    return 0


if __name__ == "__main__":
    sys.exit(main())
