"""The phase diagram: accuracy against the number of rules, as a PNG.

`plot_phase_diagram` draws a `summary` table:

- ``kind="lines"``: metric mean (± std band) against ``x`` on a log axis, one line per setting of
  the other varied parameters (e.g. one per no-op share);
- ``kind="heatmap"``: an I×S heat map when exactly two parameters vary independently;
- ``kind="auto"``: the heat map for that case, lines otherwise.

It uses matplotlib's object API with the Agg canvas (no pyplot global state), so the service can
call it from request threads. Example::

    png = plot_phase_diagram(summary(exp_id), metric="test_acc", x="data.n_instructions")
    Path("phase.png").write_bytes(png)
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from sweeps.reporting.tables import experiment_spec, summary
from sweeps.specs.spec import ExperimentSpec
from sweeps.store import ResultsStore

DEFAULT_X = "data.n_instructions"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def plot_phase_diagram(
    table: pa.Table,
    metric: str = "test_acc",
    x: str | None = None,
    kind: Literal["auto", "lines", "heatmap"] = "auto",
    independent: list[str] | None = None,
    title: str | None = None,
) -> bytes:
    """A PNG of ``table`` (a `summary`); see the module docstring.

    ``independent`` names the parameters that vary on their own (others, such as a budget-coupled
    ``examples_per_instruction``, follow them); by default every parameter column is.
    """
    cols = table.column_names
    if "n" not in cols:
        raise ValueError("table: expected a summary table (with an `n` column)")
    params = cols[: cols.index("n")]
    mean_col = f"{metric}_mean"
    rows = table.to_pylist()
    indep = [p for p in (independent or params) if p in params]
    varied = [p for p in indep if len({repr(r[p]) for r in rows}) > 1]
    x = x or (DEFAULT_X if DEFAULT_X in params else (varied[0] if varied else None))
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if mean_col not in cols or not rows or x is None:
        ax.text(
            0.5, 0.5, f"no {metric} results yet", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
    elif kind == "heatmap" or (
        kind == "auto"
        and len(varied) == 2
        and x in varied
        and all(_is_number(r[p]) for r in rows for p in varied)
    ):
        y = next(p for p in varied if p != x)
        _heatmap(fig, ax, rows, x, y, mean_col, metric)
    else:
        _lines(ax, rows, x, [p for p in varied if p != x], metric)
    ax.set_title(title or f"{metric} vs {x}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _lines(ax: Any, rows: list[dict[str, Any]], x: str, others: list[str], metric: str) -> None:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[o] for o in others), []).append(r)
    numeric_x = all(_is_number(r[x]) and r[x] > 0 for r in rows)
    series = []
    for key, rs in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        rs = sorted(rs, key=lambda r: r[x] if numeric_x else repr(r[x]))
        label = ", ".join(f"{o.split('.')[-1]}={v}" for o, v in zip(others, key, strict=True))
        series.append(
            Series(
                label or None,
                [r[x] if numeric_x else str(r[x]) for r in rs],
                [r[f"{metric}_mean"] for r in rs],
                [r.get(f"{metric}_std") or 0.0 for r in rs],
            )
        )
    draw_bands(ax, series, numeric_x)
    if numeric_x:
        log_ticks(ax, sorted({r[x] for r in rows}))
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if any(others):
        ax.legend(fontsize=8)


@dataclass(frozen=True)
class Series:
    """One line of a band plot: its label, x values, means and standard deviations."""

    label: str | None
    xs: Sequence[Any]
    means: Sequence[float]
    stds: Sequence[float]


def draw_bands(ax: Any, series: Sequence[Series], numeric_x: bool) -> None:
    """Mean lines with a ± std band each, on a log x axis when x is numeric; accuracy from 0 to
    1. The one drawing of a phase diagram (`plot_phase_diagram` and RESULTS.md's figures)."""
    for s in series:
        ax.plot(s.xs, s.means, marker="o", label=s.label)
        ax.fill_between(
            s.xs,
            [a - b for a, b in zip(s.means, s.stds, strict=True)],
            [a + b for a, b in zip(s.means, s.stds, strict=True)],
            alpha=0.15,
        )
    if numeric_x:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)


def log_ticks(ax: Any, xs: Sequence[float]) -> bool:
    """Label a log axis with the measured values themselves when they are few and spread
    (neighbours at least 1.5x apart); returns whether it did (else plain numbers at powers of
    ten, for bisection probes crowding near a threshold)."""
    spaced = all(b / a >= 1.5 for a, b in zip(xs, xs[1:], strict=False))
    if len(xs) <= 12 and spaced:
        ax.set_xticks(list(xs), [f"{v:g}" for v in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        return True
    ax.xaxis.set_major_formatter(ScalarFormatter())
    return False


def _heatmap(
    fig: Any, ax: Any, rows: list[dict[str, Any]], x: str, y: str, mean_col: str, metric: str
) -> None:
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    grid = [[math.nan] * len(xs) for _ in ys]
    for r in rows:
        grid[ys.index(r[y])][xs.index(r[x])] = r[mean_col]
    im = ax.imshow(grid, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=45)
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < 0.5 else "black",
                )
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    fig.colorbar(im, ax=ax, label=metric)


def plot_experiment(
    experiment_id: str,
    store_uri: str | None = None,
    store: ResultsStore | None = None,
    metric: str | None = None,
) -> bytes:
    """The phase diagram of a stored experiment, using its spec's metric and axes."""
    spec: ExperimentSpec = experiment_spec(experiment_id, store_uri, store)
    table = summary(experiment_id, store_uri, store)
    return plot_phase_diagram(
        table,
        metric=metric or spec.metric,
        independent=spec.independent_fields,
        title=f"{spec.name} ({experiment_id})",
    )
