"""Content-addressed trials: identical trials are never run twice, extensions run only new ones."""

from __future__ import annotations

import json
from pathlib import Path

import fakes
import pytest
from conftest import tiny_spec

from sweeps import results, spec_from_dict, summary
from sweeps.codeversion import code_version, source_hash
from sweeps.running.driver import run_experiment
from sweeps.running.reuse import ReuseIndex, reused_trial_id
from sweeps.store import TrialRecord, open_store

pytestmark = pytest.mark.usefixtures("local_ray")

AXES = [{"field": "data.n_instructions", "values": [10, 40]}]


def _spec(seeds: list[int], **kw: object):
    return spec_from_dict(tiny_spec(name="reuse", axes=AXES, seeds=seeds, **kw))


def _final_rows(uri: str, exp: str) -> dict[str, dict]:
    """trial_key -> the trial's final metrics (without bookkeeping that differs per run)."""
    store = open_store(uri)
    keys = {t.trial_id: t.trial_key for t in store.get_trials(exp)}
    out = {}
    for m in store.get_metrics(exp):
        out[keys[m.trial_id]] = m.metrics
    return out


def test_trial_key_names_the_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _spec([0]).trials()
    assert len(source_hash()) == 16 and source_hash() == source_hash(("data", "trainer"))
    assert code_version() == source_hash()
    monkeypatch.setenv("DIVSWEEP_CODE_VERSION", "release-1.0")
    changed = _spec([0]).trials()
    assert [p.params for p in changed] == [p.params for p in base]
    assert not {p.trial_key for p in changed} & {p.trial_key for p in base}


def test_extending_with_more_seeds_runs_only_the_new_trials(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    first = run_experiment(_spec([0]), "first", uri, trial_fn=fakes.step_accuracy, verbose=0)
    second = run_experiment(_spec([0, 1]), "second", uri, trial_fn=fakes.step_accuracy, verbose=0)
    store = open_store(uri)
    trials = store.get_trials(second)
    assert len(trials) == 4 and {t.state for t in trials} == {"complete"}
    reused = [t for t in trials if t.reused_from]
    ran = [t for t in trials if not t.reused_from]
    assert sorted(t.params["seed"] for t in reused) == [0, 0]
    assert sorted(t.params["seed"] for t in ran) == [1, 1]
    # the copy names its source and carries the source's numbers
    originals = {t.trial_key: t for t in store.get_trials(first)}
    for t in reused:
        src = originals[t.trial_key]
        assert t.reused_from == f"first/{src.trial_id}"
        assert t.trial_id == reused_trial_id(t.trial_key)
    assert {k: v for k, v in _final_rows(uri, second).items() if k in originals} == _final_rows(
        uri, first
    )
    # the results table says which rows were reused; the summary pools both seeds
    table = results(second, uri).to_pandas()
    assert sorted(table["reused_from"].notna().tolist()) == [False, False, True, True]
    assert list(summary(second, uri).to_pandas()["n"]) == [2, 2]


def test_resubmitting_an_identical_spec_runs_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    run_experiment(_spec([0, 1]), "a", uri, trial_fn=fakes.step_accuracy, verbose=0)
    # a trial function that would fail proves no trial ran
    again = run_experiment(_spec([0, 1]), "b", uri, trial_fn=fakes.fail_on_many_rules, verbose=0)
    store = open_store(uri)
    assert store.get_experiment(again).status == "complete"
    assert all(t.reused_from and t.reused_from.startswith("a/") for t in store.get_trials(again))
    assert len(store.get_trials(again)) == 4


def test_reuse_false_and_another_code_version_run_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = str(tmp_path / "store")
    run_experiment(_spec([0]), "a", uri, trial_fn=fakes.step_accuracy, verbose=0)
    run_experiment(_spec([0], reuse=False), "b", uri, trial_fn=fakes.step_accuracy, verbose=0)
    monkeypatch.setenv("DIVSWEEP_CODE_VERSION", "edited")
    run_experiment(_spec([0]), "c", uri, trial_fn=fakes.step_accuracy, verbose=0)
    store = open_store(uri)
    for exp in ("b", "c"):
        assert [t.reused_from for t in store.get_trials(exp)] == [None, None]


def test_adoption_is_idempotent_and_survives_a_crash_between_its_writes(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    spec = _spec([0])
    plan = spec.trials()[0]
    for exp in ("src", "dst"):
        store.create_experiment(exp, name="r", spec_json=spec.spec_json, spec_hash=spec.spec_hash)
    store.put_trial(
        TrialRecord("src", "t1", plan.trial_key, json.dumps(plan.params), "d", state="complete")
    )
    for step in (1, 2, 3):
        store.append_metrics("src", "t1", {"step": step, "test_acc": step / 10})
    # a driver that died after copying the rows but before writing the trial row
    tid = reused_trial_id(plan.trial_key)
    store.append_metrics_batch("dst", [(tid, m.metrics, m.time) for m in store.get_metrics("src")])
    index = ReuseIndex(store, "dst")
    assert index.find(plan.trial_key) is not None and index.find("nope") is None
    assert index.adopt("dst", plan) == {"step": 3, "test_acc": 0.3}
    assert index.adopt("dst", plan) == {"step": 3, "test_acc": 0.3}  # asking again copies nothing
    assert index.adopt("dst", spec.trials()[1]) is None  # never run anywhere
    assert [m.metrics["step"] for m in store.get_metrics("dst")] == [1, 2, 3]
    [t] = store.get_trials("dst")
    assert (t.state, t.reused_from) == ("complete", "src/t1")
    # a new index over the same store finds the copy in the experiment itself: kept, not copied
    again = ReuseIndex(store, "dst")
    assert again.adopt("dst", plan) is not None and again.kept == {plan.trial_key}
    assert len(store.get_metrics("dst")) == 3


def test_a_repeated_threshold_search_answers_every_probe_from_the_store(tmp_path: Path) -> None:
    from sweeps import threshold_estimate

    spec = spec_from_dict(
        tiny_spec(
            name="thresh",
            search={
                "kind": "threshold",
                "axis": "data.n_instructions",
                "metric": "test_acc",
                "level": 0.5,
                "low": 2,
                "high": 2000,
                "replicates": 2,
            },
            budget={"total_examples": 4000},
            max_concurrent=2,
        )
    )
    uri = str(tmp_path / "store")
    run_experiment(spec, "t1", uri, trial_fn=fakes.step_accuracy, verbose=0)
    # the same search again: a failing trial function proves that nothing is trained
    run_experiment(spec, "t2", uri, trial_fn=fakes.fail_on_many_rules, verbose=0)
    first, second = threshold_estimate("t1", uri), threshold_estimate("t2", uri)
    assert second["threshold"] == first["threshold"] is not None
    assert second["probes"] == first["probes"]
    trials = open_store(uri).get_trials("t2")
    assert trials and all(t.state == "complete" and t.reused_from for t in trials)
