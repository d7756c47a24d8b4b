"""What the results page draws, as plain JSON: the phase diagram, the heat map, the threshold
estimate, the phase boundary of a search with ``over`` (I* against the budget), every trial's
learning curve and the trials' states.

The page's charts are drawn by Plotly in the browser (`service.routes.page`); this module only
decides *what* to draw from a `sweeps.reporting.tables.results` table, the trials and the spec, so
the same answer serves the page, a notebook (``GET /v1/experiments/{id}/charts``) and tests.
Running trials count with their latest report, so the diagram fills in while a sweep runs.

Example (a 2-seed grid over I with one cell done)::

    data = chart_data(spec, results(exp_id, store=st), st.get_trials(exp_id))
    data["phase"]["x"]                 # 'data.n_instructions'
    data["phase"]["rows"][0]           # {'data.n_instructions': 16, 'n': 2,
                                       #  'metric_mean': 0.01, 'metric_std': 0.005, ...}
    data["curves"][0]["step"][:3]      # [875, 1750, 2625]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from sweeps.reporting.frontier import chart as frontier_chart
from sweeps.reporting.frontier import curves_of_rows, fit_frontier
from sweeps.reporting.studies import frontier_run, training_twin
from sweeps.reporting.tables import summarize
from sweeps.specs.spec import ExperimentSpec, ThresholdSearch
from sweeps.stats import bootstrap_crossing, threshold_of
from sweeps.store import TrialRecord

#: Reports drawn per trial curve at most (evenly thinned): a page stays light at 10^5 rows.
MAX_POINTS = 200


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _cell(v: Any) -> Any:
    return _num(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


def _cells(
    table: pa.Table,
    params: set[str],
    axes: list[str],
    metric: str,
    train: str | None,
    include_running: bool,
) -> list[dict[str, Any]]:
    """One row per grid cell: the axes' values, ``n`` seeds, mean, std and per-seed values of
    the metric (and mean and std of its training-rule twin)."""
    summary = summarize(table, params, include_running=include_running, per_seed=True)
    rows = []
    for r in summary.to_pylist():
        row = {a: _cell(r.get(a)) for a in axes}
        row["n"] = int(r["n"])
        row["metric_mean"] = _num(r.get(f"{metric}_mean"))
        row["metric_std"] = _num(r.get(f"{metric}_std"))
        row["metric_values"] = [_num(v) for v in r.get(f"{metric}_values") or []]
        if train:
            row["train_mean"] = _num(r.get(f"{train}_mean"))
            row["train_std"] = _num(r.get(f"{train}_std"))
        rows.append(row)
    return rows


def _heatmap(rows: list[dict[str, Any]], axes: list[str]) -> dict[str, Any] | None:
    """Mean metric over the last two axes (x = the last), where exactly two vary."""
    if len(axes) != 2:
        return None
    y_axis, x_axis = axes
    xs = sorted({r[x_axis] for r in rows if r[x_axis] is not None})
    ys = sorted({r[y_axis] for r in rows if r[y_axis] is not None})
    z: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    for r in rows:
        if r[x_axis] in xs and r[y_axis] in ys:
            z[ys.index(r[y_axis])][xs.index(r[x_axis])] = r["metric_mean"]
    return {"x_axis": x_axis, "y_axis": y_axis, "x": xs, "y": ys, "z": z}


def _threshold(spec: ExperimentSpec, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For a threshold search: the search's answer (the smallest probe passing with every
    larger one passing) and its bracket (the largest failing probe below it, the answer], and
    the crossing of the level with its bootstrap 95 % interval (`sweeps.stats`)."""
    search = spec.search
    if not isinstance(search, ThresholdSearch) or search.over is not None:
        return None  # several bisections: `_frontier`, one threshold per group
    probes = sorted(
        (r[search.axis], r["metric_mean"] or 0.0, r["n"], r.get("metric_values") or [])
        for r in rows
        if r.get(search.axis) is not None
    )
    estimate = threshold_of([(v, m) for v, m, _, _ in probes], search.level)
    below = [v for v, _, _, _ in probes if estimate is not None and v < estimate]
    ci = bootstrap_crossing(
        {v: [0.0 if x is None else x for x in vals] for v, _, _, vals in probes if vals},
        search.level,
    )
    return {
        "axis": search.axis,
        "metric": search.metric,
        "level": search.level,
        "estimate": estimate,
        "low": below[-1] if below else None,
        "high": estimate,
        "crossing": _finite(ci.estimate),
        "interval": [_finite(ci.low), _finite(ci.high)],
        "probes": [{"value": v, "mean": m, "n": n} for v, m, n, _ in probes],
    }


def _frontier(spec: ExperimentSpec, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For a threshold search with ``over``: each group's crossing with its interval and the
    slope of log I* against the group's value (`sweeps.reporting.frontier.chart`)."""
    search = spec.search
    if not isinstance(search, ThresholdSearch) or search.over is None or not search.over.field:
        return None
    curves = curves_of_rows(rows, search.over.field, search.axis, "metric_values")
    fit = fit_frontier(curves, search.level)
    grid = frontier_run(spec, 0).grid_trials
    # the values are the headline metric's (as the phase diagram's); the spec's presets make it
    # the search's own metric
    return frontier_chart(fit, search.over.field, search.axis, spec.metric, grid)


def _finite(v: float) -> float | None:
    """JSON has no infinity: an interval end outside the probes is null."""
    return v if math.isfinite(v) else None


def _curves(
    table: pa.Table, axes: list[str], metric: str, train: str | None, trials: dict[str, TrialRecord]
) -> list[dict[str, Any]]:
    cols = table.column_names
    want = ["trial_id", "step"] + [c for c in (metric, train, "train_loss") if c and c in cols]
    if "step" not in cols:
        return []
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in table.select(want).to_pylist():
        by_trial.setdefault(row["trial_id"], []).append(row)
    out = []
    for tid, rows in by_trial.items():
        if len(rows) > MAX_POINTS:  # keep the last report: it is the one the tables use
            stride = math.ceil(len(rows) / MAX_POINTS)
            rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
        rec = trials.get(tid)
        params = rec.params if rec else {}
        label = ", ".join(f"{a.split('.')[-1]}={params.get(a)}" for a in axes)
        label = f"{label}, seed={params.get('seed')}" if label else f"seed={params.get('seed')}"
        out.append(
            {
                "trial_id": tid,
                "label": label,
                "state": rec.state if rec else None,
                "step": [r["step"] for r in rows],
                "metric": [_num(r.get(metric)) for r in rows],
                "train": [_num(r.get(train)) for r in rows] if train else None,
                "loss": [_num(r.get("train_loss")) for r in rows],
            }
        )
    return out


def chart_data(
    spec: ExperimentSpec, table: pa.Table, trials: Sequence[TrialRecord]
) -> dict[str, Any]:
    """Everything the results page draws, JSON-ready (see the module docstring)."""
    by_id = {t.trial_id: t for t in trials}
    params = {k for t in trials for k in t.params}
    axes = [a for a in spec.independent_fields if a in table.column_names]
    metric = spec.metric
    train = training_twin(metric, table.column_names)
    live = _cells(table, params, axes, metric, train, True) if table.num_rows else []
    # the threshold is estimated from finished probes only: a running one's accuracy still moves
    done = _cells(table, params, axes, metric, train, False) if table.num_rows else []
    return {
        "metric": metric,
        "train_metric": train,
        "axes": axes,
        "phase": {
            "x": axes[-1] if axes else None,
            "series": axes[0] if len(axes) > 1 else None,
            "rows": live,
        },
        # a threshold search's probes are no grid: no heat map of them
        "heatmap": None if isinstance(spec.search, ThresholdSearch) else _heatmap(live, axes),
        "threshold": _threshold(spec, done),
        "frontier": _frontier(spec, done),
        "curves": _curves(table, axes, metric, train, by_id) if table.num_rows else [],
        "trials": [
            {
                "trial_id": t.trial_id,
                "state": t.state,
                "error": t.error,
                "reused_from": t.reused_from,
                "params": t.params,
            }
            for t in trials
        ],
    }
