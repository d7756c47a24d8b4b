"""Statistics over seeds for the studies' verdicts: Welch tests, t intervals, and the bootstrap
intervals of a threshold and of a slope. Pure functions (numpy, scipy), no Ray, no I/O.

Every figure a verdict quotes comes with its test, so that "0.83 vs 0.21" carries the evidence
that three seeds give. Worked example (two cells of three seeds each)::

    >>> c = welch([0.80, 0.85, 0.90], [0.20, 0.25, 0.18])
    >>> round(c.diff, 3), round(c.p, 5), c.text()
    (0.64, 5e-05, '+0.64, 95% CI [+0.54, +0.74], Welch t = 18.0, df = 3.6, one-sided p = 5e-05')

The threshold of a curve measured at a few points with replicates (`crossing`,
`bootstrap_crossing`): the points' means are made monotone (isotonic regression, weighted by
the number of replicates), the crossing of ``level`` is interpolated linearly in log x between
the two points around it, and a parametric bootstrap over the seeds' noise
(`crossing_samples`) gives a percentile interval::

    >>> probes = {16: [0.0, 0.0], 64: [0.2, 0.3], 128: [0.45, 0.6, 0.5], 256: [0.8, 0.9]}
    >>> round(crossing(probes, 0.5), 1)
    122.6
    >>> ci = bootstrap_crossing(probes, 0.5, n_boot=500, seed=0)
    >>> ci.low < 122.6 < ci.high, ci.below, ci.above
    (True, 0, 0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

#: The confidence of every interval the verdicts quote.
CONFIDENCE = 0.95
#: Bootstrap resamples of a threshold or slope interval.
N_BOOT = 2000
#: A threshold's probes: each probed x with its replicates' values.
Probes = Mapping[float, Sequence[float] | np.ndarray]


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The values as floats, NaN (an unmeasured seed) left out."""
    a = np.asarray([float(v) for v in values], dtype=np.float64)
    return a[~np.isnan(a)]


@dataclass(frozen=True)
class Comparison:
    """``mean(a) - mean(b)`` with its Welch interval and the one-sided test of ``diff > margin``.

    ``p`` is NaN when a side has fewer than two values (no spread to test against) and 0 or 1
    when both sides have no spread at all (the difference is then exact).
    """

    diff: float
    low: float  # two-sided CONFIDENCE interval of the difference
    high: float
    t: float
    df: float
    p: float
    margin: float = 0.0

    @property
    def significant(self) -> bool:
        """``diff > margin`` at the one-sided 1 - CONFIDENCE level."""
        return not math.isnan(self.p) and self.p < 1 - CONFIDENCE

    def text(self) -> str:
        """``+0.64, 95% CI [+0.54, +0.74], Welch t = 17.5, df = 3.8, one-sided p = 2e-05``."""
        head = f"{self.diff:+.2f}"
        if math.isnan(self.p):
            return head + " (one seed a side: no test)"
        if math.isinf(self.t):
            return head + " (no spread across seeds: the difference is exact)"
        over = f" over {self.margin:g}" if self.margin else ""
        return (
            f"{head}, {CONFIDENCE:.0%} CI [{self.low:+.2f}, {self.high:+.2f}], Welch t = "
            f"{self.t:.1f}, df = {self.df:.1f}, one-sided p{over} = {_p(self.p)}"
        )


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.0e}"


def welch(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> Comparison:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b) > margin`` (one-sided), with the
    two-sided `CONFIDENCE` interval of the difference.

    >>> welch([0.5, 0.5], [0.2, 0.2]).text()
    '+0.30 (no spread across seeds: the difference is exact)'
    >>> welch([0.9], [0.1, 0.2]).text()
    '+0.75 (one seed a side: no test)'
    """
    xa, xb = _clean(a), _clean(b)
    if len(xa) == 0 or len(xb) == 0:
        nan = math.nan
        return Comparison(nan, nan, nan, nan, nan, nan, margin)
    diff = float(xa.mean() - xb.mean())
    if len(xa) < 2 or len(xb) < 2:
        return Comparison(diff, math.nan, math.nan, math.nan, math.nan, math.nan, margin)
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se2 = va + vb
    if se2 == 0:
        t = math.inf if diff > margin else -math.inf
        return Comparison(diff, diff, diff, t, math.inf, 0.0 if diff > margin else 1.0, margin)
    df = se2**2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    se = math.sqrt(se2)
    t = (diff - margin) / se
    half = float(sps.t.ppf((1 + CONFIDENCE) / 2, df)) * se
    return Comparison(diff, diff - half, diff + half, t, df, float(sps.t.sf(t, df)), margin)


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests (TOST) that ``|mean(a) - mean(b)| < delta``: equivalent when the
    ``1 - 2 * (1 - CONFIDENCE)`` (90 %) interval of the difference lies inside ``±delta``."""

    diff: float
    low: float
    high: float
    delta: float
    p: float  # the larger of the two one-sided p-values (NaN: no spread known)

    @property
    def equivalent(self) -> bool:
        return not math.isnan(self.p) and self.p < 1 - CONFIDENCE

    def text(self) -> str:
        """``-0.03, 90% CI [-0.08, +0.02] inside ±0.10: TOST p = 0.012``."""
        if math.isnan(self.p):
            return f"{self.diff:+.2f} (one seed a side: no test)"
        inside = "inside" if self.equivalent else "not inside"
        level = 1 - 2 * (1 - CONFIDENCE)
        return (
            f"{self.diff:+.2f}, {level:.0%} CI [{self.low:+.2f}, {self.high:+.2f}] {inside} "
            f"±{self.delta:.2f}: TOST p = {_p(self.p)}"
        )


def equivalence(a: Sequence[float], b: Sequence[float], delta: float) -> Equivalence:
    """`Equivalence` of ``a`` and ``b`` within ``delta`` (Welch's df for both tests).

    >>> equivalence([0.90, 0.92, 0.91], [0.89, 0.90, 0.91], 0.05).equivalent
    True
    >>> equivalence([0.90, 0.70, 0.95], [0.89, 0.90, 0.91], 0.05).equivalent
    False
    """
    upper = welch(b, a, -delta)  # a - b < delta  <=>  b - a > -delta
    lower = welch(a, b, -delta)  # a - b > -delta
    diff = lower.diff
    if math.isnan(lower.p):
        return Equivalence(diff, math.nan, math.nan, delta, math.nan)
    p = max(upper.p, lower.p)
    if math.isinf(lower.t):
        return Equivalence(diff, diff, diff, delta, p)
    se = (lower.diff + delta) / lower.t
    half = float(sps.t.ppf(CONFIDENCE, lower.df)) * se
    return Equivalence(diff, diff - half, diff + half, delta, p)


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided `CONFIDENCE` t interval (NaN bounds with one value)."""

    mean: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        """``0.87 [0.81, 0.93]``."""
        if math.isnan(self.low):
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"


def t_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` and its t interval.

    >>> t_interval([0.8, 0.9, 0.85]).text()
    '0.85 [0.73, 0.97]'
    """
    x = _clean(values)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if len(x) < 2:
        return Interval(m, math.nan, math.nan, 1)
    half = float(sps.t.ppf((1 + CONFIDENCE) / 2, len(x) - 1)) * float(x.std(ddof=1)) / len(x) ** 0.5
    return Interval(m, m - half, m + half, len(x))


def t_critical(confidence: float, df: int) -> float:
    """The two-sided Student-t critical value: ``P(|T| <= t) = confidence``.

    >>> round(t_critical(0.95, 4), 4), round(t_critical(0.9, 1), 4)
    (2.7764, 6.3138)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if df < 1:
        raise ValueError(f"df: must be >= 1, got {df}")
    return float(sps.t.ppf((1 + confidence) / 2, df))


# ---------------------------------------------------------------------------------------------
# a threshold and its bootstrap interval
# ---------------------------------------------------------------------------------------------


def threshold_of(points: Sequence[tuple[float, float]], level: float) -> float | None:
    """The smallest x from which every larger x has a value >= ``level`` (None: the largest
    fails): the threshold search's answer, read off its probes (or a grid's cells).

    >>> threshold_of([(4, 0.0), (64, 0.6), (256, 0.4), (1024, 0.9)], 0.5)
    1024
    """
    found = None
    for x, v in sorted(points, reverse=True):
        if math.isnan(v) or v < level:
            break
        found = x
    return found


def isotonic(means: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The non-decreasing sequence closest to ``means`` in weighted least squares (pool
    adjacent violators).

    >>> isotonic([0.1, 0.5, 0.4, 0.9], [1, 1, 1, 1])
    [0.1, 0.45, 0.45, 0.9]
    """
    blocks: list[list[float]] = []  # [mean, weight, count]
    for m, w in zip(means, weights, strict=True):
        blocks.append([float(m), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks[-1]
            blocks[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2]
    out: list[float] = []
    for m, _w, c in blocks:
        out += [m] * int(c)
    return out


def crossing(probes: Probes, level: float) -> float:
    """Where the monotone fit of the probes' means crosses ``level``, interpolated in log x.

    ``-inf`` when even the smallest probe reaches ``level`` (the threshold lies below the
    probes), ``inf`` when none does (above them).
    """
    xs = sorted(x for x, v in probes.items() if len(_clean(v)))
    if not xs:
        return math.nan
    means = [float(_clean(probes[x]).mean()) for x in xs]
    fit = isotonic(means, [len(_clean(probes[x])) for x in xs])
    return _crossing_of_fit(xs, fit, level)


def _crossing_of_fit(xs: Sequence[float], fit: Sequence[float], level: float) -> float:
    """`crossing` of a monotone fit at sorted ``xs``."""
    if fit[0] >= level:
        return -math.inf
    for i in range(1, len(xs)):
        if fit[i] >= level:
            lo, hi = math.log(xs[i - 1]), math.log(xs[i])
            frac = (level - fit[i - 1]) / (fit[i] - fit[i - 1])
            return math.exp(lo + frac * (hi - lo))
    return math.inf


@dataclass(frozen=True)
class Bootstrap:
    """An estimate with its percentile interval; ``below`` / ``above``: resamples whose value
    fell outside the probed range (the interval is then open on that side)."""

    estimate: float
    low: float
    high: float
    n_boot: int
    below: int = 0
    above: int = 0

    def text(self, fmt: str = "{:.0f}") -> str:
        """``119 (95% interval 98–142, 2000 bootstrap resamples)``."""
        lo = "below the probes" if self.low == -math.inf else fmt.format(self.low)
        hi = "above the probes" if self.high == math.inf else fmt.format(self.high)
        return (
            f"{fmt.format(self.estimate)} ({CONFIDENCE:.0%} interval {lo}–{hi}, "
            f"{self.n_boot} bootstrap resamples)"
        )

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def crossing_samples(
    probes: Probes, level: float, n_boot: int = N_BOOT, seed: int = 0
) -> np.ndarray:
    """(n_boot,) crossings of parametric bootstrap draws of ``probes`` (±inf outside them).

    Each draw moves every probe's mean by ``sd / sqrt(n) * T``: ``sd`` the seeds' standard
    deviation pooled over all probes, ``T`` Student's t with the pooled degrees of freedom
    (sum of n - 1), clipped to [0, 1] (accuracies); the drawn means, one per probe, are then
    fitted and crossed as `crossing` does. Why not resample each probe's own 2-4 seeds: that
    plain percentile bootstrap held a known threshold in 81 % of 300 simulated searches (it
    cannot see spread that two seeds happen to hide), this one in 93 %
    (`tests/sweeps/test_stats.py` checks it).
    """
    rng = np.random.default_rng(seed)
    clean = [(x, a) for x, a in ((x, _clean(v)) for x, v in probes.items()) if len(a)]
    if not clean:
        return np.full(n_boot, math.nan)
    df = sum(len(a) - 1 for _, a in clean)
    ss = sum(float(((a - a.mean()) ** 2).sum()) for _, a in clean)
    sd = math.sqrt(ss / df) if df else 0.0
    means = np.array([a.mean() for _, a in clean])
    scale = sd / np.sqrt([len(a) for _, a in clean])
    # draw b, probe j is the (b * k + j)-th t variate, as one draw after another would take them
    t = rng.standard_t(df, size=(n_boot, len(clean))) if df else np.zeros((n_boot, len(clean)))
    drawn = np.clip(means + scale * t, 0.0, 1.0)  # (n_boot, probes)
    order = np.argsort([x for x, _ in clean], kind="stable")
    xs = [clean[j][0] for j in order]
    ones = [1.0] * len(xs)  # one drawn mean a probe
    return np.array(
        [_crossing_of_fit(xs, isotonic(row.tolist(), ones), level) for row in drawn[:, order]]
    )


def percentile_interval(estimate: float, samples: np.ndarray) -> Bootstrap:
    """The `CONFIDENCE` percentile interval of ``samples`` (±inf kept: they sort to the ends)."""
    finite = samples[~np.isnan(samples)]
    q = (1 - CONFIDENCE) / 2
    low, high = (float(np.quantile(finite, p, method="lower")) for p in (q, 1 - q))
    below, above = int(np.sum(np.isneginf(finite))), int(np.sum(np.isposinf(finite)))
    return Bootstrap(estimate, low, high, len(samples), below, above)


def bootstrap_crossing(
    probes: Probes, level: float, n_boot: int = N_BOOT, seed: int = 0
) -> Bootstrap:
    """`crossing` with its bootstrap percentile interval (see the module docstring)."""
    samples = crossing_samples(probes, level, n_boot, seed)
    return percentile_interval(crossing(probes, level), samples)


def log_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: ``y ∝ x^slope``.

    >>> round(log_slope([1, 10, 100], [3, 30, 300]), 6)
    1.0
    """
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


# ---------------------------------------------------------------------------------------------
# a phase boundary: one threshold per budget, and the slope of log threshold against log budget
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slope:
    """The slope of ``log I*`` against ``log budget`` with its bootstrap percentile interval.

    ``xs`` are the budgets the fit used (those whose threshold lies inside its probes);
    ``undefined`` counts the resamples left out because a resampled threshold fell outside its
    probes at one of them (the interval is read from the others). NaN everywhere when fewer than
    two budgets have a threshold inside their probes.
    """

    estimate: float
    low: float
    high: float
    n_boot: int
    xs: tuple[float, ...]
    undefined: int = 0

    @property
    def reliable(self) -> bool:
        """At most (1 - CONFIDENCE) / 2 of the resamples were left out: however they would have
        fallen, the interval could move by at most that share of its tail."""
        return not math.isnan(self.low) and self.undefined <= self.n_boot * (1 - CONFIDENCE) / 2

    @property
    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0: the threshold moves with the budget."""
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    def text(self) -> str:
        """``0.52 (95% interval 0.31–0.74, 2000 bootstrap resamples)``."""
        if math.isnan(self.estimate):
            return "n/a (fewer than two budgets with a threshold inside their probes)"
        left = f", {self.undefined} left out: a threshold outside its probes" * bool(self.undefined)
        if math.isnan(self.low):
            return f"{self.estimate:.2f} (no resample defined{left})"
        return (
            f"{self.estimate:.2f} ({CONFIDENCE:.0%} interval {self.low:.2f}–{self.high:.2f}, "
            f"{self.n_boot} bootstrap resamples{left})"
        )


def bootstrap_log_slope(
    curves: Mapping[float, Probes], level: float, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[dict[float, Bootstrap], Slope]:
    """Each budget's threshold with its interval, and the slope of ``log I*`` on ``log budget``
    with its interval. ``curves`` maps a budget to its threshold search's probes.

    How: each budget's crossing and its parametric bootstrap draws come from `crossing_samples`
    on that budget's probes alone (seed ``seed + i`` for the i-th budget, so budgets draw
    independently, as their trials are). Resample b takes draw b of every budget and fits
    `log_slope` through them; the slope's interval is the `CONFIDENCE` percentile interval of
    those fits. The estimate is `log_slope` through the crossings themselves. Budgets whose
    crossing lies outside their probes (±inf) are left out of the fit, and a resample in which
    any used budget's draw falls outside its probes is left out and counted (`Slope.undefined`).
    Example, thresholds 40, 80, 160 at budgets 1k, 4k, 16k (slope 0.5)::

        >>> def probes(t):
        ...     return {t / 4: [0.0, 0.05], t: [0.45, 0.55], t * 4: [0.95, 1.0]}
        >>> points, slope = bootstrap_log_slope(
        ...     {1e3: probes(40), 4e3: probes(80), 16e3: probes(160)}, 0.5, n_boot=400)
        >>> round(slope.estimate, 3), slope.low < 0.5 < slope.high, slope.excludes_zero
        (0.5, True, True)
    """
    budgets = sorted(curves)
    points, draws = {}, {}
    for i, x in enumerate(budgets):
        samples = crossing_samples(curves[x], level, n_boot, seed + i)
        points[x] = percentile_interval(crossing(curves[x], level), samples)
        draws[x] = samples
    used = [x for x in budgets if math.isfinite(points[x].estimate) and points[x].estimate > 0]
    nan = math.nan
    if len(used) < 2:
        return points, Slope(nan, nan, nan, n_boot, tuple(used))
    estimate = log_slope(used, [points[x].estimate for x in used])
    stacked = np.stack([draws[x] for x in used])  # (budgets, n_boot)
    ok = np.all(np.isfinite(stacked) & (stacked > 0), axis=0)
    undefined = int(n_boot - ok.sum())
    if not ok.any():
        return points, Slope(estimate, nan, nan, n_boot, tuple(used), undefined)
    # least-squares slopes of every kept resample at once (what `log_slope` computes for one)
    lx = np.log(np.asarray(used, float))
    ly = np.log(stacked[:, ok])  # (budgets, kept)
    dx = lx - lx.mean()
    fits = dx @ (ly - ly.mean(axis=0)) / float(dx @ dx)
    q = (1 - CONFIDENCE) / 2
    low, high = (float(np.quantile(fits, p, method="lower")) for p in (q, 1 - q))
    return points, Slope(estimate, low, high, n_boot, tuple(used), undefined)
