"""``python -m sweeps report ID [--store URI] [--out DIR]``, ``python -m sweeps plan SPEC ...``
and ``python -m sweeps run SPEC ...``.

``report`` prints the per-cell summary table and writes ``<out>/<ID>-phase.png`` (the phase
diagram) and ``<out>/<ID>-summary.csv``; for a threshold search it also prints the estimate, and
for one with ``over`` (the phase boundary) each group's I* with its interval, the slope of log I*
against log N with its interval, and ``<out>/<ID>-frontier.png``.
``plan PRESET_OR_SPEC_FILE [--set dotted.key=value ...] [--throughput TOKENS_PER_S] [--params N]
[--json]`` prints what a sweep would cost before it is submitted (`sweeps.reporting.plan`; no Ray):
trials, examples, tokens, parameters, FLOPs and GPU-hours under a stated throughput assumption. Exit
codes: 0 done, 2 bad spec or preset name, 1 other error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps.errors import SweepError
from sweeps.reporting.frontier import curves_of_rows, fit_frontier
from sweeps.reporting.frontier import png as frontier_png
from sweeps.reporting.plan import plan_report
from sweeps.reporting.plot import plot_experiment
from sweeps.reporting.studies import frontier_run
from sweeps.reporting.tables import (
    experiment_spec,
    results,
    summarize,
    summary,
    threshold_estimate,
)
from sweeps.specs.spec import ExperimentSpec, ThresholdSearch
from sweeps.store import open_store


def report(experiment_id: str, store_uri: str | None, out: Path) -> int:
    store = open_store(store_uri)
    exp = store.get_experiment(experiment_id)
    spec = experiment_spec(experiment_id, store=store)
    print(
        f"experiment {experiment_id} ({exp.name}): {exp.status}; trials "
        + ", ".join(f"{k} {v}" for k, v in store.progress(experiment_id).items() if v)
    )
    table = summary(experiment_id, store=store)
    df = table.to_pandas()
    keep = [c for c in df.columns if not c.endswith(("_mean", "_std"))]  # axes first (`summary`)
    keep += [c for c in df.columns if c.startswith(spec.metric) and c.endswith(("_mean", "_std"))]
    keep += [c for c in df.columns if c.endswith("_mean") and c not in keep]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df[keep].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    search = spec.search
    if isinstance(search, ThresholdSearch) and search.over is None:
        est = threshold_estimate(experiment_id, store=store)
        print(
            f"threshold: smallest {est['axis']} with {est['metric']} >= {est['level']}: "
            f"{est['threshold']} ({est['n_trials']} trials)"
        )
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{experiment_id}-phase.png"
    png.write_bytes(plot_experiment(experiment_id, store=store))
    df.to_csv(out / f"{experiment_id}-summary.csv", index=False)
    print(f"wrote {png}")
    if isinstance(search, ThresholdSearch) and search.over is not None:
        print(frontier_report(experiment_id, spec, store, out))
    return 0


def frontier_report(experiment_id: str, spec: ExperimentSpec, store: Any, out: Path) -> str:
    """The phase boundary of a threshold search with ``over``: each group's I* with its
    interval, the slope of log I* against log N with its interval, and ``<ID>-frontier.png``."""
    search = spec.search
    assert isinstance(search, ThresholdSearch) and search.over and search.over.field
    params = {search.over.field, search.axis, "seed"}
    rows = summarize(results(experiment_id, store=store), params, per_seed=True).to_pylist()
    curves = curves_of_rows(rows, search.over.field, search.axis, f"{spec.metric}_values")
    fit = fit_frontier(curves, search.level)
    png = out / f"{experiment_id}-frontier.png"
    title = f"{spec.name} ({experiment_id}): I* against {search.over.field}"
    png.write_bytes(frontier_png(fit, title, x_label=search.over.field))
    lines = [
        f"phase boundary: crossing of {spec.metric} = {search.level} at each {search.over.field}"
    ]
    for n in fit.budgets:
        lines.append(f"  {search.over.field}={n:g}: I* = {fit.text(n)}")
    run = frontier_run(spec, len(store.get_trials(experiment_id)))
    lines += [
        f"  slope of log I* on log {search.over.field}: {fit.slope.text()}",
        f"  trials: {run.search.n_trials} against {run.grid_trials} for a grid at the same step "
        f"(x{search.resolution:g}, {search.replicates} seeds a point) at every budget",
        f"wrote {png}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print the summary and write the phase diagram")
    rep.add_argument("experiment_id")
    rep.add_argument("--store", default=None, help="results-store URI")
    rep.add_argument("--out", default=".", type=Path, help="directory for the PNG and CSV")
    pln = sub.add_parser("plan", help="print a sweep's trials, tokens, FLOPs and GPU-hours")
    pln.add_argument("spec", help="a preset name or a spec file (.yaml/.json)")
    pln.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set train.epochs=2 (repeatable)",
    )
    pln.add_argument(
        "--throughput",
        type=float,
        default=None,
        metavar="TOKENS_PER_S",
        help="measured training tokens/s per GPU (default: an H100 at 40%% MFU)",
    )
    pln.add_argument(
        "--params",
        type=float,
        default=None,
        metavar="N",
        help="model parameters, for a pretrained checkpoint that is not on disk",
    )
    pln.add_argument("--json", action="store_true", help="print the plan as JSON")
    run = sub.add_parser("run", help="same as python -m sweeps.run")
    run.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "run":
        from sweeps.run import main as run_main  # imports Ray: report and plan run without it

        return run_main(args.rest)
    if args.command == "plan":
        try:
            print(plan_report(args.spec, args.sets, args.throughput, args.params, args.json))
        except SweepError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        return report(args.experiment_id, args.store, args.out)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
