"""The phase boundary (issue 25): one threshold search per budget in one experiment
(`ThresholdSearch.over`). The spec's fields, errors and bounds; the searcher interleaving the
budgets' bisections, saving and restoring them and reusing stored trials; the statistics (I* and
the slope of log I* on log N with their intervals) and the verdict on synthetic cells; the chart
data and the report; a smoke frontier through the real driver on a local Ray.

The searcher is driven by hand the way Tune does (`searching.drive`) on `noisy_metric` curves
whose threshold moves with the budget as I* = 40 (N / 1000)^0.5: 40, 80 and 160 rules at 1k, 4k
and 16k examples, so the slope to recover is 0.5.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakes
import numpy as np
import pytest
import searching
from conftest import tiny_spec
from ray.tune.search import Searcher
from searching import AXIS, LEVEL, drive, noisy_metric, search, searcher

from sweeps import SpecError, spec_from_dict
from sweeps.reporting.frontier import fit_frontier
from sweeps.reporting.plan import format_plan, plan_experiment
from sweeps.reporting.verdicts import FrontierRun, ThresholdRun, frontier
from sweeps.specs.limits import bounding_plans
from sweeps.specs.presets import load_preset
from sweeps.specs.spec import ThresholdSearch
from sweeps.stats import bootstrap_log_slope

OVER = "data.n_examples"
BUDGETS = (1000, 4000, 16000)


def true_threshold(n: float) -> float:
    return 40 * (n / 1000) ** 0.5


def score(params: dict[str, Any]) -> float:
    """`noisy_metric` around this budget's threshold, with noise of its own."""
    n = params[OVER]
    return noisy_metric(params[AXIS], params["seed"], true_threshold(n), salt=f":{n}")


def over(*values: float) -> dict[str, Any]:
    return {"over": {"field": OVER, "values": list(values or BUDGETS)}}


def curves_of(summary: dict[str, Any]) -> dict[float, dict[float, list[float]]]:
    """Each group's probes as ``{budget: {I: scores}}`` (a failed seed counts 0)."""
    return {
        g["value"]: {p["value"]: [s or 0.0 for s in p["scores"]] for p in g["probes"]}
        for g in summary["groups"]
    }


# --- the searcher ------------------------------------------------------------------------------


def test_each_budget_gets_its_own_bisection_and_the_slope_is_recovered() -> None:
    s = search(**over())
    sr = searcher(s)
    ran, _ = drive(sr, score_of=score)
    out = sr.summary()
    assert out["done"] and out["over"] == OVER and [g["value"] for g in out["groups"]] == [*BUDGETS]
    assert len(ran) == out["n_trials"] == sum(g["n_trials"] for g in out["groups"])
    assert len(set(ran)) == len(ran) and {n for n, _, _ in ran} == set(BUDGETS)
    for g in out["groups"]:
        true = true_threshold(g["value"])
        assert true / 1.25 <= g["threshold"] <= true * 1.25, g
        assert all(2 <= p["n"] <= 8 for p in g["probes"])
    assert len(ran) <= s.max_trials
    fit = fit_frontier(curves_of(out), LEVEL)
    assert fit.slope.xs == BUDGETS
    assert fit.slope.low <= 0.5 <= fit.slope.high, fit.slope
    assert abs(fit.slope.estimate - 0.5) < 0.1 and fit.slope.excludes_zero
    for n in BUDGETS:
        assert true_threshold(n) / 1.25 <= fit.points[n].estimate <= true_threshold(n) * 1.25


def test_a_group_waiting_for_its_round_does_not_keep_another_from_running() -> None:
    """One trial per round and two CPUs: every fill runs one trial of each bisection while
    both are unfinished (a searcher that waited for one group would leave a CPU idle)."""
    sr = searcher(search(replicates=1, max_replicates=None, **over(1000, 16000)))
    running: list[tuple[str, dict[str, Any]]] = []
    fills = []
    for i in range(200):
        while len(running) < 2:
            cfg = sr.suggest(f"i{i}-{len(running)}")
            if cfg is None or cfg == Searcher.FINISHED:
                break
            running.append((f"i{i}-{len(running)}", cfg["params"]))
        unfinished = [g for g in sr.groups if not g.done]
        fills.append((len(running), len(unfinished)))
        if not running:
            break
        tid, params = running.pop(0)
        sr.on_trial_complete(tid, {"test_acc": score(params)})
    assert sr.summary()["done"]
    both = [busy for busy, unfinished in fills if unfinished == 2]
    assert len(both) >= 8 and all(busy == 2 for busy in both), fills


@pytest.mark.parametrize("stop_after", [1, 7, 20, 33])
def test_save_and_restore_mid_search_continue_to_the_same_answer(
    tmp_path: Path, stop_after: int
) -> None:
    whole = searcher(search(**over()))
    want, _ = drive(whole, score_of=score)
    first = searcher(search(**over()))
    ran, running = drive(first, score_of=score, stop_after=stop_after)
    assert running, "stopped with trials still running (as Tune saves mid-round)"
    path = tmp_path / "searcher-state.pkl"
    first.save(str(path))
    again = searcher(search(**over()))
    again.restore(str(path))
    rest, _ = drive(again, score_of=score, running=running)
    assert ran + rest == want
    assert again.summary() == whole.summary()


def test_restore_refuses_other_budgets_and_an_older_state(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    searcher(search(**over())).save(str(path))
    with pytest.raises(ValueError, match="searcher state is for search"):
        searcher(search(**over(1000, 4000))).restore(str(path))
    path.write_bytes(pickle.dumps({"version": 1, "low": 2, "high": 2000}))
    with pytest.raises(ValueError, match="version 1, expected 2"):
        searcher(search(**over())).restore(str(path))


def test_lookup_answers_each_trial_of_its_own_budget() -> None:
    """Results stored for one budget (another experiment's) are adopted trial by trial; the
    other budgets run as before, and every lookup names the trial's budget."""
    whole = searcher(search(**over()))
    ran, _ = drive(whole, score_of=score)
    stored = {t: score({OVER: t[0], AXIS: t[1], "seed": t[2]}) for t in ran if t[0] == 4000}
    asked: list[dict[str, Any]] = []

    def lookup(params: dict[str, Any]) -> float | None:
        asked.append(dict(params))
        return stored.get((params[OVER], params[AXIS], params["seed"]))

    sr = searcher(search(**over()), lookup=lookup)
    rest, _ = drive(sr, score_of=score)
    assert rest == [t for t in ran if t[0] != 4000]
    out, want = sr.summary(), whole.summary()
    by_budget = {g["value"]: g for g in out["groups"]}
    assert by_budget[4000]["n_reused"] == len(stored) and by_budget[4000]["n_trials"] == 0
    assert [g["probes"] for g in out["groups"]] == [g["probes"] for g in want["groups"]]
    assert (out["n_trials"], out["n_reused"]) == (len(rest), len(stored))
    assert all(set(p) == {OVER, AXIS, "seed"} for p in asked) and len(asked) == len(ran)


# --- the spec ----------------------------------------------------------------------------------


def frontier_body(**search_kw: Any) -> dict[str, Any]:
    body = {
        "kind": "threshold",
        "level": 0.5,
        "low": 4,
        "high": 400,
        "replicates": 2,
        "max_replicates": 3,
        "resolution": 1.5,
        **over(),
        **search_kw,
    }
    return tiny_spec(search=body)


@pytest.mark.parametrize(
    ("change", "where", "rule"),
    [
        (
            {"over": {"values": [{"data.n_examples": 1000}]}},
            "search.threshold.over.field",
            "required",
        ),
        (
            {"over": {"field": AXIS, "values": [10, 20]}},
            "search.threshold.over.field",
            "must differ from axis",
        ),
        (
            {"over": {"field": OVER, "values": [1000, 1000]}},
            "search.threshold.over.values",
            "must be distinct",
        ),
        ({"over": {"field": "data.n_exmples", "values": [1]}}, "search.over.field", "unknown"),
        # the smallest budget cannot give each of the bracket's 400 rules an example
        (
            {"over": {"field": OVER, "values": [100, 4000]}},
            "search.over.values.0",
            "n_examples=100 < n_instructions=400",
        ),
    ],
)
def test_bad_over_fields_name_the_field(change: dict[str, Any], where: str, rule: str) -> None:
    with pytest.raises(SpecError) as err:
        spec_from_dict(frontier_body(**change))
    msg = str(err.value)
    assert where in msg and rule in msg, msg


def test_over_a_budget_field_refuses_the_spec_budget() -> None:
    body = {**frontier_body(), "budget": {"total_examples": 4000}}
    with pytest.raises(SpecError, match=r"search.over.field: data.n_examples sets each group"):
        spec_from_dict(body)


def test_counts_fields_and_quota_plans_cover_every_budget() -> None:
    spec = spec_from_dict(frontier_body())
    s = spec.search
    assert isinstance(s, ThresholdSearch) and s.groups == [{OVER: n} for n in BUDGETS]
    assert spec.n_trials == s.max_trials == 3 * s.max_probes * 3
    assert spec.varied_fields == [OVER, AXIS] == spec.independent_fields
    ends = {(p.data.n_examples, p.data.n_instructions) for p in bounding_plans(spec)}
    assert {(n, i) for n in BUDGETS for i in (4, 400)} <= ends
    plan = spec.plan({OVER: 4000, AXIS: 64, "seed": 1})
    assert (plan.data.n_examples, plan.data.examples_per_instruction) == (4000, None)
    assert plan.params == {OVER: 4000, AXIS: 64, "seed": 1}
    # the data engine gives every rule n // I or n // I + 1 examples of a budget
    assert plan.data.n_train == 4000


#: The fields that make a budget axis: the frontier sets n_examples per group (and trains a fixed
#: number of steps on CPU); the grid it stands beside sets examples per rule.
BUDGET_FIELDS = {
    "data": {"n_instructions", "n_examples", "examples_per_instruction"},
    "train": {"epochs", "max_steps", "eval_every"},
}


@pytest.mark.parametrize(("name", "twin"), [("frontier-mini", "fig2a-mini"), ("frontier", "fig2a")])
def test_frontier_presets_are_their_fig2a_twins_problem_over_8x_of_budget(
    name: str, twin: str
) -> None:
    """Same problem, model and optimiser as the Fig. 2a preset (bar the budget fields); the
    strict metric; >= 3 budgets spanning >= 8x; every example of every budget seen at least
    once when the steps are fixed; the bracket's largest I gets an example at every budget."""
    spec, grid = load_preset(name), load_preset(twin)
    for part, skip in BUDGET_FIELDS.items():
        mine, theirs = (
            {k: v for k, v in getattr(p, part).model_dump(mode="json").items() if k not in skip}
            for p in (spec, grid)
        )
        assert mine == theirs, f"{name}.{part}: resync with {twin}.yaml"
    s = spec.search
    assert isinstance(s, ThresholdSearch) and s.over is not None and s.over.field == OVER
    assert spec.metric == s.metric == "test_acc_op_new_x" and s.level == 0.5
    budgets = s.over.points()
    assert len(budgets) >= 3 and max(budgets) / min(budgets) >= 8
    assert s.replicates >= 2 and (s.max_replicates or 0) > s.replicates  # adaptive, an interval
    assert min(budgets) >= s.high
    if spec.train.max_steps is not None:
        assert max(budgets) <= spec.train.max_steps * spec.train.batch_size


def test_plan_prices_every_budget_of_the_paper_scale_frontier() -> None:
    spec = load_preset("frontier")
    s = spec.search
    assert isinstance(s, ThresholdSearch) and s.over is not None
    budgets = s.over.points()
    assert max(budgets) / min(budgets) >= 8 and min(budgets) < 1e6 < max(budgets)
    plan = plan_experiment(spec)
    assert plan.n_trials == len(budgets) * s.max_probes * s.replicate_cap
    assert [c.cell[OVER] for c in plan.cells] == budgets
    assert all(c.n_trials == s.max_probes * s.replicate_cap for c in plan.cells)
    hours = plan.totals["gpu_hours"]
    assert hours is not None and hours > 0
    # the largest budget costs the most (same epochs, more examples)
    assert plan.cells[-1].gpu_hours > 10 * plan.cells[0].gpu_hours  # type: ignore[operator]
    assert f"{len(budgets)} bisections x" in format_plan(plan)


# --- the statistics and the verdict ------------------------------------------------------------


def cells_for(thresholds: dict[int, float | None], seeds: int = 2) -> list[dict[str, Any]]:
    """Synthetic cells of a frontier: at each budget a bisection's probes (a factor 4 either
    side, then 1.25), seeds scattered ±0.05 around a logistic through 0.5 at the threshold
    (None: no probe reaches it)."""
    cells = []
    for n, t in thresholds.items():
        at = t or 1e9
        for i in (10, 40, 100, 160, 200, 250, 320, 640, 1280):
            mean = 1 / (1 + (at / i) ** 3)
            vals = [min(max(mean + 0.05 * math.sin(3 * k + i), 0.0), 1.0) for k in range(seeds)]
            cells.append(
                {"budget": n, "I": i, "n": seeds, "test_acc_op_new_x_values": vals, "seeds": [0, 1]}
            )
    return cells


def run_of(n_trials: int = 40, budgets: tuple[float, ...] = (1000, 4000, 16000)) -> FrontierRun:
    return FrontierRun(ThresholdRun(0.5, 10, 1280, 1.25, 2, n_trials), budgets)


def test_frontier_shown_when_the_threshold_moves_with_the_budget() -> None:
    v = frontier(cells_for({1000: 100, 4000: 200, 16000: 400}), run_of())
    assert v.outcome == "effect shown", v.reason
    assert re.search(r"N=1,000: I\* = (9\d|10\d) \(95% interval \d+–\d+, 2000 bootstrap", v.reason)
    assert re.search(r"N=16,000: I\* = (39\d|4[01]\d) \(95% interval", v.reason)
    assert re.search(r"slope of log I\* on log N: 0\.(49|5\d) \(95% interval 0\.", v.reason)
    assert (
        "from 3 of 3 budgets; the threshold moves with the budget (interval excludes 0): yes"
        in v.reason
    )
    assert "40 trials against 138 for a grid at the same step at every budget" in v.reason


def test_frontier_partly_when_the_threshold_stays_put() -> None:
    v = frontier(cells_for({1000: 200, 4000: 210, 16000: 195}), run_of())
    assert v.outcome == "partly", v.reason
    assert "(interval excludes 0): no" in v.reason


def test_frontier_says_so_when_a_threshold_lies_outside_the_bracket() -> None:
    v = frontier(cells_for({1000: 100, 4000: 200, 16000: None}), run_of())
    assert v.outcome == "partly", v.reason
    assert "N=16,000: I* above the bracket (no probe up to 1280 reaches it)" in v.reason
    assert "from 2 of 3 budgets" in v.reason
    none = frontier(cells_for({1000: None, 4000: None}), run_of(budgets=(1000, 4000)))
    assert none.outcome == "not shown" and "fewer than two budgets" in none.reason
    empty = frontier([], run_of())
    assert empty.outcome == "not shown" and "no budget has a measured probe" in empty.reason
    missing = frontier(cells_for({1000: 100, 4000: 200}), run_of())
    assert "N=16,000: not measured" in missing.reason and missing.outcome == "partly"


def test_chart_json_table_and_text_of_a_threshold_outside_its_bracket() -> None:
    """What the page, the report and RESULTS.md get when one budget's threshold lies above its
    probes and another's at or below them: JSON without NaN or infinity (the bracket end it
    passed in ``low`` / ``high``, ``outside`` saying which), the slope left undefined (one
    budget inside), and words instead of numbers in the table and the report's lines."""
    from sweeps.reporting.frontier import chart, table_md

    def probes(t: float) -> dict[float, list[float]]:
        return {t / 4: [0.0, 0.05], t: [0.45, 0.55], t * 4: [0.95, 1.0]}

    fit = fit_frontier(
        {
            1e3: {8.0: [0.7, 0.8], 64.0: [0.9, 1.0]},
            4e3: probes(80),
            16e3: {8.0: [0.0], 64.0: [0.1]},
        },
        0.5,
    )
    data = chart(fit, OVER, AXIS, "test_acc_op_new_x", grid_trials=42)
    json.dumps(data, allow_nan=False)
    below, inside, above = data["points"]
    assert (below["outside"], below["estimate"], below["high"]) == ("below", None, 8.0)
    assert (above["outside"], above["estimate"], above["low"]) == ("above", None, 64.0)
    assert inside["outside"] is None and inside["low"] < inside["estimate"] < inside["high"]
    assert (above["trials"], data["trials"], data["grid_trials"]) == (2, 12, 42)
    assert data["slope"]["estimate"] is None and data["line"] is None
    assert data["slope"]["budgets"] == [4e3]
    table = table_md(fit, 14)
    assert "| 1,000 | ≤ 8 | below the bracket | 8 | 4 | 14 |" in table
    assert "| 16,000 | > 64 | above the bracket | none | 2 | 14 |" in table
    assert fit.text(16e3) == "above the bracket: no probe up to 64 reaches 0.5, 2 trials"
    assert fit.text(1e3) == "at or below the bracket's low end 8, 4 trials"
    assert re.fullmatch(
        r"\d+ \(95% interval \d+–\d+, 2000 bootstrap resamples\), 6 trials", fit.text(4e3)
    )


def test_slope_interval_covers_the_true_slope_about_95_percent_of_the_time() -> None:
    """Three budgets with thresholds 64 (N/1000)^0.5 measured at probes like a bisection's
    (2 seeds, 4 near the threshold; noise sd 0.08): the slope's interval must hold 0.5 in at
    least 85 % of 150 simulated frontiers (it holds it in 145 of them; in 1,000 other simulated
    frontiers with 1,000 resamples each, in 94.8 %), with no resample left out when every
    threshold lies inside its probes."""
    rng = np.random.default_rng(2025)
    held = 0
    for trial in range(150):
        curves = {}
        for n in (1000, 4000, 16000):
            t = 64 * (n / 1000) ** 0.5
            probes = {}
            for x in (t / 4, t / 1.6, t / 1.25, t * 1.1, t * 1.4, t * 4):
                mean = 1 / (1 + math.exp(-3 * math.log(x / t)))
                k = 4 if 1 / 1.5 <= x / t <= 1.5 else 2
                probes[x] = list(np.clip(mean + rng.normal(0, 0.08, size=k), 0, 1))
            curves[n] = probes
        _, slope = bootstrap_log_slope(curves, 0.5, n_boot=400, seed=trial)
        assert slope.low <= slope.estimate <= slope.high and slope.undefined == 0
        held += slope.low <= 0.5 <= slope.high
    assert held >= 128, held


# --- a smoke frontier through the real driver --------------------------------------------------


@pytest.fixture
def shipped_by_value() -> Iterator[None]:
    """Ray workers cannot import the test helpers; send them by value."""
    from ray import cloudpickle

    modules = (sys.modules[__name__], searching)
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def smoke_frontier(budgets: list[int] | None = None, name: str = "smoke-frontier") -> Any:
    """The ``smoke-frontier`` preset (I in [4, 256] to x2, 2 seeds a probe, budgets 1k, 4k,
    16k: at most 30 trials), optionally at other ``budgets``; the tests run it on the fake
    phase boundary `fakes.frontier_accuracy` (I* = 10 (N / 1000)^0.5)."""
    body = load_preset("smoke-frontier").model_dump(mode="json")
    if budgets is not None:
        body["search"]["over"]["values"] = budgets
    return spec_from_dict({**body, "name": name})


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray", "shipped_by_value")
def test_smoke_frontier_through_the_driver_with_reuse_between_experiments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweeps.__main__ import report
    from sweeps.reporting.charts import chart_data
    from sweeps.reporting.tables import results, threshold_estimate
    from sweeps.running.driver import run_experiment, tune_storage_path
    from sweeps.running.threshold import ThresholdSearcher
    from sweeps.store import open_store

    uri = str(tmp_path / "store")
    spec = smoke_frontier()
    exp = run_experiment(spec, "frontier-a", uri, trial_fn=fakes.frontier_accuracy, verbose=0)
    store = open_store(uri)
    est = threshold_estimate(exp, store=store)
    assert est["over"] == OVER and [g["value"] for g in est["groups"]] == [1000, 4000, 16000]
    for g in est["groups"]:
        true = fakes.frontier_threshold(g["value"])
        assert true / 2 <= g["threshold"] <= true * 2, g
    trials = store.get_trials(exp)
    assert all(set(t.params) == {OVER, AXIS, "seed"} for t in trials)
    assert store.progress(exp)["complete"] == len(trials) <= spec.n_trials

    # the chart data the results page draws: a crossing with its interval at every budget
    data = chart_data(spec, results(exp, store=store), trials)
    fr = data["frontier"]
    assert fr is not None and data["threshold"] is None and data["heatmap"] is None
    json.dumps(fr, allow_nan=False)  # no NaN or infinity reaches the page
    assert [p["budget"] for p in fr["points"]] == [1000, 4000, 16000]
    assert all(p["low"] <= p["estimate"] <= p["high"] for p in fr["points"])
    assert sum(p["trials"] for p in fr["points"]) == fr["trials"] == len(trials)
    # [4, 256] at x2 is 7 points, 2 seeds each, at 3 budgets
    assert fr["grid_trials"] == 3 * 7 * 2
    s = fr["slope"]
    assert s["low"] <= fakes.FRONTIER_SLOPE <= s["high"] and s["low"] > 0, s
    assert fr["line"]["x"] == [1000, 16000]
    print(f"smoke frontier: {len(trials)} trials; {json.dumps(fr['points'])}; slope {s}")

    # `python -m sweeps report` writes the frontier PNG too
    assert report(exp, uri, tmp_path / "report") == 0
    printed = capsys.readouterr().out
    assert "slope of log I* on log data.n_examples" in printed
    assert f"  trials: {len(trials)} against {fr['grid_trials']} for a grid at the same" in printed
    assert re.search(r"  data.n_examples=1000: I\* = \d+ \(95% interval .*\), \d+ trials", printed)
    assert (tmp_path / "report" / f"{exp}-frontier.png").read_bytes()[:4] == b"\x89PNG"

    # Tune saved the searcher: a restored one holds every group's finished bisection
    state = sorted((Path(tune_storage_path(store, uri)) / exp).glob("searcher-state-*.pkl"))
    assert state, "Tune did not save the searcher"
    assert isinstance(spec.search, ThresholdSearch)
    restored = ThresholdSearcher(spec.search, spec.replicate_seeds)
    restored.restore(str(state[-1]))
    out = restored.summary()
    assert out["done"] and [g["threshold"] for g in out["groups"]] == [
        g["threshold"] for g in est["groups"]
    ]

    # a second frontier with one more budget adopts every trial of the shared budgets
    wider = smoke_frontier([1000, 4000, 16000, 64000], name="frontier-wider")
    exp_b = run_experiment(wider, "frontier-b", uri, trial_fn=fakes.frontier_accuracy, verbose=0)
    b_trials = open_store(uri).get_trials(exp_b)
    reused = [t for t in b_trials if t.reused_from]
    assert {t.params[OVER] for t in reused} == {1000, 4000, 16000}
    assert len(reused) == len(trials)
    assert {t.params[OVER] for t in b_trials if not t.reused_from} == {64000}
    est_b = threshold_estimate(exp_b, store=open_store(uri))
    assert [g["threshold"] for g in est_b["groups"][:3]] == [g["threshold"] for g in est["groups"]]


# --- RESULTS.md: the frontier section ----------------------------------------------------------


def test_results_section_tabulates_each_budget_the_slope_and_the_cost(tmp_path: Path) -> None:
    """frontier-mini's section of RESULTS.md from a store holding a finished frontier (probes
    like a bisection's, on the fake phase boundary I* = 10 (N / 1000)^0.5): the table of I*
    with its interval, answer and trials against the grid at every budget, the slope, the
    log-log figure with the paper's point, the verdict; the header marks the study as outside
    the default run and leaves its wall time out of the default run's total."""
    from sweeps.reporting.results_doc import (
        ResultsIndex,
        RunInfo,
        StoreSource,
        StudyRecord,
        render,
    )
    from sweeps.store import TrialRecord, open_store

    spec = smoke_frontier(name="frontier-mini")
    store = open_store(f"memory://frontier-{uuid.uuid4().hex}")
    store.create_experiment(
        "xfr", name=spec.name, spec_json=spec.spec_json, spec_hash=spec.spec_hash
    )
    n_trials = 0
    for n in BUDGETS:
        t = fakes.frontier_threshold(n)
        for i in sorted({4, 256, round(t / 2), round(t / 1.3), round(t * 1.3), round(t * 2)}):
            for seed in (0, 1):
                plan = spec.plan({OVER: n, AXIS: i, "seed": seed})
                mean = 0.5 + 0.45 * math.tanh(2 * math.log(i / t))
                tid = f"t{n_trials}"
                n_trials += 1
                store.put_trial(
                    TrialRecord(
                        "xfr",
                        tid,
                        plan.trial_key,
                        json.dumps(plan.params),
                        plan.data.content_hash,
                        "complete",
                    )
                )
                acc = {"test_acc_op_new_x": mean + 0.03 * (2 * seed - 1), "fresh_acc": 1.0}
                store.append_metrics("xfr", tid, {"step": 1, **acc})
    store.set_experiment_status("xfr", "complete")
    out = tmp_path / "docs" / "RESULTS.md"
    index = ResultsIndex()
    index.last_run = RunInfo(1.8e9, "abc1234", {"nproc": 2}, ["frontier-mini"], wall_s=700)
    index.studies["frontier-mini"] = StudyRecord(
        "frontier-mini", "complete", "xfr", spec=spec.model_dump(mode="json"), wall_s=700
    )
    doc = render(index, StoreSource(store), out)

    sec = doc.split("## frontier-mini: ")[1]
    assert "| [frontier-mini](#frontier-mini) | `xfr` | complete (not in the default run) |" in doc
    assert "all complete and current studies of the default run together 0.0 s" in doc
    assert "**The phase boundary** (unseen rules, new x" in sec
    assert "| training examples N | I* (crossing of 0.5) | 95 % interval | search answer |" in sec
    grid = FrontierRun(
        ThresholdRun(0.5, 4, 256, 2.0, 2, n_trials), tuple(map(float, BUDGETS))
    ).grid_trials
    for n in BUDGETS:
        row = re.search(
            rf"^\| {n:,} \| (\d+) \| (\d+)–(\d+) \| \d+ \| 12 \| {grid // 3} \|$", sec, re.M
        )
        assert row, (n, sec)
        est, low, high = map(int, row.groups())
        true = fakes.frontier_threshold(n)
        assert low <= est <= high and true / 1.3 <= est <= true * 1.3
    slope = re.search(
        r"Slope of log I\* against log N: (0\.\d+) \(95% interval (0\.\d+)–(0\.\d+)", sec
    )
    assert slope and float(slope[2]) <= 0.5 <= float(slope[3]), sec
    assert f"Trials: {n_trials} (0 reused) against {grid} for a grid at the same step" in sec
    assert "![frontier-mini-frontier](img/results/frontier-mini-frontier.png)" in sec
    png = tmp_path / "docs" / "img" / "results" / "frontier-mini-frontier.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "at 10⁶ examples the unseen-rule accuracy crosses 0.5 between 400 and 500" in sec
    assert re.search(r"^\*\*Verdict: effect shown\.\*\* ", sec, re.M), sec


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_frontier_mini_smoke_trains_real_models_and_renders_its_section(tmp_path: Path) -> None:
    """frontier-mini at `divsweep reproduce --smoke` settings (two budgets, one seed a probe, 3
    steps a trial) through the driver with the real trainer: one experiment whose trials
    carry their budget, and RESULTS.md's frontier table with a row per budget. The numbers
    mean nothing; the path from the preset to the section is what is tested."""
    from sweeps.reporting.results_doc import (
        ResultsIndex,
        StoreSource,
        StudyRecord,
        render,
    )
    from sweeps.reporting.studies import STUDIES, _merge, smoke_overrides
    from sweeps.running.driver import run_experiment
    from sweeps.store import open_store

    study = STUDIES["frontier-mini"]
    preset = load_preset("frontier-mini")
    spec = type(preset).model_validate(
        _merge(preset.model_dump(mode="json"), smoke_overrides(study, preset))
    )
    assert isinstance(spec.search, ThresholdSearch) and spec.search.over is not None
    budgets = spec.search.over.points()
    uri = str(tmp_path / "store")
    exp = run_experiment(spec, "frontier-smoke", uri, verbose=0)
    store = open_store(uri)
    trials = store.get_trials(exp)
    assert store.get_experiment(exp).status == "complete"
    assert {t.params[OVER] for t in trials} == set(budgets) and len(trials) <= spec.n_trials
    index = ResultsIndex()
    index.studies[study.name] = StudyRecord(
        study.name, "complete", exp, smoke=True, spec=spec.model_dump(mode="json"), wall_s=1.0
    )
    doc = render(index, StoreSource(store), tmp_path / "RESULTS.md")
    sec = doc.split(f"## {study.name}: ")[1]
    assert "**The phase boundary**" in sec
    for n in budgets:
        assert re.search(rf"^\| {n:,} \| ", sec, re.M), (n, sec)
    assert (tmp_path / "img" / "results" / "frontier-mini-frontier.png").exists()
