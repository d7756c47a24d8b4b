"""`sweeps.reporting.charts`: what the results page draws, from a hand-filled store (no Ray, no
browser)."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import tiny_spec

from sweeps import results, spec_from_dict
from sweeps.reporting.charts import MAX_POINTS, chart_data
from sweeps.specs.spec import ExperimentSpec
from sweeps.store import ResultsStore, TrialRecord, open_store


def _store(spec: ExperimentSpec) -> ResultsStore:
    store = open_store(f"memory://charts-{uuid.uuid4().hex}")
    store.create_experiment("e", name=spec.name, spec_json=spec.spec_json, spec_hash=spec.spec_hash)
    return store


def _put(
    store: ResultsStore,
    tid: str,
    params: dict[str, object],
    state: str,
    accs: list[float],
    **extra: object,
) -> None:
    store.put_trial(TrialRecord("e", tid, f"k-{tid}", json.dumps(params), "", state, **extra))  # type: ignore[arg-type]
    for step, acc in enumerate(accs, 1):
        store.append_metrics(
            "e",
            tid,
            {
                "step": step * 10,
                "test_acc": acc,
                "fresh_acc": min(1.0, acc + 0.2),
                "train_loss": 1.0 / step,
            },
        )


def _charts(store: ResultsStore, spec: ExperimentSpec) -> dict[str, object]:
    return chart_data(spec, results("e", store=store), store.get_trials("e"))


def test_grid_phase_curves_trials_with_errors_and_reuse() -> None:
    spec = spec_from_dict(
        tiny_spec(
            axes=[{"field": "data.n_instructions", "values": [10, 40]}],
            budget={"total_examples": 400},
            seeds=[0, 1],
        )
    )
    st = _store(spec)

    def p(n: int, s: int) -> dict[str, object]:
        return {"data.n_instructions": n, "data.examples_per_instruction": 400 // n, "seed": s}

    _put(st, "a", p(10, 0), "complete", [0.1, 0.2])
    _put(st, "b", p(10, 1), "complete", [0.2, 0.4], reused_from="old/t7")
    _put(st, "c", p(40, 0), "running", [0.5])
    _put(st, "d", p(40, 1), "failed", [], error="CUDA out of memory")
    d = _charts(st, spec)
    assert d["axes"] == ["data.n_instructions"]  # the budget-coupled S is not an axis
    assert d["metric"] == "test_acc" and d["train_metric"] == "fresh_acc"
    rows = d["phase"]["rows"]  # type: ignore[index]
    assert [(r["data.n_instructions"], r["n"]) for r in rows] == [(10, 2), (40, 1)]
    assert abs(rows[0]["metric_mean"] - 0.3) < 1e-9 and abs(rows[0]["train_mean"] - 0.5) < 1e-9
    assert rows[1]["metric_mean"] == 0.5  # the running trial, with its latest report
    assert d["heatmap"] is None and d["threshold"] is None
    curves = {c["trial_id"]: c for c in d["curves"]}  # type: ignore[attr-defined]
    assert curves["a"]["step"] == [10, 20] and curves["a"]["metric"] == [0.1, 0.2]
    assert curves["a"]["loss"] == [1.0, 0.5] and curves["c"]["state"] == "running"
    assert curves["b"]["label"] == "n_instructions=10, seed=1"
    trials = {t["trial_id"]: t for t in d["trials"]}  # type: ignore[attr-defined]
    assert trials["d"]["error"] == "CUDA out of memory" and trials["d"]["state"] == "failed"
    assert trials["b"]["reused_from"] == "old/t7"
    json.dumps(d)  # JSON-ready


def test_two_axes_give_a_heat_map() -> None:
    spec = spec_from_dict(
        tiny_spec(
            axes=[
                {"field": "data.noop_fraction", "values": [0.1, 0.5]},
                {"field": "data.n_instructions", "values": [10, 40]},
            ],
            seeds=[0],
        )
    )
    st = _store(spec)
    acc = {(0.1, 10): 0.2, (0.1, 40): 0.9, (0.5, 10): 0.1, (0.5, 40): 0.6}
    for i, ((f, n), a) in enumerate(acc.items()):
        _put(
            st,
            f"t{i}",
            {"data.noop_fraction": f, "data.n_instructions": n, "seed": 0},
            "complete",
            [a],
        )
    hm = _charts(st, spec)["heatmap"]
    assert hm == {
        "x_axis": "data.n_instructions",
        "y_axis": "data.noop_fraction",
        "x": [10, 40],
        "y": [0.1, 0.5],
        "z": [[0.2, 0.9], [0.1, 0.6]],
    }


def test_threshold_estimate_and_interval_from_finished_probes() -> None:
    spec = spec_from_dict(
        tiny_spec(
            search={
                "kind": "threshold",
                "axis": "data.n_instructions",
                "low": 8,
                "high": 128,
                "level": 0.5,
                "metric": "test_acc",
                "integer": True,
            },
            seeds=[0],
        )
    )
    st = _store(spec)
    for i, (n, a, state) in enumerate(
        [
            (8, 0.1, "complete"),
            (32, 0.3, "complete"),
            (45, 0.6, "complete"),
            (128, 0.9, "complete"),
            (40, 0.9, "running"),
        ]
    ):
        _put(st, f"t{i}", {"data.n_instructions": n, "seed": 0}, state, [a])
    th = _charts(st, spec)["threshold"]
    assert th["estimate"] == 45 and th["low"] == 32 and th["high"] == 45  # type: ignore[index]
    assert [p["value"] for p in th["probes"]] == [8, 32, 45, 128]  # type: ignore[index]
    # 0.5 is crossed two thirds of the way from 32 (0.3) to 45 (0.6) in log I; one seed a
    # probe gives no spread, so the interval is that point.
    crossing = 32 * (45 / 32) ** (2 / 3)
    assert th["crossing"] == pytest.approx(crossing)  # type: ignore[index]
    assert th["interval"] == pytest.approx([crossing, crossing])  # type: ignore[index]


def test_long_curves_are_thinned_but_keep_the_last_report() -> None:
    spec = spec_from_dict(tiny_spec(seeds=[0]))
    st = _store(spec)
    _put(st, "t", {"seed": 0}, "complete", [i / 1000 for i in range(1, 1001)])
    (curve,) = _charts(st, spec)["curves"]  # type: ignore[misc]
    assert len(curve["step"]) <= MAX_POINTS + 1 and curve["step"][-1] == 10_000
    assert curve["metric"][-1] == 1.0


def test_no_rows_yet() -> None:
    spec = spec_from_dict(tiny_spec(seeds=[0]))
    st = _store(spec)
    st.put_trial(TrialRecord("e", "t", "k", json.dumps({"seed": 0}), "", "pending"))
    d = _charts(st, spec)
    assert d["phase"]["rows"] == [] and d["curves"] == []  # type: ignore[index]
    assert d["trials"][0]["state"] == "pending"  # type: ignore[index]
