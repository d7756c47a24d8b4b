"""Reading results: every report as a table, a summary per grid cell, the threshold estimate.

Example (after ``run_experiment``)::

    table = results(exp_id, store_uri="/tmp/results")     # pyarrow.Table, one row per report
    table.to_pandas()[["trial_id", "data.n_instructions", "seed", "step", "test_acc"]]
    summary(exp_id, store_uri="/tmp/results").to_pandas()
    #    data.n_instructions  data.examples_per_instruction  n  test_acc_mean  test_acc_std ...
    # 0                   10                            100  2           0.00          0.00
    # 1                  100                             10  2           0.45          0.07

Parameter columns are named by their field path; a parameter whose values are lists (e.g.
``data.family.k``) is shown as JSON text so that it can be grouped on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

import pyarrow as pa

from sweeps.specs.lifecycle import TrialState
from sweeps.specs.spec import ExperimentSpec, ThresholdSearch
from sweeps.stats import threshold_of
from sweeps.store import ResultsStore, TrialRecord, open_store

#: Columns of `results` besides the parameters and metrics.
#: ``reused_from`` names the stored trial a reused result was copied from (None: it ran here).
ID_COLUMNS = ("experiment_id", "trial_id", "trial_key", "state", "seq", "time", "reused_from")
#: Metric columns that are bookkeeping, not results; `summary` leaves them out.
BOOKKEEPING = frozenset(
    {
        "seq",
        "time",
        "training_iteration",
        "time_total_s",
        "step",
        "epoch",
        "examples_seen",
        "tokens_seen",
        "wall_s",
        "tokens_per_s",
        "lr",
        "test_n",
        "train_n",
    }
)


def _store(store_uri: str | None, store: ResultsStore | None) -> ResultsStore:
    return store if store is not None else open_store(store_uri)


def _param_value(v: Any) -> Any:
    return v if v is None or isinstance(v, str | int | float | bool) else json.dumps(v)


def experiment_spec(
    experiment_id: str, store_uri: str | None = None, store: ResultsStore | None = None
) -> ExperimentSpec:
    """The spec an experiment was run with, as stored."""
    rec = _store(store_uri, store).get_experiment(experiment_id)
    return ExperimentSpec.model_validate_json(rec.spec_json)


def results(
    experiment_id: str, store_uri: str | None = None, store: ResultsStore | None = None
) -> pa.Table:
    """One row per report: ids, trial state, the trial's parameters, then every metric."""
    st = _store(store_uri, store)
    # Metrics first: a writer stores a trial before its first report, so trials read after the
    # metrics cover every row. In the other order a trial that started between the two reads
    # gave rows without parameters (the first 10-minute service soak caught one).
    metrics = st.metrics_table(experiment_id)
    trials = {t.trial_id: t for t in st.get_trials(experiment_id)}
    params = {tid: t.params for tid, t in trials.items()}
    names = list(dict.fromkeys(k for p in params.values() for k in p))
    tids = metrics.column("trial_id").to_pylist()
    missing = TrialRecord(experiment_id, "?")
    cols: dict[str, Any] = {
        "experiment_id": metrics.column("experiment_id"),
        "trial_id": metrics.column("trial_id"),
        "trial_key": pa.array([trials.get(t, missing).trial_key for t in tids], pa.string()),
        "state": pa.array([trials.get(t, missing).state for t in tids], pa.string()),
        "seq": metrics.column("seq"),
        "time": metrics.column("time"),
        "reused_from": pa.array([trials.get(t, missing).reused_from for t in tids], pa.string()),
    }
    for n in names:
        cols[n] = pa.array([_param_value(params.get(t, {}).get(n)) for t in tids])
    for n in metrics.column_names[5:]:
        if n not in cols:
            cols[n] = metrics.column(n)
    return pa.table(cols)


def final_reports(table: pa.Table, states: tuple[str, ...] = (TrialState.COMPLETE,)) -> Any:
    """The last report of each trial in ``states``, as a pandas frame."""
    df = table.to_pandas()
    if df.empty:
        return df
    df = df[df["state"].isin(states)]
    return df.sort_values("seq").groupby("trial_id", sort=False).tail(1)


def summary(
    experiment_id: str,
    store_uri: str | None = None,
    store: ResultsStore | None = None,
    include_running: bool = False,
) -> pa.Table:
    """Per grid cell (parameters without the seed): ``n`` and mean/std of each final metric.

    Only complete trials count, unless ``include_running`` (then a running trial counts with its
    latest report, for live views). ``std`` is the sample standard deviation (0 when ``n == 1``).
    """
    st = _store(store_uri, store)
    table = results(experiment_id, store=st)
    out = summarize(table, _param_names(st, experiment_id), include_running)
    # the spec's own axes first, ascending (I = 16 before 1024); the field a budget couples to
    # them (S) follows
    axes = [
        a
        for a in experiment_spec(experiment_id, store=st).independent_fields
        if a in out.column_names
    ]
    if not axes or out.num_rows == 0:
        return out
    rest = [c for c in out.column_names if c not in axes]
    return out.select(axes + rest).sort_by([(a, "ascending") for a in axes])


def summarize(
    table: pa.Table,
    param_names: Collection[str],
    include_running: bool = False,
    per_seed: bool = False,
) -> pa.Table:
    """`summary` of a `results` table already in hand (e.g. downloaded from the service).

    ``param_names`` says which columns are trial parameters (the rest are metrics); the seed is
    the replicate axis, every other parameter is a cell coordinate. ``per_seed`` adds ``seeds``
    (the cell's seeds, ascending) and ``<metric>_values`` (each seed's value, in that order; NaN
    where a seed did not report it), which the verdicts' tests read. Example::

        summarize(results(exp_id, store=st), {"data.n_instructions", "seed"}).to_pandas()
        #    data.n_instructions  n  test_acc_mean  test_acc_std ...
    """
    states = (
        (TrialState.COMPLETE, TrialState.RUNNING) if include_running else (TrialState.COMPLETE,)
    )
    df = final_reports(table, states)
    param_cols = [c for c in table.column_names[len(ID_COLUMNS) :] if c in param_names]
    cells = [c for c in param_cols if c != "seed"]
    metric_cols = [
        c
        for c in table.column_names[len(ID_COLUMNS) :]
        if c not in param_cols and c not in BOOKKEEPING
    ]
    if df.empty:
        fields = [pa.field(c, pa.string()) for c in cells] + [pa.field("n", pa.int64())]
        fields += [pa.field(f"{m}_{s}", pa.float64()) for m in metric_cols for s in ("mean", "std")]
        return pa.schema(fields).empty_table()
    rows = []
    groups = df.groupby(cells, sort=True, dropna=False) if cells else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(cells, key, strict=True))
        row["n"] = len(g)
        if per_seed:
            g = g.sort_values("seed") if "seed" in g else g
            row["seeds"] = [int(v) for v in g["seed"]] if "seed" in g else []
            for m in metric_cols:
                row[f"{m}_values"] = [
                    math.nan if v is None or math.isnan(v) else float(v) for v in g[m]
                ]
        for m in metric_cols:
            vals = [float(v) for v in g[m] if v is not None and not math.isnan(v)]
            mean = sum(vals) / len(vals) if vals else math.nan
            var = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            row[f"{m}_mean"] = mean
            row[f"{m}_std"] = math.sqrt(var) if vals else math.nan
        rows.append(row)
    return pa.Table.from_pylist(rows)


def _param_names(store: ResultsStore, experiment_id: str) -> set[str]:
    return {k for t in store.get_trials(experiment_id) for k in t.params}


def threshold_estimate(
    experiment_id: str, store_uri: str | None = None, store: ResultsStore | None = None
) -> dict[str, Any]:
    """The smallest probed axis value that passes with every larger probed value passing.

    Returns ``{"axis", "metric", "level", "threshold" (None if no value passes), "probes":
    [(value, mean, n), ...], "n_trials"}``. Works for any experiment whose spec has a threshold
    search (read from the store). With ``search.over`` the answer is per group: ``"over"`` names
    its field and ``"groups"`` holds ``{"value", "threshold", "probes"}`` for each of its values
    (the top-level ``threshold`` is then None and ``probes`` empty).
    """
    st = _store(store_uri, store)
    spec = experiment_spec(experiment_id, store=st)
    search = spec.search
    if not isinstance(search, ThresholdSearch):
        raise ValueError(f"search.kind: experiment {experiment_id!r} is a {search.kind} search")
    df = final_reports(results(experiment_id, store=st), (TrialState.COMPLETE, TrialState.FAILED))
    out: dict[str, Any] = {
        "axis": search.axis,
        "metric": search.metric,
        "level": search.level,
        "threshold": None,
        "probes": [],
        "n_trials": len(st.get_trials(experiment_id)),
    }
    over = search.over.field if search.over is not None else None
    if over is None:
        return out | _bisection_estimate(df, search.axis, search.metric, search.level)
    groups = []
    for value in search.over.points():  # type: ignore[union-attr]  # over is set here
        mine = df[df[over] == value] if not df.empty and over in df else df.iloc[0:0]
        groups.append(
            {"value": value, **_bisection_estimate(mine, search.axis, search.metric, search.level)}
        )
    return out | {"over": over, "groups": groups}


def _bisection_estimate(df: Any, axis: str, metric: str, level: float) -> dict[str, Any]:
    """``threshold`` and ``probes`` of one bisection's final reports (failed trials count 0)."""
    probes = []
    if not df.empty and axis in df:
        for value, g in df.groupby(axis, sort=True):
            vals = [0.0 if v is None or math.isnan(v) else float(v) for v in g.get(metric, [])]
            probes.append((value, sum(vals) / len(vals) if vals else 0.0, len(g)))
    threshold = threshold_of([(value, mean) for value, mean, _ in probes], level)
    return {"threshold": threshold, "probes": probes}
