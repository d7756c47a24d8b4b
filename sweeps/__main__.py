"""``python -m sweeps report ID [--store URI] [--out DIR]`` and ``python -m sweeps run SPEC ...``.

``report`` prints the per-cell summary table and writes ``<out>/<ID>-phase.png`` (the phase
diagram) and ``<out>/<ID>-summary.csv``; for a threshold search it also prints the estimate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweeps.errors import SweepError


def report(experiment_id: str, store_uri: str | None, out: Path) -> int:
    import pandas as pd

    from sweeps.plot import plot_experiment
    from sweeps.spec import ThresholdSearch
    from sweeps.store import open_store
    from sweeps.tables import experiment_spec, summary, threshold_estimate

    store = open_store(store_uri)
    exp = store.get_experiment(experiment_id)
    spec = experiment_spec(experiment_id, store=store)
    print(f"experiment {experiment_id} ({exp.name}): {exp.status}; trials "
          + ", ".join(f"{k} {v}" for k, v in store.progress(experiment_id).items() if v))
    table = summary(experiment_id, store=store)
    df = table.to_pandas()
    keep = [c for c in df.columns if not c.endswith(("_mean", "_std"))]
    keep += [c for c in df.columns
             if c.startswith(spec.metric) and c.endswith(("_mean", "_std"))]
    keep += [c for c in df.columns if c.endswith("_mean") and c not in keep]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df[keep].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if isinstance(spec.search, ThresholdSearch):
        est = threshold_estimate(experiment_id, store=store)
        print(f"threshold: smallest {est['axis']} with {est['metric']} >= {est['level']}: "
              f"{est['threshold']} ({est['n_trials']} trials)")
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{experiment_id}-phase.png"
    png.write_bytes(plot_experiment(experiment_id, store=store))
    df.to_csv(out / f"{experiment_id}-summary.csv", index=False)
    print(f"wrote {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print the summary and write the phase diagram")
    rep.add_argument("experiment_id")
    rep.add_argument("--store", default=None, help="results-store URI")
    rep.add_argument("--out", default=".", type=Path, help="directory for the PNG and CSV")
    run = sub.add_parser("run", help="same as python -m sweeps.run")
    run.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "run":
        from sweeps.run import main as run_main

        return run_main(args.rest)
    try:
        return report(args.experiment_id, args.store, args.out)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
