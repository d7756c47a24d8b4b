"""Verdicts: does a measured table show the paper's effect? Pure functions, no Ray, no I/O.

Each study of `sweeps.reporting.studies` ends in one line: ``effect shown``, ``partly`` or ``not
shown``, with a reason that quotes the figures it was decided on. A verdict reads *cells*: one dict
per grid cell with the study's axis keys (``"I"``, ``"share"``, ``"alpha"``, ...), ``"n"`` (seeds)
and ``<metric>_mean`` / ``<metric>_std``. The mini presets move thresholds (a CPU-sized problem
generalises from far fewer rules than the paper's), so the criteria test the *shape* of the
effect, never the paper's absolute rule counts. Worked example::

    >>> cells = [{"I": 4, "n": 2, "test_acc_op_mean": 0.0, "test_acc_op_std": 0.0,
    ...           "train_acc_mean": 1.0, "train_acc_std": 0.0},
    ...          {"I": 1024, "n": 2, "test_acc_op_mean": 0.94, "test_acc_op_std": 0.02,
    ...           "train_acc_mean": 0.98, "train_acc_std": 0.01}]
    >>> v = fig2a(cells)
    >>> v.outcome
    'effect shown'
    >>> v.reason  # doctest: +NORMALIZE_WHITESPACE
    'unseen-rule has-op accuracy 0.00 at I=4 (<= 0.05 yes) and 0.94 at I=1024 (>= 0.85 yes);
     train-rule accuracy >= 0.98 everywhere (>= 0.90 yes); largest jump I=4->1024: +0.94,
     seed spread 0.02 (exceeds it: yes)'
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sweeps.specs.spec import LogRange

#: One grid cell of a study's summary: axis keys, ``n``, ``<metric>_mean`` and ``_std``.
Cell = Mapping[str, Any]
Outcome = Literal["effect shown", "partly", "not shown"]

# The criteria's levels, named so that the reasons and the tests quote the same numbers.
FIG2A_FLOOR = 0.05  # unseen-rule accuracy at the fewest rules: "does not generalise"
FIG2A_CEILING = 0.85  # ... at the most rules: "generalises"
FIG2A_TRAIN = 0.90  # train-rule accuracy in every cell: the budget is enough to learn
LEVEL = 0.5  # "generalises" for thresholds in I (has-op accuracy)
SHARE_SPREAD = 0.10  # no-op study: above threshold, shares may differ by this much
FLAT = 0.10  # power law: "barely moves" at the larger I
COLLAPSE_RATIO = 0.5  # power law: the smallest alpha keeps at most half of uniform's accuracy
COLLAPSE_DROP = 0.20  # ... and loses at least this much
MONOTONE_SLACK = 0.05  # ... accuracy may rise by this much when alpha falls (noise)
NO_TRANSFER = 0.20  # semantic: a family "does not transfer" below this accuracy
TRANSFER = 0.50  # ... "transfers" from this accuracy
MARGIN = 0.02  # occurrences / fine-tune: a win must be at least this large
NO_HURT = 0.05  # fine-tune: halving uniformly "does not hurt" within this
THRESHOLD_SAVING = 3.0  # threshold search: at most a third of the equivalent grid's trials


@dataclass(frozen=True)
class Verdict:
    """The outcome and a one-line reason with the figures it rests on."""

    outcome: Outcome
    reason: str

    def line(self) -> str:
        """The markdown line RESULTS.md shows: ``**Verdict: partly.** <reason>``."""
        return f"**Verdict: {self.outcome}.** {self.reason}"


def mean(cell: Cell, metric: str) -> float:
    """The cell's mean of ``metric`` (NaN when the cell has none)."""
    v = cell.get(f"{metric}_mean")
    return float(v) if isinstance(v, int | float) else math.nan


def std(cell: Cell, metric: str) -> float:
    """The cell's standard deviation across seeds (0 when unknown: one seed)."""
    v = cell.get(f"{metric}_std")
    return float(v) if isinstance(v, int | float) and not math.isnan(v) else 0.0


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _f(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def _top(values: Iterable[float]) -> float:
    """The largest value, ignoring NaN (unmeasured); NaN when there is none."""
    vals = [v for v in values if not math.isnan(v)]
    return max(vals) if vals else math.nan


def _bottom(values: Iterable[float]) -> float:
    """The smallest value, ignoring NaN; NaN when there is none."""
    vals = [v for v in values if not math.isnan(v)]
    return min(vals) if vals else math.nan


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


def threshold_of(points: Sequence[tuple[float, float]], level: float = LEVEL) -> float | None:
    """The smallest x from which every larger x has a value >= ``level`` (None: the largest
    fails). ``threshold_of([(4, 0.0), (64, 0.6), (256, 0.4), (1024, 0.9)]) == 1024``."""
    found = None
    for x, v in sorted(points, reverse=True):
        if math.isnan(v) or v < level:
            break
        found = x
    return found


# ---------------------------------------------------------------------------------------------
# the studies
# ---------------------------------------------------------------------------------------------
def fig2a(cells: Sequence[Cell], metric: str = "test_acc_op") -> Verdict:
    """P1 Fig. 2a at a fixed budget: nothing at the fewest rules, nearly everything at the most,
    the training rules learnt everywhere, and a jump between two neighbouring I larger than the
    seeds' spread (difference of means > sum of the two standard deviations)."""
    cs = sorted(cells, key=lambda c: c["I"])
    if len(cs) < 2:
        return Verdict("not shown", f"needs at least two values of I, got {len(cs)}")
    lo, hi = cs[0], cs[-1]
    a_lo, a_hi = mean(lo, metric), mean(hi, metric)
    train = [mean(c, "train_acc") for c in cs]
    train_min = min(train) if not any(math.isnan(t) for t in train) else math.nan
    jumps = [
        (mean(b, metric) - mean(a, metric), std(a, metric) + std(b, metric), a, b)
        for a, b in zip(cs, cs[1:], strict=False)
    ]
    d, spread, a, b = max(jumps, key=lambda j: (j[0] - j[1], j[0]))
    one_seed = min(int(c.get("n", 0)) for c in cs) < 2
    low_ok, high_ok = a_lo <= FIG2A_FLOOR, a_hi >= FIG2A_CEILING
    train_ok = train_min >= FIG2A_TRAIN
    jump_ok = d > spread and d > 0 and not one_seed
    reason = (
        f"unseen-rule has-op accuracy {_f(a_lo)} at I={lo['I']} (<= {FIG2A_FLOOR} "
        f"{_yes(low_ok)}) and {_f(a_hi)} at I={hi['I']} (>= {FIG2A_CEILING} "
        f"{_yes(high_ok)}); train-rule accuracy >= {_f(train_min)} everywhere "
        f"(>= {FIG2A_TRAIN:.2f} {_yes(train_ok)}); largest jump I={a['I']}->{b['I']}: "
        f"{d:+.2f}, seed spread {spread:.2f} (exceeds it: {_yes(jump_ok)})"
    )
    if one_seed:
        reason += "; one seed per cell, so the spread is unknown"
    ok = low_ok and high_ok and train_ok and jump_ok
    return Verdict(_pick(ok, a_hi - a_lo >= 0.3), reason)


def noops(cells: Sequence[Cell], level: float = LEVEL) -> Verdict:
    """P3 Fig. 2b: the threshold in I (smallest I with has-op accuracy >= ``level`` from there
    on) is about the same for every no-op share (within one grid step), and above it the share
    moves has-op accuracy by at most `SHARE_SPREAD`."""
    grid = sorted({c["I"] for c in cells})
    shares = _by(cells, "share")
    if len(shares) < 2 or len(grid) < 2:
        return Verdict("not shown", "needs at least two no-op shares and two values of I")
    thr = {
        s: threshold_of([(c["I"], mean(c, "test_acc_op")) for c in cs], level)
        for s, cs in shares.items()
    }
    shown = ", ".join(f"{s}: {t if t is not None else 'none'}" for s, t in sorted(thr.items()))
    found = [t for t in thr.values() if t is not None]
    if not found:
        return Verdict(
            "not shown",
            f"no share reaches has-op accuracy {level} at any I (threshold by share {shown})",
        )
    steps = [grid.index(t) for t in found]
    same = len(found) == len(thr) and max(steps) - min(steps) <= 1
    at_floor = min(found) == grid[0]
    above = [i for i in grid if i >= max(found)]
    spreads = []
    for i in above:
        vals = [mean(c, "test_acc_op") for c in cells if c["I"] == i]
        vals = [v for v in vals if not math.isnan(v)]
        if vals:
            spreads.append(max(vals) - min(vals))
    spread = max(spreads) if spreads else math.nan
    little = spread <= SHARE_SPREAD
    reason = (
        f"threshold in I (has-op >= {level}) by no-op share {shown} (within one grid "
        f"step: {_yes(same)}); above it the share moves has-op accuracy by "
        f"{_f(spread)} (<= {SHARE_SPREAD} {_yes(little)})"
    )
    if at_floor:
        reason += f"; a threshold at the grid's smallest I={grid[0]} is only an upper bound"
    partly = len(found) == len(thr) and (same or little)
    return Verdict(_pick(same and little and not at_floor, partly), reason)


def _alpha_order(a: Any) -> float:
    """Uniform first, then alpha from large to small."""
    return -math.inf if a == "uniform" else -float(a)


def powerlaw(cells: Sequence[Cell], metric: str = "test_acc") -> Verdict:
    """P1 §4.4: at the smaller I accuracy falls as alpha falls, collapsing at the smallest alpha
    (at most half of uniform's accuracy, and at least `COLLAPSE_DROP` lower); at the larger I
    it barely moves (range across alpha <= `FLAT`)."""
    grid = sorted({c["I"] for c in cells})
    alphas = sorted({c["alpha"] for c in cells}, key=_alpha_order)
    if len(grid) < 2 or len(alphas) < 2 or alphas[0] != "uniform":
        return Verdict("not shown", "needs uniform and at least one alpha, at two values of I")

    def series(i: Any) -> list[float]:
        return [mean(c, metric) if (c := _at(cells, I=i, alpha=a)) else math.nan for a in alphas]

    small, large = series(grid[0]), series(grid[-1])
    u, low = small[0], small[-1]
    collapse = u - low >= COLLAPSE_DROP and low <= COLLAPSE_RATIO * u
    monotone = all(b <= a + MONOTONE_SLACK for a, b in zip(small, small[1:], strict=False))
    flat = _top(large) - _bottom(large) <= FLAT
    d_small, d_large = u - low, large[0] - large[-1]
    reason = (
        f"at I={grid[0]} accuracy goes {' -> '.join(_f(v) for v in small)} from uniform "
        f"to alpha={alphas[-1]} (collapse: {_yes(collapse)}, falls with alpha: "
        f"{_yes(monotone)}); at I={grid[-1]} {' -> '.join(_f(v) for v in large)} "
        f"(range <= {FLAT} {_yes(flat)})"
    )
    partly = collapse or d_small - d_large >= 0.1
    return Verdict(_pick(collapse and monotone and flat, partly), reason)


def semantic(cells: Sequence[Cell], metric: str = "test_acc") -> Verdict:
    """P1 §4.3: no single family transfers to the test family (accuracy < `NO_TRANSFER` at
    every I); the mix does at the largest I (>= `TRANSFER`) and does not at the smallest."""
    if not cells or "family" not in cells[0]:
        return Verdict("not shown", "the table has no `family` axis (single families vs the mix)")
    grid = sorted({c["I"] for c in cells})
    mixes = [c for c in cells if str(c["family"]).startswith("mix")]
    singles = [c for c in cells if not str(c["family"]).startswith("mix")]
    if not mixes or not singles or len(grid) < 2:
        return Verdict("not shown", "needs single families and the mix at two values of I")
    single_best = _top(mean(c, metric) for c in singles)
    mix_hi = _top(mean(c, metric) for c in mixes if c["I"] == grid[-1])
    mix_lo = _top(mean(c, metric) for c in mixes if c["I"] == grid[0])
    single_hi = _top(mean(c, metric) for c in singles if c["I"] == grid[-1])
    singles_fail, mix_does = single_best < NO_TRANSFER, mix_hi >= TRANSFER
    mix_few_fails = mix_lo < NO_TRANSFER
    reason = (
        f"best single family {_f(single_best)} (< {NO_TRANSFER} {_yes(singles_fail)}); "
        f"mix {_f(mix_hi)} at I={grid[-1]} (>= {TRANSFER} {_yes(mix_does)}) and "
        f"{_f(mix_lo)} at I={grid[0]} (< {NO_TRANSFER} {_yes(mix_few_fails)})"
    )
    ok = singles_fail and mix_does and mix_few_fails
    return Verdict(_pick(ok, mix_hi - single_hi >= 0.2), reason)


def occurrences(cells: Sequence[Cell], metric: str = "test_acc") -> Verdict:
    """P1 Table 1: at each I, training on the mix of occurrence counts beats every single count
    (by more than `MARGIN` and than the seeds' spread)."""
    grid = sorted({c["I"] for c in cells})
    mixes = [c for c in cells if len(c["occurrences"]) > 1]
    singles = [c for c in cells if len(c["occurrences"]) == 1]
    if not mixes or not singles:
        return Verdict("not shown", "needs single occurrence counts and a mix")
    wins, parts = [], []
    for i in grid:
        m = max((c for c in mixes if c["I"] == i), key=lambda c: mean(c, metric), default=None)
        s = max((c for c in singles if c["I"] == i), key=lambda c: mean(c, metric), default=None)
        if m is None or s is None:
            continue
        margin = mean(m, metric) - mean(s, metric)
        win = margin > max(MARGIN, std(m, metric) + std(s, metric))
        wins.append(win)
        parts.append(
            f"I={i}: mix {_f(mean(m, metric))} vs best single {_f(mean(s, metric))} ({_yes(win)})"
        )
    if not wins:
        return Verdict("not shown", "no I has both the mix and a single count")
    reason = "mix beats every single count: " + "; ".join(parts)
    return Verdict(_pick(all(wins), wins[-1] or any(wins)), reason)


def finetune(cells: Sequence[Cell], metric: str = "test_acc") -> Verdict:
    """P1 Fig. 5: halving the data uniformly costs (almost) nothing, halving it with a skewed
    rule distribution costs more (by more than `MARGIN` and than the seeds' spread)."""
    by = {c["data"]: c for c in cells}
    need = ("full", "half uniform", "half skewed")
    if any(k not in by for k in need):
        return Verdict(
            "not shown",
            f"needs the cells {', '.join(need)}; got {', '.join(map(str, by)) or 'none'}",
        )
    full, half_u, half_s = (by[k] for k in need)
    a_full = mean(full, metric)
    cost_u, cost_s = a_full - mean(half_u, metric), a_full - mean(half_s, metric)
    spread = std(half_u, metric) + std(half_s, metric)
    reason = (
        f"full data {_f(a_full)}; halving uniformly costs {cost_u:+.2f} "
        f"(<= {NO_HURT} {_yes(cost_u <= NO_HURT)}), halving skewed costs {cost_s:+.2f} "
        f"(more, beyond the spread {spread:.2f}: "
        f"{_yes(cost_s - cost_u > max(MARGIN, spread))})"
    )
    if not a_full >= 0.1:
        return Verdict("not shown", reason + "; the full data learns too little to lose any")
    ok = cost_u <= NO_HURT and cost_s - cost_u > max(MARGIN, spread)
    return Verdict(_pick(ok, cost_s > cost_u), reason)


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
    num = math.ceil(math.log(run.high / run.low) / math.log(run.resolution) - 1e-9) + 1
    points = LogRange(start=run.low, stop=run.high, num=max(num, 2)).points()
    return len(points) * run.replicates


def threshold(cells: Sequence[Cell], run: ThresholdRun, metric: str = "test_acc_op") -> Verdict:
    """The threshold search: I* (smallest probed I from which every larger probe reaches the
    level), the interval the bisection leaves it in, and its trials against the grid that
    resolves I to the same step (at most 1/`THRESHOLD_SAVING` of them)."""
    probes = sorted((c["I"], mean(c, metric)) for c in cells)
    i_star = threshold_of(probes, run.level)
    grid = grid_trials(run)
    cheap = run.n_trials * THRESHOLD_SAVING <= grid
    trials = (
        f"{run.n_trials} trials against {grid} for the grid at the same step "
        f"(x{run.resolution:g}; <= 1/{THRESHOLD_SAVING:g} {_yes(cheap)})"
    )
    if i_star is None:
        return Verdict("not shown", f"no probed I reaches {metric} {run.level}; {trials}")
    below = [x for x, _ in probes if x < i_star]
    interval = (
        f"in ({below[-1]:g}, {i_star:g}]"
        if below
        else f"at or below the bracket's low end {run.low:g}"
    )
    reason = f"I* = {i_star:g} ({metric} >= {run.level}), {interval}; {trials}"
    return Verdict(_pick(cheap and bool(below), bool(below) or cheap), reason)
