"""The phase boundary: the threshold I* at each budget, and how it scales with the budget.

A threshold search with ``over`` (`sweeps.specs.spec.ThresholdSearch`) runs one bisection of I
per budget N. This module turns their probes into the answer, once for every reader: the
results page (`chart`, the ``frontier`` entry of ``GET /v1/experiments/{id}/charts``),
``python -m sweeps report`` and RESULTS.md (`png`, `table_md`). The statistics are
`sweeps.stats.bootstrap_log_slope`'s: each budget's crossing of the level with its parametric
bootstrap 95 % interval, and the least-squares slope of log I* against log N whose interval
refits the slope through one bootstrap draw of every budget at a time. Worked example::

    >>> def probes(t):
    ...     return {t / 4: [0.0, 0.05], t: [0.45, 0.55], t * 4: [0.95, 1.0]}
    >>> fit = fit_frontier({1e3: probes(40), 4e3: probes(80), 16e3: probes(160)}, 0.5)
    >>> [round(fit.points[n].estimate) for n in fit.budgets], round(fit.slope.estimate, 2)
    ([40, 80, 160], 0.5)
    >>> [round(v) for v in fit.line()[1]]   # the fitted I* at the smallest and largest N
    [40, 160]

Ray-free and pure apart from drawing with matplotlib's object API.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from sweeps.stats import Bootstrap, Slope, bootstrap_log_slope, threshold_of

#: ``{budget: {probed I: per-seed values}}``: every bisection's probes.
Curves = Mapping[float, Mapping[float, Sequence[float]]]


@dataclass(frozen=True)
class FrontierFit:
    """Each budget's crossing (with its interval), the search's own answer and probe counts,
    and the slope of log I* against log N."""

    level: float
    curves: dict[float, dict[float, list[float]]]
    points: dict[float, Bootstrap]
    slope: Slope

    @property
    def budgets(self) -> list[float]:
        return sorted(self.curves)

    def answer(self, budget: float) -> float | None:
        """The bisection's answer at ``budget``: its smallest probe from which every larger
        probe's mean reaches the level (`sweeps.stats.threshold_of`)."""
        means = [(x, sum(v) / len(v)) for x, v in self.curves[budget].items() if v]
        return threshold_of(means, self.level)

    def trials(self, budget: float) -> int:
        """Seeds measured over every probe of ``budget``'s bisection."""
        return sum(len(v) for v in self.curves[budget].values())

    def text(self, budget: float) -> str:
        """``budget``'s I* for a line of text: ``119 (95% interval 98–142, 2000 bootstrap
        resamples), 6 trials``, or where it lies when outside the probes."""
        ci, probes = self.points[budget], self.curves[budget]
        if ci.estimate == math.inf:
            where = f"above the bracket: no probe up to {max(probes):g} reaches {self.level:g}"
        elif ci.estimate == -math.inf:
            where = f"at or below the bracket's low end {min(probes):g}"
        elif math.isnan(ci.estimate):
            where = "not measured"
        else:
            where = ci.text()
        return f"{where}, {self.trials(budget)} trials"

    def line(self) -> tuple[list[float], list[float]] | None:
        """The fitted power law at the smallest and largest budget of the fit: ``(xs, ys)``
        with ``log y = a + slope log x`` through the crossings (None without a slope)."""
        xs = list(self.slope.xs)
        if math.isnan(self.slope.estimate) or len(xs) < 2:
            return None
        lx = [math.log(x) for x in xs]
        ly = [math.log(self.points[x].estimate) for x in xs]
        a = sum(ly) / len(ly) - self.slope.estimate * sum(lx) / len(lx)
        ends = [min(xs), max(xs)]
        return ends, [math.exp(a + self.slope.estimate * math.log(x)) for x in ends]


def fit_frontier(curves: Curves, level: float) -> FrontierFit:
    """`FrontierFit` of every budget's probes (a seed that reported nothing counts as 0)."""
    clean = {
        float(n): {
            float(x): [0.0 if v is None else float(v) for v in vals] for x, vals in c.items()
        }
        for n, c in curves.items()
        if c
    }
    points, slope = bootstrap_log_slope(clean, level)
    return FrontierFit(level, clean, points, slope)


def curves_of_rows(rows: Sequence[Mapping[str, Any]], over: str, axis: str, key: str) -> Curves:
    """``{budget: {I: values}}`` from summary rows keyed by field paths (``over``, ``axis``) whose
    per-seed values sit under ``key`` (the charts' ``metric_values``)."""
    out: dict[float, dict[float, list[float]]] = {}
    for r in rows:
        n, x, vals = r.get(over), r.get(axis), r.get(key)
        if n is None or x is None or not vals:
            continue
        out.setdefault(float(n), {})[float(x)] = [0.0 if v is None else float(v) for v in vals]
    return out


def _finite(v: float) -> float | None:
    """JSON has no infinity or NaN: an unknown or open end is null."""
    return v if math.isfinite(v) else None


def _outside(ci: Bootstrap) -> str | None:
    if ci.estimate == math.inf:
        return "above"
    if ci.estimate == -math.inf:
        return "below"
    return None


# ---------------------------------------------------------------------------------------------
# the results page
# ---------------------------------------------------------------------------------------------


def chart(
    fit: FrontierFit, over: str, axis: str, metric: str, grid_trials: int | None = None
) -> dict[str, Any]:
    """The JSON the results page draws (``chart_data(...)["frontier"]``; ``grid_trials``: what
    a grid at the search's step would take at every budget, for the cost line)::

        {"over": "data.n_examples", "axis": "data.n_instructions", "metric": ..., "level": 0.5,
         "points": [{"budget": 14000, "estimate": 61.2, "low": 52.0, "high": 70.3,
                     "outside": null, "answer": 64, "trials": 6}, ...],
         "slope": {"estimate": 0.52, "low": 0.31, "high": 0.74, "n_boot": 2000,
                   "undefined": 0, "budgets": [14000, 56000, 224000]},
         "line": {"x": [14000, 224000], "y": [60.1, 252.3]},
         "trials": 30, "grid_trials": 66}

    ``outside`` is ``"above"`` / ``"below"`` when the crossing lies outside the bisection's
    probes (``estimate`` null; the bracket end it passed is ``high`` / ``low``); NaN and
    infinite values are null.
    """
    points = []
    for n in fit.budgets:
        ci = fit.points[n]
        probes = sorted(fit.curves[n])
        out = _outside(ci)
        points.append(
            {
                "budget": n,
                "estimate": _finite(ci.estimate),
                "low": probes[-1] if out == "above" else _finite(ci.low),
                "high": probes[0] if out == "below" else _finite(ci.high),
                "outside": out,
                "answer": fit.answer(n),
                "trials": fit.trials(n),
            }
        )
    s = fit.slope
    line = fit.line()
    return {
        "over": over,
        "axis": axis,
        "metric": metric,
        "level": fit.level,
        "points": points,
        "slope": {
            "estimate": _finite(s.estimate),
            "low": _finite(s.low),
            "high": _finite(s.high),
            "n_boot": s.n_boot,
            "undefined": s.undefined,
            "budgets": list(s.xs),
        },
        "line": {"x": line[0], "y": line[1]} if line else None,
        "trials": sum(p["trials"] for p in points),
        "grid_trials": grid_trials,
    }


# ---------------------------------------------------------------------------------------------
# the figure and the table (RESULTS.md, `python -m sweeps report`)
# ---------------------------------------------------------------------------------------------


def png(
    fit: FrontierFit,
    title: str,
    paper: tuple[float, float, float] | None = None,
    x_label: str = "training examples N",
) -> bytes:
    """I* against N on log-log axes: each crossing with its 95 % interval as an error bar, a
    triangle at the bracket end for a budget whose threshold lies outside it, the fitted line
    with the slope and its interval in the legend, and ``paper`` = ``(N, I* low, I* high)`` (the
    paper's single point) beside them."""
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    inside = [n for n in fit.budgets if math.isfinite(fit.points[n].estimate)]
    if inside:
        ys = [fit.points[n].estimate for n in inside]
        lo = [y - _or(fit.points[n].low, y) for n, y in zip(inside, ys, strict=True)]
        hi = [_or(fit.points[n].high, y) - y for n, y in zip(inside, ys, strict=True)]
        ax.errorbar(inside, ys, yerr=[lo, hi], fmt="o", capsize=4, label="I* (95 % interval)")
    for sign, marker, end, where in ((1, "^", max, "above"), (-1, "v", min, "below")):
        out = [n for n in fit.budgets if fit.points[n].estimate == sign * math.inf]
        if out:
            ys = [end(fit.curves[n]) for n in out]
            label = f"I* {where} the bracket (drawn at its end)"
            ax.plot(out, ys, marker=marker, color="tab:red", linestyle="none", label=label)
    line = fit.line()
    if line is not None:
        s = fit.slope
        interval = "" if math.isnan(s.low) else f" [{s.low:.2f}, {s.high:.2f}]"
        ax.plot(*line, color="tab:blue", alpha=0.6, label=f"fit: slope {s.estimate:.2f}{interval}")
    if paper is not None:
        n, low, high = paper
        mid = math.sqrt(low * high)
        ax.errorbar(
            [n],
            [mid],
            yerr=[[mid - low], [high - mid]],
            fmt="s",
            color="tab:grey",
            capsize=4,
            label=f"paper (P1 Fig. 2a): {low:g}–{high:g} at N = {n:,.0f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    # plain numbers (60, 100, 400), not 6 x 10^1: the budgets, and I at the decades between
    ax.set_xticks(fit.budgets + ([paper[0]] if paper else []))
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(FuncFormatter(_minor))
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"I* (rules where accuracy crosses {fit.level:g})")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _plain(v: float, _: Any = None) -> str:
    """A tick as a plain number: 14,000 and 200, not 1.4 x 10^4."""
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _minor(v: float, _: Any = None) -> str:
    """A log axis's minor tick labelled at 2 and 5 times a power of ten only (20, 50, 200)."""
    return _plain(v) if v > 0 and f"{v:e}"[0] in "25" else ""


def _or(v: float, default: float) -> float:
    """An interval end, or the estimate itself when the end is open (drawn as no bar)."""
    return v if math.isfinite(v) else default


def table_md(fit: FrontierFit, grid_per_budget: int) -> str:
    """One row per budget: I*, its interval, the search's answer, trials against the grid's."""
    lines = [
        f"| training examples N | I* (crossing of {fit.level:g}) | 95 % interval | search "
        "answer | trials | grid at the same step |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in fit.budgets:
        ci = fit.points[n]
        answer = fit.answer(n)
        if ci.estimate == math.inf:
            est, interval = f"> {max(fit.curves[n]):g}", "above the bracket"
        elif ci.estimate == -math.inf:
            est, interval = f"≤ {min(fit.curves[n]):g}", "below the bracket"
        else:
            lo = "below the probes" if ci.low == -math.inf else f"{ci.low:.0f}"
            hi = "above the probes" if ci.high == math.inf else f"{ci.high:.0f}"
            est, interval = f"{ci.estimate:.0f}", f"{lo}–{hi}"
        lines.append(
            f"| {n:,.0f} | {est} | {interval} | {'none' if answer is None else f'{answer:g}'} "
            f"| {fit.trials(n)} | {grid_per_budget} |"
        )
    return "\n".join(lines)
