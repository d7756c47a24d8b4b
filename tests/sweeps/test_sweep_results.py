"""results/summary/threshold_estimate and the phase diagram, on a hand-filled store (no Ray)."""

from __future__ import annotations

import io
import json
import math
import uuid

import pytest
from conftest import tiny_spec
from matplotlib.image import imread

from sweeps import plot_phase_diagram, results, spec_from_dict, summary, threshold_estimate
from sweeps.__main__ import main as sweeps_main
from sweeps.reporting.plot import plot_experiment
from sweeps.specs.spec import ExperimentSpec
from sweeps.store import ResultsStore, TrialRecord, open_store


def _fill(
    spec: ExperimentSpec, acc: dict[tuple[int, int], float], states: dict[int, str] | None = None
) -> tuple[ResultsStore, str, str]:
    """A memory store holding ``spec``'s grid with final test_acc ``acc[(I, seed)]``."""
    uri = f"memory://results-{uuid.uuid4().hex}"
    store = open_store(uri)
    store.create_experiment("e", name=spec.name, spec_json=spec.spec_json, spec_hash=spec.spec_hash)
    for i, plan in enumerate(spec.trials()):
        tid = f"t{i}"
        n = plan.data.n_instructions
        state = (states or {}).get(i, "complete")
        store.put_trial(
            TrialRecord(
                "e", tid, plan.trial_key, json.dumps(plan.params), plan.data.content_hash, state
            )
        )
        store.append_metrics("e", tid, {"step": 1, "test_acc": 0.0, "train_loss": 3.0})
        store.append_metrics(
            "e", tid, {"step": 2, "test_acc": acc[(n, plan.seed)], "train_loss": 1.0}
        )
    return store, "e", uri


def _grid(**kw: object) -> ExperimentSpec:
    return spec_from_dict(
        tiny_spec(
            axes=[{"field": "data.n_instructions", "values": [10, 20, 40]}],
            budget={"total_examples": 400},
            seeds=[0, 1],
            **kw,
        )
    )


ACC = {(10, 0): 0.0, (10, 1): 0.1, (20, 0): 0.4, (20, 1): 0.6, (40, 0): 0.9, (40, 1): 1.0}


def test_results_one_row_per_report_with_params() -> None:
    store, eid, _ = _fill(_grid(), ACC)
    table = results(eid, store=store)
    assert table.num_rows == 12
    assert table.column_names[:6] == [
        "experiment_id",
        "trial_id",
        "trial_key",
        "state",
        "seq",
        "time",
    ]
    df = table.to_pandas()
    assert {
        "data.n_instructions",
        "data.examples_per_instruction",
        "seed",
        "test_acc",
        "train_loss",
        "step",
    } <= set(df.columns)
    assert list(df["seq"]) == list(range(1, 13))
    row = df[(df["data.n_instructions"] == 20) & (df["seed"] == 1) & (df["step"] == 2)]
    assert row["test_acc"].item() == 0.6 and row["data.examples_per_instruction"].item() == 20


def test_results_of_a_trial_that_starts_mid_read_carry_its_params() -> None:
    """A trial stored (with its first report) while `results` reads still gets its parameters:
    the store below lets a writer act at the moment the metrics are read."""
    spec = _grid()
    store, eid, _ = _fill(spec, ACC)
    late = next(iter(spec.trials()))
    real = store.metrics_table

    def metrics_table(experiment_id: str, since_seq: int = 0) -> object:
        store.put_trial(TrialRecord(eid, "late", "k-late", json.dumps(late.params), "", "running"))
        store.append_metrics(eid, "late", {"step": 1, "test_acc": 0.1})
        return real(experiment_id, since_seq)

    store.metrics_table = metrics_table  # type: ignore[method-assign]
    rows = results(eid, store=store).to_pylist()
    row = next(r for r in rows if r["trial_id"] == "late")
    assert row["data.n_instructions"] == late.params["data.n_instructions"]
    assert row["state"] == "running"


def test_summary_mean_std_n_over_seeds_of_final_reports() -> None:
    store, eid, _ = _fill(_grid(), ACC)
    df = summary(eid, store=store).to_pandas()
    assert list(df["data.n_instructions"]) == [10, 20, 40] and list(df["n"]) == [2, 2, 2]
    assert "seed" not in df.columns and "step_mean" not in df.columns
    assert df["test_acc_mean"].tolist() == pytest.approx([0.05, 0.5, 0.95])
    # sample std of (0, .1), (.4, .6), (.9, 1)
    assert df["test_acc_std"].tolist() == pytest.approx(
        [math.sqrt(x) for x in (0.005, 0.02, 0.005)]
    )
    assert df["train_loss_mean"].tolist() == pytest.approx([1.0] * 3)


def test_summary_counts_only_complete_trials_unless_asked() -> None:
    store, eid, _ = _fill(_grid(), ACC, states={0: "failed", 1: "running"})
    df = summary(eid, store=store).to_pandas()
    assert list(df["n"]) == [2, 2]  # the I=10 cell has no complete trial
    live = summary(eid, store=store, include_running=True).to_pandas()
    assert list(live["n"]) == [1, 2, 2] and live["test_acc_mean"][0] == pytest.approx(0.1)


def test_threshold_estimate_from_stored_probes() -> None:
    spec = spec_from_dict(
        tiny_spec(
            search={
                "kind": "threshold",
                "axis": "data.n_instructions",
                "level": 0.5,
                "low": 10,
                "high": 40,
                "replicates": 2,
            },
            budget={"total_examples": 400},
        )
    )
    uri = f"memory://thr-{uuid.uuid4().hex}"
    store = open_store(uri)
    store.create_experiment("e", name="t", spec_json=spec.spec_json, spec_hash=spec.spec_hash)
    k = 0
    for n in (10, 40, 20):
        for seed in (0, 1):
            plan = spec.plan({"data.n_instructions": n, "seed": seed})
            store.put_trial(
                TrialRecord("e", f"t{k}", plan.trial_key, json.dumps(plan.params), "d", "complete")
            )
            store.append_metrics("e", f"t{k}", {"test_acc": ACC[(n, seed)]})
            k += 1
    est = threshold_estimate("e", store=store)
    assert est["threshold"] == 20 and est["n_trials"] == 6
    assert [p[0] for p in est["probes"]] == [10, 20, 40]
    with pytest.raises(ValueError, match="search.kind"):
        threshold_estimate("e", store=_fill(_grid(), ACC)[0])


def _png_shape(png: bytes) -> tuple[int, ...]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return tuple(imread(io.BytesIO(png), format="png").shape)


def _coloured_share(png: bytes) -> float:
    img = imread(io.BytesIO(png), format="png")[..., :3]
    return float(((img.max(axis=-1) - img.min(axis=-1)) > 0.2).mean())


def test_phase_diagram_lines_and_heatmap() -> None:
    store, eid, _ = _fill(_grid(), ACC)
    h, w, _ = _png_shape(plot_experiment(eid, store=store))
    assert w > h > 100
    # two independent axes (I x S, no budget) give a heat map with a colour bar: a wider figure
    spec = spec_from_dict(
        tiny_spec(
            axes=[
                {"field": "data.n_instructions", "values": [10, 20]},
                {"field": "data.examples_per_instruction", "values": [10, 20]},
            ]
        )
    )
    acc = {(n, 0): 0.1 * n / 10 for n in (10, 20)}
    store2, eid2, _ = _fill(spec, acc)
    table = summary(eid2, store=store2)
    heat = plot_phase_diagram(table, kind="auto")
    lines = plot_phase_diagram(table, kind="lines")
    # a heat map fills the axes with colour; a line plot is mostly white
    assert _coloured_share(heat) > 0.3 > 0.1 > _coloured_share(lines)
    empty = plot_phase_diagram(table.slice(0, 0), metric="test_acc")
    assert _png_shape(empty)[0] > 100
    with pytest.raises(ValueError, match="summary table"):
        plot_phase_diagram(results(eid, store=store))


def test_report_cli_prints_table_and_writes_png(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    _, eid, uri = _fill(_grid(), ACC)
    assert sweeps_main(["report", eid, "--store", uri, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "data.n_instructions" in out and "0.950" in out
    assert (tmp_path / f"{eid}-phase.png").stat().st_size > 5000
    assert (tmp_path / f"{eid}-summary.csv").read_text().startswith("data.n_instructions")


def test_no_export_is_shadowed_by_a_submodule() -> None:
    """``from sweeps import results`` must give the function even after other imports: a
    submodule named like an export replaces the export once anything imports the submodule."""
    import pkgutil
    import subprocess
    import sys

    import sweeps

    modules = {m.name for m in pkgutil.iter_modules(sweeps.__path__)}
    assert not modules & set(sweeps.__all__)
    code = (
        "from sweeps import summary, plot_phase_diagram, threshold_estimate\n"
        "from sweeps import results\nassert callable(results), results\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
