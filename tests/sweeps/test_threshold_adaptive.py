"""Adaptive replicates, summary, checkpoints and the reuse hook of `ThresholdSearcher`.

Most tests drive the searcher by hand the way Tune does (suggest until it waits, complete the
oldest running trial, repeat) on `noisy_metric`, a fake whose mean over seeds crosses the level
at a known value and whose seeds scatter around it. One test runs the real driver on Ray.
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import searching
from conftest import tiny_spec
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.tune.search import Searcher
from searching import AXIS, LEVEL, TRUE, drive, noisy_metric, search, searcher, step_metric

from sweeps import SpecError, spec_from_dict
from sweeps.running.threshold import ThresholdSearcher
from sweeps.specs.bisection import midpoint
from sweeps.specs.spec import ThresholdSearch
from sweeps.stats import t_critical


def agrees(scores: list[float]) -> bool:
    """The decision rule written out apart from the searcher (`t_critical` is tested above)."""
    if all(x >= LEVEL for x in scores) or all(x < LEVEL for x in scores):
        return True
    n = len(scores)
    mean = sum(scores) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in scores) / (n - 1))
    return abs(mean - LEVEL) > t_critical(0.9, n - 1) * sd / math.sqrt(n)


# --- Student-t quantiles ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("confidence", "df", "t"),
    [
        (0.90, 1, 6.3138),
        (0.95, 1, 12.7062),
        (0.95, 2, 4.3027),
        (0.90, 4, 2.1318),
        (0.95, 4, 2.7764),
        (0.99, 9, 3.2498),
        (0.95, 30, 2.0423),
        (0.90, 120, 1.6577),
        (0.80, 7, 1.4149),
        (0.50, 3, 0.7649),
    ],
)
def test_t_critical_matches_printed_tables(confidence: float, df: int, t: float) -> None:
    assert t_critical(confidence, df) == pytest.approx(t, abs=1e-4)


@pytest.mark.parametrize(
    ("confidence", "df", "name"), [(1.0, 3, "confidence"), (0.0, 3, "confidence"), (0.9, 0, "df")]
)
def test_t_critical_rejects_bad_arguments(confidence: float, df: int, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        t_critical(confidence, df)


# --- adaptive replicates ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scores", "confidence", "n", "passes"),
    [
        # the module docstring's example: 0.60 ± 0.95, 0.67 ± 0.32, then 0.71 ± 0.21 excludes 0.5
        ([0.45, 0.75, 0.8, 0.85, 0.9, 0.9], 0.9, 4, True),
        # 0.71 ± 0.216 at four seeds (t = 2.353 for 3 degrees of freedom, not 2.132 for 4)
        ([0.44, 0.75, 0.8, 0.85, 0.9, 0.9], 0.9, 5, True),
        ([0.45, 0.75, 0.8, 0.85, 0.9, 0.9], 0.5, 3, True),  # t = 0.816: a narrower interval
        ([0.1, 0.6, 0.05, 0.1, 0.1, 0.1], 0.9, 5, False),  # 0.21 ± 0.31 at four, 0.19 ± 0.22
        ([0.2, 0.8, 0.2, 0.8, 0.2, 0.8], 0.9, 6, True),  # never agree: the cap; mean 0.5 passes
    ],
)
def test_decision_rule_on_worked_examples(
    scores: list[float], confidence: float, n: int, passes: bool
) -> None:
    """The low end gets ``scores`` seed by seed; the high end always passes."""
    sr = searcher(search(max_replicates=6, confidence=confidence))
    drive(sr, lambda v, seed: scores[seed] if v == 2 else 0.95)
    low = sr.summary()["probes"][0]
    assert (low["value"], low["n"], low["passes"]) == (2, n, passes), low
    assert low["uncertain"] == (n == 6)
    assert sr.threshold == (2 if passes else sr.summary()["bracket"][1])


def test_far_values_use_replicates_only_and_near_values_get_more() -> None:
    sr = searcher(search())
    ran, _ = drive(sr)
    out = sr.summary()
    probes = {p["value"]: p for p in out["probes"]}
    far = [v for v in probes if not 1 / 1.5 < v / TRUE < 1.5]
    near = [v for v in probes if v not in far]
    assert len(far) >= 3 and near
    assert all(probes[v]["n"] == 2 for v in far), out
    assert max(probes[v]["n"] for v in near) > 2, out
    # each value stopped at the first count where its seeds agree (never before), or at the cap
    for p in out["probes"]:
        assert p["n"] == 2 or not agrees(p["scores"][:-1]), p
        assert agrees(p["scores"]) or (p["n"] == 8 and p["uncertain"]), p
    assert len(ran) == out["n_trials"] == sum(p["n"] for p in out["probes"])
    assert len(set(ran)) == len(ran)  # no trial runs twice


@pytest.mark.parametrize("true", [3, 37, 150, 900])
def test_answer_lands_within_one_resolution_step(true: float) -> None:
    sr = searcher(search())
    drive(sr, lambda v, s: noisy_metric(v, s, true))
    out = sr.summary()
    assert out["done"] and out["threshold"] == out["bracket"][1]
    # one step: a factor 1.25, or 1 where integers are closer than that
    assert min(true / 1.25, true - 1) <= out["threshold"] <= max(true * 1.25, true + 1), out
    low, high = out["bracket"]
    assert high / low <= 1.25 or high - low == 1


def test_adaptive_beats_fixed_replicates_near_a_noisy_threshold() -> None:
    """Over 60 true thresholds: as accurate as 8 fixed seeds for well under half the trials."""

    def misses_and_trials(s: ThresholdSearch) -> tuple[int, int]:
        misses = trials = 0
        for true in range(20, 200, 3):
            sr = searcher(s)
            ran, _ = drive(sr, lambda v, seed, t=true: noisy_metric(v, seed, t))
            found = sr.summary()["threshold"]
            misses += not true / 1.25 <= found <= true * 1.25
            trials += len(ran)
        return misses, trials

    two = misses_and_trials(search(max_replicates=None))
    eight = misses_and_trials(search(replicates=8, max_replicates=None))
    adaptive = misses_and_trials(search())  # 2 seeds, up to 8
    assert adaptive[0] < two[0] and adaptive[0] <= eight[0], (two, eight, adaptive)
    assert adaptive[1] < eight[1] / 2, (two, eight, adaptive)


def test_max_replicates_caps_and_marks_values_uncertain(caplog: pytest.LogCaptureFixture) -> None:
    def coin(value: float, seed: int) -> float:
        """Near TRUE the seeds alternate 0.2 / 0.8: their interval never excludes the level."""
        if 1 / 1.5 < value / TRUE < 1.5:
            return 0.8 if seed % 2 else 0.2
        return step_metric(value, seed)

    s = search(max_replicates=5)
    sr = searcher(s)
    with caplog.at_level(logging.INFO, logger="sweeps.running.threshold"):
        ran, _ = drive(sr, coin)
    out = sr.summary()
    shaky = [p for p in out["probes"] if p["uncertain"]]
    assert shaky and all(p["n"] == 5 and p["decided"] for p in shaky)
    assert all(p["n"] <= 5 for p in out["probes"])
    # five alternating seeds have mean 0.44: undecided, so the mean says "fails"
    assert all(p["mean"] == pytest.approx(0.44) and not p["passes"] for p in shaky)
    assert len(ran) <= s.replicate_cap * s.max_probes
    assert any(
        r.levelno == logging.WARNING and "max_replicates=5" in r.getMessage()
        for r in caplog.records
    )


def test_failed_trials_count_as_zero() -> None:
    def flaky(value: float, seed: int) -> float | None:
        return None if seed == 1 else step_metric(value, seed)  # seed 1 always fails

    sr = searcher(search(max_replicates=4))
    drive(sr, flaky)
    out = sr.summary()
    top = out["probes"][-1]  # high end: seeds 0, 2, 3 pass, seed 1 failed -> disagree
    assert top["scores"][1] is None and top["n"] == 4
    assert top["mean"] == pytest.approx(sum(step_metric(2000, s) for s in (0, 2, 3)) / 4)


# --- fixed replicates: as before --------------------------------------------------------------
def test_fixed_replicates_probe_the_same_trials_as_before() -> None:
    """The module docstring's worked example, trial by trial, with and without a cap of 2."""
    want_values = [1, 1000, 32, 179, 76, 49, 40]
    for cap in (None, 2):
        sr = searcher(search(low=1, high=1000, max_replicates=cap))
        ran, _ = drive(sr, step_metric)
        assert ran == [(v, s) for v in want_values for s in (0, 1)]
        assert sr.threshold == 40


def test_fixed_replicates_never_add_seeds_even_when_seeds_disagree() -> None:
    sr = searcher(search(max_replicates=None, replicates=3))
    drive(sr)
    out = sr.summary()
    assert all(p["n"] == 3 for p in out["probes"])
    assert any(p["uncertain"] for p in out["probes"])  # reported, but not acted on


# --- summary, checkpoints, lookup ------------------------------------------------------------
def test_summary_format_and_final_log(caplog: pytest.LogCaptureFixture) -> None:
    sr = searcher(search())
    assert sr.summary()["threshold"] is None and not sr.summary()["done"]
    with caplog.at_level(logging.INFO, logger="sweeps.running.threshold"):
        drive(sr)
    out = sr.summary()
    assert set(out) == {
        "axis",
        "metric",
        "level",
        "done",
        "threshold",
        "bracket",
        "n_trials",
        "n_reused",
        "probes",
    }
    assert (out["axis"], out["metric"], out["level"], out["n_reused"]) == (
        AXIS,
        "test_acc",
        LEVEL,
        0,
    )
    p = out["probes"][0]
    assert set(p) == {"value", "seeds", "scores", "n", "mean", "passes", "decided", "uncertain"}
    assert p["value"] == 2 and p["seeds"] == [0, 1] and p["n"] == 2
    assert p["mean"] == pytest.approx(sum(p["scores"]) / 2)
    assert [q["value"] for q in out["probes"]] == sorted(q["value"] for q in out["probes"])
    assert f"'threshold': {out['threshold']}" in caplog.text
    assert all(r.name == "sweeps.running.threshold" for r in caplog.records)


@pytest.mark.parametrize("stop_after", [1, 5, 9, 14])
def test_save_and_restore_continue_to_the_same_answer(tmp_path: Path, stop_after: int) -> None:
    whole = searcher(search())
    want, _ = drive(whole)
    first = searcher(search())
    ran, running = drive(first, stop_after=stop_after)
    assert running, "stopped with trials still running (as Tune saves mid-round)"
    path = tmp_path / "searcher-state.pkl"
    first.save(str(path))
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    again = searcher(search())
    again.restore(str(path))
    rest, _ = drive(again, running=running)  # the running trials complete into the new one
    assert ran + rest == want
    assert again.summary() == whole.summary()


def test_restore_refuses_another_search(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    searcher(search()).save(str(path))
    with pytest.raises(ValueError, match="searcher state is for search"):
        searcher(search(level=0.6)).restore(str(path))
    with pytest.raises(ValueError, match="version"):
        path.write_bytes(pickle.dumps({"version": 99}))
        searcher(search()).restore(str(path))


def test_lookup_answers_trials_without_running_them() -> None:
    whole = searcher(search())
    ran, _ = drive(whole)
    stored = {(v, s): noisy_metric(v, s) for v, s in ran}

    asked: list[dict[str, Any]] = []

    def lookup(params: dict[str, Any]) -> float | None:
        asked.append(dict(params))
        return stored.get((params[AXIS], params["seed"]))

    # everything stored: Tune is never asked to run a trial, and the answer is the same
    sr = searcher(search(), lookup=lookup)
    assert sr.suggest("t-only") == Searcher.FINISHED
    out, want = sr.summary(), whole.summary()
    assert out["probes"] == want["probes"] and out["threshold"] == want["threshold"]
    assert (out["n_trials"], out["n_reused"]) == (0, len(ran))
    assert asked == [{AXIS: v, "seed": s} for v, s in ran]

    # only the ends stored: they are skipped, every other trial runs as before
    ends = {k: m for k, m in stored.items() if k[0] in (2, 2000)}
    sr = searcher(search(), lookup=lambda p: ends.get((p[AXIS], p["seed"])))
    rest, _ = drive(sr)
    assert rest == [t for t in ran if t not in ends]
    assert sr.summary()["n_reused"] == len(ends) == 4


def test_lookup_can_answer_a_whole_round_mid_search() -> None:
    """A round answered by lookup alone must not stall: suggest() moves on by itself."""
    mids = {(32, 0): 0.1, (32, 1): 0.2}  # the first bisection probe, both seeds

    sr = searcher(
        search(low=1, high=1000, max_replicates=None),
        lookup=lambda p: mids.get((p[AXIS], p["seed"])),
    )
    ran, _ = drive(sr, step_metric, concurrency=1)
    assert (32, 0) not in ran and [v for v, _ in ran] == [
        1,
        1,
        1000,
        1000,
        179,
        179,
        76,
        76,
        49,
        49,
        40,
        40,
    ]
    assert sr.threshold == 40


# --- the spec: fields, errors, counts ----------------------------------------------------------
@pytest.mark.parametrize(
    ("search_kw", "seeds", "where", "rule"),
    [
        (
            {"replicates": 3, "max_replicates": 2},
            [0],
            "search.threshold.max_replicates",
            "must be >= replicates=3, got 2",
        ),
        (
            {"replicates": 1, "max_replicates": 4},
            [0],
            "search.threshold.replicates",
            "need replicates >= 2",
        ),
        (
            {"replicates": 2, "max_replicates": 0},
            [0],
            "search.threshold.max_replicates",
            "greater than or equal to 1",
        ),
        ({"confidence": 1.0}, [0], "search.threshold.confidence", "less than 1"),
        ({"confidence": 0}, [0], "search.threshold.confidence", "greater than 0"),
        (
            {"replicates": 2, "max_replicates": 4},
            [0, 1],
            "seeds",
            "max_replicates=4 needs one seed (replicates count up from it) or exactly 4 seeds, "
            "got 2",
        ),
        ({"replicates": 2}, [0, 1, 2], "seeds", "replicates=2 needs one seed"),
        ({"low": 0.2, "high": 10}, [0], "low/high", "1 <= round(low) < round(high)"),
    ],
)
def test_bad_threshold_fields_name_the_field(
    search_kw: dict[str, Any], seeds: list[int], where: str, rule: str
) -> None:
    body = {"kind": "threshold", "level": 0.5, "low": 2, "high": 200, **search_kw}
    with pytest.raises(SpecError) as err:
        spec_from_dict(tiny_spec(search=body, seeds=seeds))
    msg = str(err.value)
    assert where in msg and rule in msg, msg


def test_searcher_needs_enough_seeds() -> None:
    with pytest.raises(ValueError, match="seeds: a threshold search needs 8 replicate seeds"):
        ThresholdSearcher(search(), (0, 1))


def test_spec_counts_and_seeds_cover_max_replicates() -> None:
    body = {"kind": "threshold", "level": 0.5, "low": 2, "high": 2000, "replicates": 2}
    fixed = spec_from_dict(tiny_spec(search=body, seeds=[5]))
    adaptive = spec_from_dict(tiny_spec(search={**body, "max_replicates": 6}, seeds=[5]))
    assert fixed.replicate_seeds == (5, 6)
    assert adaptive.replicate_seeds == (5, 6, 7, 8, 9, 10)
    assert isinstance(fixed.search, ThresholdSearch)
    assert isinstance(adaptive.search, ThresholdSearch)
    assert fixed.n_trials == 2 * fixed.search.max_probes
    assert adaptive.n_trials == 6 * adaptive.search.max_probes
    given_seeds = spec_from_dict(tiny_spec(search={**body, "max_replicates": 3}, seeds=[4, 0, 9]))
    assert given_seeds.replicate_seeds == (4, 0, 9)
    assert [p.seed for p in given_seeds.trials()] == [4, 0, 9]


def test_max_probes_bounds_integer_bisection() -> None:
    """Rounded midpoints split unevenly: [5, 5000] at 1.25 can take 8 probes, not 7."""
    s = search(low=5, high=5000, max_replicates=None)
    assert s.max_probes == 8
    sr = searcher(s)
    drive(sr, lambda v, seed: 1.0 if v >= 7 else 0.0)
    assert len(sr.summary()["probes"]) == 8


@settings(max_examples=80, deadline=None)
@given(
    low=st.integers(1, 50),
    ratio=st.floats(1.2, 5000),
    resolution=st.floats(1.02, 3),
    integer=st.booleans(),
    true_log=st.floats(-1.5, 1.5),
    replicates=st.integers(2, 3),
    extra=st.integers(0, 4),
    concurrency=st.integers(1, 4),
)
def test_every_search_stays_within_its_bounds(
    low: int,
    ratio: float,
    resolution: float,
    integer: bool,
    true_log: float,
    replicates: int,
    extra: int,
    concurrency: int,
) -> None:
    high = low * ratio
    if integer and round(high) <= low:
        return
    s = search(
        low=low,
        high=high,
        resolution=resolution,
        integer=integer,
        replicates=replicates,
        max_replicates=replicates + extra,
    )
    true = math.exp(math.log(low) + true_log * math.log(ratio))
    sr = searcher(s)
    ran, _ = drive(sr, lambda v, seed: noisy_metric(v, seed, true), concurrency=concurrency)
    out = sr.summary()
    assert out["done"]
    assert len(out["probes"]) <= s.max_probes and len(ran) <= s.replicate_cap * s.max_probes
    assert all(replicates <= p["n"] <= s.replicate_cap for p in out["probes"])
    passes = {p["value"]: p["passes"] for p in out["probes"]}
    low_v, high_v = out["bracket"]
    if out["threshold"] is None:  # both ends fail
        assert not passes[low_v] and not passes[high_v]
    elif out["threshold"] == low_v:  # the low end passes already
        assert passes[low_v]
    else:  # a narrow bracket: fails at low, passes at high
        assert out["threshold"] == high_v and passes[high_v] and not passes[low_v]
        assert high_v / low_v <= resolution or midpoint(low_v, high_v, integer) is None


# --- end to end, through the real driver --------------------------------------------------------
def noisy_trial(plan: Any, report: Any, checkpoint_dir: str, cache_dir: str) -> None:
    """A fake trial function reporting `noisy_metric` for its number of instructions and seed."""
    report({"step": 1, "test_acc": noisy_metric(plan.data.n_instructions, plan.seed)}, None)


@pytest.fixture
def shipped_by_value() -> Iterator[None]:
    """Ray workers cannot import this test module or its helpers; send them by value."""
    from ray import cloudpickle

    modules = (sys.modules[__name__], searching)
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray", "shipped_by_value")
def test_adaptive_threshold_search_through_the_driver(tmp_path: Path) -> None:
    from sweeps import threshold_estimate
    from sweeps.running.driver import run_experiment, tune_storage_path
    from sweeps.store import open_store

    spec = spec_from_dict(
        tiny_spec(
            name="thresh-adaptive",
            search={
                "kind": "threshold",
                "axis": AXIS,
                "metric": "test_acc",
                "level": LEVEL,
                "low": 5,
                "high": 500,
                "replicates": 2,
                "max_replicates": 6,
                "resolution": 1.5,
            },
            budget={"total_examples": 4000},
            max_concurrent=2,
        )
    )
    uri = str(tmp_path / "store")
    exp = run_experiment(spec, "thresh-a1", uri, trial_fn=noisy_trial, verbose=0)
    est = threshold_estimate(exp, uri)
    counts = {value: n for value, _, n in est["probes"]}
    assert TRUE / 1.5 <= est["threshold"] <= TRUE * 1.5, est
    assert counts[5] == counts[500] == 2 and max(counts.values()) > 2, counts
    assert est["n_trials"] <= spec.n_trials
    store = open_store(uri)
    assert store.progress(exp)["complete"] == est["n_trials"]
    # Tune saved the searcher's state; a restored searcher holds the finished search
    state = sorted((Path(tune_storage_path(store, uri)) / exp).glob("searcher-state-*.pkl"))
    assert state, "Tune did not save the searcher"
    assert isinstance(spec.search, ThresholdSearch)
    restored = ThresholdSearcher(spec.search, spec.replicate_seeds)
    restored.restore(str(state[-1]))
    out = restored.summary()
    assert out["done"] and out["threshold"] == est["threshold"]
    assert {p["value"]: p["n"] for p in out["probes"]} == counts
