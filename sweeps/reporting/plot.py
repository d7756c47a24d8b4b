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
from typing import Any, Literal

import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

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
    for key, rs in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        rs = sorted(rs, key=lambda r: r[x] if numeric_x else repr(r[x]))
        xs = [r[x] if numeric_x else str(r[x]) for r in rs]
        ys = [r[f"{metric}_mean"] for r in rs]
        sd = [r.get(f"{metric}_std") or 0.0 for r in rs]
        label = ", ".join(f"{o.split('.')[-1]}={v}" for o, v in zip(others, key, strict=True))
        ax.plot(xs, ys, marker="o", label=label or None)
        if numeric_x:
            ax.fill_between(
                xs,
                [a - b for a, b in zip(ys, sd, strict=True)],
                [a + b for a, b in zip(ys, sd, strict=True)],
                alpha=0.15,
            )
    if numeric_x:
        ax.set_xscale("log")
        ticks = sorted({r[x] for r in rows})
        if len(ticks) <= 12:  # label the swept values themselves, not powers of ten
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    if any(others):
        ax.legend(fontsize=8)


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
