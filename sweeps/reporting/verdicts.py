"""Verdicts: does a measured table show the paper's effect? Pure functions, no Ray, no I/O.

Each study of `sweeps.reporting.studies` ends in one line: ``effect shown``, ``partly`` or
``not shown``, with a reason that quotes the figures it was decided on *and the test over seeds
behind each comparison* (`sweeps.stats`: one-sided Welch t-tests, two one-sided tests for "barely
matters", bootstrap intervals for a threshold). A verdict reads *cells*: one dict per grid cell
with the study's axis keys (``"I"``, ``"share"``, ``"alpha"``, ...), ``"n"`` (seeds),
``<metric>_mean`` / ``<metric>_std`` and the per-seed ``<metric>_values``. The mini presets move
thresholds (a CPU-sized problem generalises from far fewer rules than the paper's), so the
criteria test the *shape* of the effect, never the paper's absolute rule counts.

The unseen-rule metric of every study is the strict one, ``..._new_x``: test rules whose pattern
``x`` never occurred in training (the paper's "unseen instruction"); ``fresh_acc`` says whether
the models learnt their own rules (training rules on inputs they never saw). Worked example::

    >>> def cell(i, acc, fresh):
    ...     return {"I": i, "n": 3, "test_acc_op_new_x_values": acc,
    ...             "fresh_acc_values": fresh}
    >>> v = fig2a([cell(16, [0.0, 0.01, 0.0], [1.0, 1.0, 1.0]),
    ...            cell(1024, [0.93, 0.95, 0.9], [0.96, 0.97, 0.95])])
    >>> v.outcome
    'effect shown'
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sweeps.stats import (
    Bootstrap,
    Comparison,
    Slope,
    bootstrap_crossing,
    bootstrap_log_slope,
    crossing,
    equivalence,
    threshold_of,
    welch,
)

#: One grid cell of a study's summary: axis keys, ``n``, ``<metric>_mean/_std/_values``.
Cell = Mapping[str, Any]
Outcome = Literal["effect shown", "partly", "not shown"]

#: The strict unseen-rule metric (has-op examples of test rules whose x is new) and the
#: training-rule metric (training rules, fresh inputs) every verdict reads by default.
STRICT = "test_acc_op_new_x"
TRAINED = "fresh_acc"

# The criteria's levels, named so that the reasons and the tests quote the same numbers.
FIG2A_FLOOR = 0.05  # unseen-rule accuracy at the fewest rules: "does not generalise"
FIG2A_CEILING = 0.85  # ... at the most rules: "generalises"
FIG2A_TRAIN = 0.90  # training-rule accuracy (fresh inputs) in every cell: "learnt its rules"
LEVEL = 0.5  # "generalises" for thresholds in I
SHARE_SPREAD = 0.10  # no-op study: above threshold, shares may differ by this much
FLAT = 0.10  # power law: "barely moves" at the larger I
SATURATED = 0.90  # power law / fine-tune: the reference arm must reach this
COLLAPSE_RATIO = 0.5  # power law: the smallest alpha keeps at most half of uniform's accuracy
COLLAPSE_DROP = 0.20  # ... and loses at least this much
NO_TRANSFER = 0.20  # semantic: a family "does not transfer" below this accuracy
TRANSFER = 0.50  # ... "transfers" from this accuracy
MARGIN = 0.02  # occurrences / fine-tune: a win must be at least this large
NO_HURT = 0.05  # fine-tune: halving uniformly "does not hurt" within this
THRESHOLD_SAVING = 3.0  # threshold search: at most a third of the equivalent grid's trials
MIN_STRICT_RULES = 100  # test rules with a new x behind the strict metric, at every I


@dataclass(frozen=True)
class Verdict:
    """The outcome and a one-line reason with the figures and tests it rests on."""

    outcome: Outcome
    reason: str

    def line(self) -> str:
        """The markdown line RESULTS.md shows: ``**Verdict: partly.** <reason>``."""
        return f"**Verdict: {self.outcome}.** {self.reason}"


def values(cell: Cell | None, metric: str) -> list[float]:
    """The cell's per-seed values of ``metric`` (NaN for a seed that did not report it)."""
    if cell is None:
        return []
    v = cell.get(f"{metric}_values")
    if v is None:  # a summary without per-seed values: its mean stands for one seed
        m = cell.get(f"{metric}_mean")
        return [float(m)] if isinstance(m, int | float) else []
    return [math.nan if x is None else float(x) for x in v]


def mean(cell: Cell | None, metric: str) -> float:
    """The cell's mean of ``metric`` over the seeds that reported it (NaN: none did)."""
    vals = [v for v in values(cell, metric) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _f(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def _top(vals: Iterable[float]) -> float:
    """The largest value, ignoring NaN (unmeasured); NaN when there is none."""
    got = [v for v in vals if not math.isnan(v)]
    return max(got) if got else math.nan


def _bottom(vals: Iterable[float]) -> float:
    got = [v for v in vals if not math.isnan(v)]
    return min(got) if got else math.nan


def _by(cells: Sequence[Cell], key: str) -> dict[Hashable, list[Cell]]:
    out: dict[Hashable, list[Cell]] = {}
    for c in cells:
        out.setdefault(c[key], []).append(c)
    return out


def _at(cells: Sequence[Cell], **where: Any) -> Cell | None:
    for c in cells:
        if all(c.get(k) == v for k, v in where.items()):
            return c
    return None


def _pick(ok: bool, partly: bool) -> Outcome:
    return "effect shown" if ok else "partly" if partly else "not shown"


def _compare(a: Cell | None, b: Cell | None, metric: str, margin: float = 0.0) -> Comparison:
    return welch(values(a, metric), values(b, metric), margin)


def strict_rules_note(cells: Sequence[Cell], metric: str) -> str:
    """A warning when the strict metric rests on fewer than `MIN_STRICT_RULES` test rules in
    some cell (``test_rules_op_new_x``, the smallest over seeds), else ''."""
    if not metric.endswith("_new_x"):
        return ""
    counts = {c.get("I"): _bottom(values(c, "test_rules_op_new_x")) for c in cells}
    few = {i: n for i, n in counts.items() if not math.isnan(n) and n < MIN_STRICT_RULES}
    if not few:
        return ""
    shown = ", ".join(f"I={i}: {n:.0f}" for i, n in sorted(few.items(), key=lambda kv: str(kv)))
    return f"; the strict metric rests on fewer than {MIN_STRICT_RULES} new-x test rules ({shown})"


def _trained(cells: Sequence[Cell], level: float | None = None) -> tuple[bool, str]:
    """Whether the lowest training-rule accuracy (fresh inputs) over the cells reaches
    ``level``, and how the reason says it (without a bar when ``level`` is None)."""
    low = _bottom(mean(c, TRAINED) for c in cells)
    text = f"training rules on fresh inputs >= {_f(low)} everywhere"
    if level is None:
        return True, text
    ok = not math.isnan(low) and low >= level
    return ok, f"{text} (>= {level} {_yes(ok)})"


# ---------------------------------------------------------------------------------------------
# the studies
# ---------------------------------------------------------------------------------------------
def fig2a(cells: Sequence[Cell], metric: str = STRICT) -> Verdict:
    """P1 Fig. 2a at a fixed budget: nothing at the fewest rules (mean <= `FIG2A_FLOOR`),
    nearly everything at the most (>= `FIG2A_CEILING`), the training rules learnt everywhere
    (fresh inputs >= `FIG2A_TRAIN`), the most rules significantly above the fewest, and a jump
    between two neighbouring I that is significant on its own (one-sided Welch, p < 0.05)."""
    cs = sorted(cells, key=lambda c: c["I"])
    if len(cs) < 2:
        return Verdict("not shown", f"needs at least two values of I, got {len(cs)}")
    lo, hi = cs[0], cs[-1]
    a_lo, a_hi = mean(lo, metric), mean(hi, metric)
    effect = _compare(hi, lo, metric)
    jumps = [(_compare(b, a, metric), a, b) for a, b in zip(cs, cs[1:], strict=False)]
    jump, ja, jb = max(jumps, key=lambda j: (j[0].significant, -_nan0(j[0].p), j[0].diff))
    low_ok, high_ok = a_lo <= FIG2A_FLOOR, a_hi >= FIG2A_CEILING
    train_ok, train_text = _trained(cs, FIG2A_TRAIN)
    reason = (
        f"unseen rules, new x: {_f(a_lo)} at I={lo['I']} (<= {FIG2A_FLOOR} {_yes(low_ok)}) and "
        f"{_f(a_hi)} at I={hi['I']} (>= {FIG2A_CEILING} {_yes(high_ok)}); I={hi['I']} over "
        f"I={lo['I']}: {effect.text()}; sharpest step I={ja['I']}->{jb['I']}: {jump.text()}; "
        f"{train_text}"
    )
    ok = low_ok and high_ok and train_ok and effect.significant and jump.significant
    partly = effect.significant and a_hi - a_lo >= 0.3
    return Verdict(_pick(ok, partly), reason + strict_rules_note(cs, metric))


def _nan0(p: float) -> float:
    return 1.0 if math.isnan(p) else p


def _or_low(v: float) -> float:
    """NaN (unmeasured) sorts below every measured value."""
    return -math.inf if math.isnan(v) else v


def noops(cells: Sequence[Cell], metric: str = STRICT, level: float = LEVEL) -> Verdict:
    """P3 Fig. 2b at a fixed has-op budget: the threshold in I (smallest I with has-op accuracy
    >= ``level`` from there on) is about the same for every no-op share (within one grid step),
    and above it the largest and smallest share are equivalent within `SHARE_SPREAD` (TOST)."""
    grid = sorted({c["I"] for c in cells})
    shares = _by(cells, "share")
    if len(shares) < 2 or len(grid) < 2:
        return Verdict("not shown", "needs at least two no-op shares and two values of I")
    thr = {
        s: threshold_of([(c["I"], mean(c, metric)) for c in cs], level) for s, cs in shares.items()
    }
    shown = ", ".join(f"{s:g}: {t if t is not None else 'none'}" for s, t in sorted(thr.items()))
    found = [t for t in thr.values() if t is not None]
    if not found:
        return Verdict(
            "not shown", f"no share reaches {level} at any I (threshold by share {shown})"
        )
    steps = [grid.index(t) for t in found]
    same = len(found) == len(thr) and max(steps) - min(steps) <= 1
    at_floor = min(found) == grid[0]
    ordered = sorted(float(s) for s in shares)  # type: ignore[arg-type]  # shares are numbers
    lo_share, hi_share = ordered[0], ordered[-1]
    tests = []
    for i in (i for i in grid if i >= max(found)):
        eq = equivalence(
            values(_at(cells, I=i, share=hi_share), metric),
            values(_at(cells, I=i, share=lo_share), metric),
            SHARE_SPREAD,
        )
        tests.append((i, eq))
    little = bool(tests) and all(eq.equivalent for _, eq in tests)
    detail = "; ".join(f"I={i}: {eq.text()}" for i, eq in tests)
    reason = (
        f"threshold in I (unseen rules, new x, has-op >= {level}) by no-op share {shown} "
        f"(within one grid step: {_yes(same)}); share {hi_share:g} minus {lo_share:g} above "
        f"it: {detail or 'no I above every threshold'} (equivalent: {_yes(little)})"
    )
    if at_floor:
        reason += f"; a threshold at the grid's smallest I={grid[0]} is only an upper bound"
    small = all(abs(eq.diff) <= SHARE_SPREAD for _, eq in tests)
    partly = len(found) == len(thr) and (same or small)
    return Verdict(_pick(same and little and not at_floor, partly), reason)


def _alpha_order(a: Any) -> float:
    """Uniform first, then alpha from large to small."""
    return -math.inf if a == "uniform" else -float(a)


def powerlaw(cells: Sequence[Cell], metric: str = STRICT) -> Verdict:
    """P1 §4.4: the uniform arm saturates at the larger I (>= `SATURATED`, so a fall means
    something); at the smaller I accuracy collapses at the smallest alpha (at most half of
    uniform's, at least `COLLAPSE_DROP` lower, Welch-significant); at the larger I the smallest
    alpha stays within `FLAT` of uniform (TOST)."""
    grid = sorted({c["I"] for c in cells})
    alphas = sorted({c["alpha"] for c in cells}, key=_alpha_order)
    if len(grid) < 2 or len(alphas) < 2 or alphas[0] != "uniform":
        return Verdict("not shown", "needs uniform and at least one alpha, at two values of I")
    small, large = grid[0], grid[-1]
    u_s, a_s = _at(cells, I=small, alpha="uniform"), _at(cells, I=small, alpha=alphas[-1])
    u_l, a_l = _at(cells, I=large, alpha="uniform"), _at(cells, I=large, alpha=alphas[-1])
    drop = _compare(u_s, a_s, metric)
    collapse = (
        drop.significant
        and drop.diff >= COLLAPSE_DROP
        and mean(a_s, metric) <= COLLAPSE_RATIO * mean(u_s, metric)
    )
    flat = equivalence(values(u_l, metric), values(a_l, metric), FLAT)
    saturated = mean(u_l, metric) >= SATURATED

    def series(i: Any) -> str:
        return " -> ".join(_f(mean(_at(cells, I=i, alpha=a), metric)) for a in alphas)

    reason = (
        f"uniform at I={large}: {_f(mean(u_l, metric))} (>= {SATURATED} {_yes(saturated)}); "
        f"at I={small} accuracy goes {series(small)} from uniform to alpha={alphas[-1]}: uniform "
        f"minus alpha={alphas[-1]} {drop.text()} (collapse: {_yes(collapse)}); at I={large} "
        f"{series(large)}: {flat.text()} (flat: {_yes(flat.equivalent)})"
    )
    ok = saturated and collapse and flat.equivalent
    partly = collapse or (drop.significant and drop.diff - flat.diff >= 0.1)
    return Verdict(_pick(ok, partly), reason)


def semantic(cells: Sequence[Cell], metric: str = STRICT) -> Verdict:
    """P1 §4.3: no single family transfers to free test rules (< `NO_TRANSFER` at every I); the
    mix does at the largest I (>= `TRANSFER`, significantly above the best single family) and
    does not at the smallest (significantly below its own largest-I accuracy)."""
    if not cells or "family" not in cells[0]:
        return Verdict("not shown", "the table has no `family` axis (single families vs the mix)")
    grid = sorted({c["I"] for c in cells})
    mixes = [c for c in cells if str(c["family"]).startswith("mix")]
    singles = [c for c in cells if not str(c["family"]).startswith("mix")]
    if not mixes or not singles or len(grid) < 2:
        return Verdict("not shown", "needs single families and the mix, the mix at two values of I")
    hi, lo = grid[-1], grid[0]
    mix_hi = max(
        (c for c in mixes if c["I"] == hi), key=lambda c: _or_low(mean(c, metric)), default=None
    )
    mix_lo = max(
        (c for c in mixes if c["I"] == lo), key=lambda c: _or_low(mean(c, metric)), default=None
    )
    best = max(singles, key=lambda c: _or_low(mean(c, metric)))
    single_best = mean(best, metric)
    singles_fail = single_best < NO_TRANSFER
    over_single = _compare(mix_hi, best, metric)
    over_few = _compare(mix_hi, mix_lo, metric)
    mix_does = mean(mix_hi, metric) >= TRANSFER and over_single.significant
    mix_few_fails = mean(mix_lo, metric) < NO_TRANSFER and over_few.significant
    reason = (
        f"best single family {best['family']} at I={best['I']}: {_f(single_best)} "
        f"(< {NO_TRANSFER} {_yes(singles_fail)}); mix at I={hi}: {_f(mean(mix_hi, metric))} "
        f"(>= {TRANSFER} {_yes(mean(mix_hi, metric) >= TRANSFER)}), over that family "
        f"{over_single.text()}; mix at I={lo}: {_f(mean(mix_lo, metric))} (< {NO_TRANSFER} "
        f"{_yes(mean(mix_lo, metric) < NO_TRANSFER)}), I={hi} over I={lo} {over_few.text()}; "
        + _trained(cells)[1]
    )
    ok = singles_fail and mix_does and mix_few_fails
    return Verdict(_pick(ok, over_single.significant and over_single.diff >= 0.2), reason)


def occurrences(cells: Sequence[Cell], metric: str = STRICT) -> Verdict:
    """P1 Table 1: at each I, training on the mix of occurrence counts beats every single count
    (by more than `MARGIN`, one-sided Welch p < 0.05 against the best single count)."""
    grid = sorted({c["I"] for c in cells})
    mixes = [c for c in cells if len(c["occurrences"]) > 1]
    singles = [c for c in cells if len(c["occurrences"]) == 1]
    if not mixes or not singles:
        return Verdict("not shown", "needs single occurrence counts and a mix")
    wins, parts = [], []
    for i in grid:
        m = max(
            (c for c in mixes if c["I"] == i), key=lambda c: _or_low(mean(c, metric)), default=None
        )
        s = max(
            (c for c in singles if c["I"] == i),
            key=lambda c: _or_low(mean(c, metric)),
            default=None,
        )
        if m is None or s is None:
            continue
        cmp = _compare(m, s, metric, MARGIN)
        wins.append(cmp.significant)
        counts = ", ".join(
            f"{c['occurrences'][0]}: {_f(mean(c, metric))}" for c in singles if c["I"] == i
        )
        parts.append(
            f"I={i}: mix {_f(mean(m, metric))} vs single counts {counts}; mix minus the best "
            f"{cmp.text()} ({_yes(cmp.significant)})"
        )
    if not wins:
        return Verdict("not shown", "no I has both the mix and a single count")
    reason = "mix beats every single count: " + "; ".join(parts)
    return Verdict(_pick(all(wins), any(wins)), reason)


def finetune(cells: Sequence[Cell], metric: str = "test_acc_new_x") -> Verdict:
    """P1 Fig. 5: the full data saturates (>= `SATURATED`); halving it uniformly costs at most
    `NO_HURT` (TOST), halving it skewed costs more (half uniform significantly above half
    skewed, by more than `MARGIN`)."""
    by = {c["data"]: c for c in cells}
    need = ("full", "half uniform", "half skewed")
    if any(k not in by for k in need):
        return Verdict(
            "not shown",
            f"needs the cells {', '.join(need)}; got {', '.join(map(str, by)) or 'none'}",
        )
    full, half_u, half_s = (by[k] for k in need)
    a_full = mean(full, metric)
    saturated = a_full >= SATURATED
    cost_u = equivalence(values(full, metric), values(half_u, metric), NO_HURT)
    skew = _compare(half_u, half_s, metric, MARGIN)
    reason = (
        f"full data {_f(a_full)} (>= {SATURATED} {_yes(saturated)}); full minus half uniform "
        f"{cost_u.text()} (no cost: {_yes(cost_u.equivalent)}); half uniform minus half skewed "
        f"{skew.text()} (skew costs more: {_yes(skew.significant)})"
    )
    if not a_full >= 0.1:
        return Verdict("not shown", reason + "; the full data learns too little to lose any")
    ok = saturated and cost_u.equivalent and skew.significant
    return Verdict(_pick(ok, skew.significant or (saturated and cost_u.equivalent)), reason)


# ---------------------------------------------------------------------------------------------
# the threshold search
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdRun:
    """What the threshold verdict reads besides the probes: the search and its trial count."""

    level: float
    low: float
    high: float
    resolution: float
    replicates: int
    n_trials: int


def grid_trials(run: ThresholdRun) -> int:
    """Trials of the log grid over ``[low, high]`` with neighbours at most ``resolution``
    apart, ``replicates`` seeds each: ``[4, 1024]`` at 1.25 is 26 points, 52 trials with 2."""
    n = math.ceil(math.log(run.high / run.low) / math.log(run.resolution) - 1e-9) + 1
    n = max(n, 2)
    ratio = (run.high / run.low) ** (1 / (n - 1))
    points = {round(run.low * ratio**i) for i in range(n)}
    return len(points) * run.replicates


def probes_of(cells: Sequence[Cell], metric: str) -> dict[float, list[float]]:
    """``{I: per-seed values}``; a seed that reported no number counts as 0, as in the search."""
    return {
        c["I"]: [0.0 if math.isnan(v) else v for v in values(c, metric)]
        for c in cells
        if values(c, metric)
    }


def threshold(
    cells: Sequence[Cell],
    run: ThresholdRun,
    metric: str = STRICT,
    grid_cells: Sequence[Cell] | None = None,
) -> Verdict:
    """The threshold search: the search's answer (smallest probed I from which every larger
    probe's mean reaches the level) and its bracket; the crossing of the level interpolated
    between the probes, with a bootstrap 95 % interval over the seeds (`sweeps.stats`); the
    trials against a grid resolving I to the same step (at most 1/`THRESHOLD_SAVING`); and,
    given the grid study's cells, whether the interval holds the grid's own crossing."""
    probes = probes_of(cells, metric)
    i_star = threshold_of([(x, sum(v) / len(v)) for x, v in probes.items()], run.level)
    grid = grid_trials(run)
    cheap = run.n_trials * THRESHOLD_SAVING <= grid
    trials = (
        f"{run.n_trials} trials against {grid} for a grid at the same step (x{run.resolution:g},"
        f" {run.replicates} seeds a point; <= 1/{THRESHOLD_SAVING:g} {_yes(cheap)})"
    )
    if i_star is None:
        return Verdict("not shown", f"no probed I reaches {metric} {run.level}; {trials}")
    below = [x for x in probes if x < i_star]
    bracket = (
        f"in ({max(below):g}, {i_star:g}]"
        if below
        else f"at or below the bracket's low end {run.low:g}"
    )
    ci = bootstrap_crossing(probes, run.level)
    reason = (
        f"search: I* = {i_star:g} ({metric} >= {run.level}), {bracket}; crossing of "
        f"{run.level}: I* = {ci.text()}; {trials}"
    )
    holds = True
    if grid_cells:
        g = crossing(probes_of(grid_cells, metric), run.level)
        holds = ci.holds(g)
        reason += (
            f"; the grid study's own crossing, {_f_i(g)}, lies inside the interval: {_yes(holds)}"
        )
    closed = math.isfinite(ci.low) and math.isfinite(ci.high)
    return Verdict(_pick(cheap and bool(below) and closed and holds, bool(below)), reason)


def _f_i(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "below its smallest I" if x < 0 else "above its largest I"
    return f"{x:.0f}"


def threshold_interval(cells: Sequence[Cell], level: float, metric: str = STRICT) -> Bootstrap:
    """The bootstrap interval of the crossing (for figures and the frontier)."""
    return bootstrap_crossing(probes_of(cells, metric), level)


# ---------------------------------------------------------------------------------------------
# the frontier: one threshold search per budget
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontierRun:
    """What the frontier verdict reads besides the probes: each budget's search (the same
    bracket, step and replicates everywhere; ``n_trials`` counts the whole experiment) and the
    budgets it was asked for."""

    search: ThresholdRun
    budgets: tuple[float, ...]

    @property
    def grid_trials(self) -> int:
        """A grid at the same step at every budget: `grid_trials` once per budget."""
        return grid_trials(self.search) * len(self.budgets)


def frontier_probes(cells: Sequence[Cell], metric: str) -> dict[float, dict[float, list[float]]]:
    """``{budget: {I: per-seed values}}`` of cells keyed ``"budget"`` and ``"I"``."""
    out: dict[float, dict[float, list[float]]] = {}
    for budget, cs in _by(cells, "budget").items():
        probes = probes_of(cs, metric)
        if probes:
            out[float(budget)] = probes  # type: ignore[arg-type]  # budgets are numbers
    return out


def measure_frontier(
    cells: Sequence[Cell], level: float, metric: str = STRICT
) -> tuple[dict[float, Bootstrap], Slope]:
    """Each budget's crossing of ``level`` with its interval, and the slope of log I* against
    log budget with its interval (`sweeps.stats.bootstrap_log_slope`)."""
    return bootstrap_log_slope(frontier_probes(cells, metric), level)


def _budget_line(
    budget: float, ci: Bootstrap | None, probes: Mapping[float, Any], run: FrontierRun
) -> str:
    if ci is None:
        return f"N={budget:,.0f}: not measured"
    means = [(x, sum(v) / len(v)) for x, v in probes.items()]
    answer = threshold_of(means, run.search.level)
    if ci.estimate == math.inf:
        return f"N={budget:,.0f}: I* above the bracket (no probe up to {max(probes):g} reaches it)"
    if ci.estimate == -math.inf:
        return f"N={budget:,.0f}: I* at or below the bracket's low end {min(probes):g}"
    shown = "none" if answer is None else f"{answer:g}"
    return f"N={budget:,.0f}: I* = {ci.text()}, search answer {shown}"


def frontier(cells: Sequence[Cell], run: FrontierRun, metric: str = STRICT) -> Verdict:
    """The phase boundary: at each budget N the crossing I* of ``run.search.level`` with its
    bootstrap 95 % interval; the slope of log I* against log N with its bootstrap interval
    (`sweeps.stats.bootstrap_log_slope`); the trials against a grid at the same step at every
    budget. The effect tested is "the threshold moves with the budget": shown when at least
    three budgets have a threshold inside their bracket with a closed interval and the slope's
    interval excludes 0; partly when the slope is measured (two budgets) but holds 0 or rests
    on open intervals. A budget whose threshold lies outside the bracket is said so and left
    out of the fit."""
    level = run.search.level
    curves = frontier_probes(cells, metric)
    grid = run.grid_trials
    trials = (
        f"{run.search.n_trials} trials against {grid} for a grid at the same step at every "
        f"budget (x{run.search.resolution:g}, {run.search.replicates} seeds a point, "
        f"{len(run.budgets)} budgets)"
    )
    if not curves:
        return Verdict("not shown", f"no budget has a measured probe of {metric}; {trials}")
    points, slope = bootstrap_log_slope(curves, level)
    budgets = sorted(set(run.budgets) | set(points))
    lines = "; ".join(_budget_line(b, points.get(b), curves.get(b, {}), run) for b in budgets)
    closed = [
        b
        for b in budgets
        if b in points
        and math.isfinite(points[b].low)
        and math.isfinite(points[b].high)
        and math.isfinite(points[b].estimate)
    ]
    moves = slope.excludes_zero and slope.reliable
    fit = (
        f"slope of log I* on log N: {slope.text()} from {len(slope.xs)} of {len(budgets)} "
        f"budgets; the threshold moves with the budget (interval excludes 0): {_yes(moves)}"
    )
    if not slope.reliable and not math.isnan(slope.low):
        fit += " (too many resamples left out to trust the interval)"
    reason = f"crossing of {metric} = {level}: {lines}; {fit}; {trials}"
    ok = moves and len(closed) == len(budgets) >= 3
    return Verdict(_pick(ok, len(slope.xs) >= 2), reason + strict_rules_note(cells, metric))
