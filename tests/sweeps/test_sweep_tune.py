"""The Tune driver on fake trainables: threshold search, Optuna, ASHA, failed trials, cancel.

All tests share one in-process Ray (2 CPUs) and write to a real Parquet store.
"""

from __future__ import annotations

import math
from pathlib import Path

import fakes
import pytest
from conftest import tiny_spec

from sweeps import results, spec_from_dict, summary, threshold_estimate
from sweeps.running.driver import run_experiment
from sweeps.store import open_store

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.mark.slow
def test_threshold_search_finds_known_threshold_with_fewer_trials(tmp_path: Path) -> None:
    low, high, resolution = 2, 2000, 1.25
    spec = spec_from_dict(
        tiny_spec(
            name="thresh",
            search={
                "kind": "threshold",
                "axis": "data.n_instructions",
                "metric": "test_acc",
                "level": 0.5,
                "low": low,
                "high": high,
                "replicates": 2,
                "resolution": resolution,
            },
            budget={"total_examples": 4000},
            max_concurrent=2,
        )
    )
    store_uri = str(tmp_path / "store")
    exp = run_experiment(spec, "thresh-1", store_uri, trial_fn=fakes.step_accuracy, verbose=0)
    est = threshold_estimate(exp, store_uri)
    found = est["threshold"]
    # within one grid step (a factor `resolution`) above the true threshold, never below it
    assert found is not None and fakes.THRESHOLD <= found <= fakes.THRESHOLD * resolution
    # the equivalent log grid over [low, high] at that resolution, times the replicates
    grid_trials = 2 * (math.ceil(math.log(high / low) / math.log(resolution)) + 1)
    n_trials = est["n_trials"]
    assert n_trials <= spec.n_trials and n_trials <= grid_trials / 3, (n_trials, grid_trials)
    # every probed value ran both replicates; all trials completed
    assert all(n == 2 for _, _, n in est["probes"])
    assert open_store(store_uri).progress(exp)["complete"] == n_trials
    assert open_store(store_uri).get_experiment(exp).status == "complete"


def test_optuna_search_runs_and_improves(tmp_path: Path) -> None:
    spec = spec_from_dict(
        tiny_spec(
            name="opt",
            search={
                "kind": "optuna",
                "sampler": "tpe",
                "n_trials": 6,
                "space": {"train.lr": {"kind": "loguniform", "low": 1e-5, "high": 1.0}},
                "objective": {"metric": "score", "mode": "max"},
            },
            max_concurrent=2,
        )
    )
    uri = str(tmp_path / "store")
    exp = run_experiment(spec, "opt-1", uri, trial_fn=fakes.learning_curve, verbose=0)
    trials = open_store(uri).get_trials(exp)
    assert len(trials) == 6 and {t.state for t in trials} == {"complete"}
    lrs = {t.params["train.lr"] for t in trials}
    assert len(lrs) == 6 and all(1e-5 <= lr <= 1.0 for lr in lrs)
    table = results(exp, uri).to_pandas()
    assert set(table["trial_id"]) == {t.trial_id for t in trials}
    assert (table.groupby("trial_id")["seq"].count() == 8).all()


def test_asha_prunes_bad_trials(tmp_path: Path) -> None:
    spec = spec_from_dict(
        tiny_spec(
            name="asha",
            axes=[{"field": "train.lr", "values": [1e-6, 1e-5, 3e-3, 1e-4, 1.0, 3e-2]}],
            scheduler={
                "kind": "asha",
                "objective": {"metric": "score", "mode": "max"},
                "max_t": 8,
                "grace_period": 2,
                "reduction_factor": 2,
            },
            max_concurrent=2,
        )
    )
    uri = str(tmp_path / "store")
    exp = run_experiment(spec, "asha-1", uri, trial_fn=fakes.learning_curve, verbose=0)
    store = open_store(uri)
    states = {t.params["train.lr"]: t.state for t in store.get_trials(exp)}
    assert len(states) == 6
    assert "pruned" in states.values(), states
    assert states[3e-3] == "complete"  # the best trial runs to the end
    reports = results(exp, uri).to_pandas().groupby("trial_id")["seq"].count()
    pruned = [t.trial_id for t in store.get_trials(exp) if t.state == "pruned"]
    assert all(reports[tid] < 8 for tid in pruned)


@pytest.mark.slow
def test_failed_trial_is_a_row_and_a_retry_resumes_from_checkpoint(tmp_path: Path) -> None:
    spec = spec_from_dict(
        tiny_spec(
            name="fails",
            axes=[{"field": "data.n_instructions", "values": [10, 100]}],
            retries=1,
            max_concurrent=2,
        )
    )
    uri = str(tmp_path / "store")
    exp = run_experiment(spec, "fails-1", uri, trial_fn=fakes.fail_on_many_rules, verbose=0)
    store = open_store(uri)
    by_n = {t.params["data.n_instructions"]: t for t in store.get_trials(exp)}
    assert by_n[10].state == "complete" and by_n[10].error is None
    assert by_n[100].state == "failed"
    assert "fake failure at n_instructions=100" in (by_n[100].error or "")
    assert store.get_experiment(exp).status == "complete"
    # one retry: the failing trial reported iteration 1 in both attempts (no checkpoint, so the
    # retry started over); the store keeps that report once
    table = results(exp, uri).to_pandas()
    assert (table["state"] == "failed").sum() == 1
    # the other trial crashed once after a checkpoint and its retry resumed from that checkpoint
    ok = table[table["state"] == "complete"].sort_values("seq")
    assert list(ok["step"]) == [1, 2] and list(ok["resumed"]) == [0, 1]
    cells = summary(exp, uri).to_pandas()
    assert list(cells["data.n_instructions"]) == [10] and list(cells["n"]) == [1]
    assert cells["test_acc_mean"].item() == 0.9


def test_cancelled_experiment_does_not_start(tmp_path: Path) -> None:
    spec = spec_from_dict(tiny_spec(name="cancel"))
    uri = str(tmp_path / "store")
    store = open_store(uri)
    store.create_experiment(
        "c-1", name="cancel", spec_json=spec.spec_json, spec_hash=spec.spec_hash
    )
    store.cancel_experiment("c-1")
    assert run_experiment(spec, "c-1", uri, trial_fn=fakes.step_accuracy, verbose=0) == "c-1"
    assert store.progress("c-1")["total"] == 0
    assert store.get_experiment("c-1").status == "cancelled"


def test_trials_with_the_same_data_spec_share_one_generated_set(tmp_path: Path) -> None:
    spec = spec_from_dict(
        tiny_spec(
            name="share",
            axes=[{"field": "train.lr", "values": [1e-3, 3e-3, 1e-2]}],
            max_concurrent=2,
        )
    )
    uri, cache = str(tmp_path / "store"), tmp_path / "cache"
    exp = run_experiment(
        spec, "share-1", uri, trial_fn=fakes.generate_then_report, cache_dir=str(cache), verbose=0
    )
    trials = open_store(uri).get_trials(exp)
    assert len(trials) == 3 and {t.state for t in trials} == {"complete"}
    assert len({t.data_hash for t in trials}) == 1
    assert [p.name for p in cache.iterdir()] == [trials[0].data_hash]
    table = results(exp, uri).to_pandas()
    assert set(table["train_rows"]) == {100.0}


def test_cancel_stops_a_running_sweep(tmp_path: Path) -> None:
    import threading
    import time

    spec = spec_from_dict(
        tiny_spec(
            name="cancel-live",
            axes=[{"field": "train.lr", "values": [1e-3, 2e-3, 3e-3, 4e-3]}],
            max_concurrent=2,
        )
    )
    uri = str(tmp_path / "store")
    done: list[str] = []
    runner = threading.Thread(
        target=lambda: done.append(
            run_experiment(spec, "live-1", uri, trial_fn=fakes.slow_reports, verbose=0)
        )
    )
    runner.start()
    store = open_store(uri)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if store.has_experiment("live-1") and store.get_metrics("live-1"):
            break
        time.sleep(0.2)
    store.cancel_experiment("live-1")
    t_cancel = time.monotonic()
    runner.join(timeout=60)
    assert not runner.is_alive() and done == ["live-1"]
    assert time.monotonic() - t_cancel < 30
    assert store.get_experiment("live-1").status == "cancelled"
    counts = store.progress("live-1")
    assert counts["complete"] == 0 and counts["cancelled"] == counts["total"] >= 1
    # the rows written before the cancel are all still there
    assert 1 <= len(store.get_metrics("live-1")) < 4 * 20
