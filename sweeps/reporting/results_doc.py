"""docs/RESULTS.md, rendered from stored results: one section per study of
`sweeps.reporting.studies`.

The document is never edited by hand and never holds a number that is not in the results store.
Beside it, an *index* (``results.json`` next to ``RESULTS.md``) records which experiment answered
each study, with the spec it ran, its wall time and the commit; `render` rebuilds every section
from the index and a `ResultsSource` (the service over REST, or a store opened directly), so
rerunning one study rewrites its section and keeps the others. Figures go to
``img/<document stem>/<study>.png`` beside the document and are linked relatively. Example::

    index = ResultsIndex.load(Path("docs/results.json"))
    render(index, StoreSource(open_store("~/.divsweep/results")), Path("docs/RESULTS.md"))

Ray-free: it reads pyarrow tables and draws with matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data.io import write_bytes_atomic
from sweeps.reporting.frontier import fit_frontier
from sweeps.reporting.frontier import png as frontier_png
from sweeps.reporting.frontier import table_md as frontier_table_md
from sweeps.reporting.plot import Series, draw_bands, log_ticks
from sweeps.reporting.studies import (
    PAPER_FRONTIER_POINT,
    STUDIES,
    Long,
    Pivot,
    Study,
    cells_of,
    frontier_run,
    judge,
    metric_name,
)
from sweeps.reporting.tables import results, summarize
from sweeps.reporting.verdicts import Verdict, frontier_probes, threshold_interval, values
from sweeps.specs.lifecycle import ExperimentStatus
from sweeps.specs.spec import ExperimentSpec, ThresholdSearch
from sweeps.stats import threshold_of

INDEX_VERSION = 2
#: Versions `ResultsIndex.load` reads (1 had no code versions: such results are never current).
READABLE_VERSIONS = (1, 2)
#: A study record's status: its experiment's, or ``skipped`` (it could not run here).
SKIPPED = "skipped"
FINAL = (*ExperimentStatus.terminal(), SKIPPED)


# ---------------------------------------------------------------------------------------------
# the index: which experiment answered which study
# ---------------------------------------------------------------------------------------------


@dataclass
class StudyRecord:
    """One study's entry in the index. ``status`` is the experiment's (or ``skipped``, with the
    reason in ``error``); ``spec`` is the spec it ran, as JSON data."""

    study: str
    status: str
    experiment_id: str | None = None
    smoke: bool = False
    spec: dict[str, Any] | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    wall_s: float | None = None
    commit: str | None = None
    error: str | None = None
    #: how far the preset's seeds were shifted (``divsweep reproduce --seed-offset``)
    seed_offset: int = 0
    #: `sweeps.codeversion.code_version` (data/ and trainer/) of the code that ran it
    code_version: str | None = None


@dataclass
class RunInfo:
    """One `divsweep reproduce` invocation: when, where, at which commit, how long."""

    started_at: float
    commit: str
    machine: dict[str, Any]
    studies: list[str]
    smoke: bool = False
    finished_at: float | None = None
    wall_s: float | None = None
    seed_offset: int = 0
    code_version: str | None = None


@dataclass
class ResultsIndex:
    """``results.json``: the study records and the last run."""

    studies: dict[str, StudyRecord] = field(default_factory=dict)
    last_run: RunInfo | None = None

    @classmethod
    def load(cls, path: Path) -> ResultsIndex:
        """The index at ``path``; an empty one if there is no file yet."""
        if not path.is_file():
            return cls()
        raw = json.loads(path.read_text())
        if raw.get("version") not in READABLE_VERSIONS:
            raise ValueError(
                f"{path}: index version {raw.get('version')!r}, expected {INDEX_VERSION}"
            )
        studies = {k: StudyRecord(**v) for k, v in raw.get("studies", {}).items()}
        run = RunInfo(**raw["last_run"]) if raw.get("last_run") else None
        return cls(studies, run)

    def save(self, path: Path) -> None:
        """Write atomically (``.tmp``, fsync, rename): a reader never sees half a file."""
        body = {
            "version": INDEX_VERSION,
            "studies": {k: asdict(v) for k, v in sorted(self.studies.items())},
            "last_run": asdict(self.last_run) if self.last_run else None,
        }
        _write_atomic(path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def index_path(out: Path) -> Path:
    """``docs/RESULTS.md`` -> ``docs/results.json``."""
    return out.with_name(out.stem.lower() + ".json")


def figure_dir(out: Path) -> Path:
    """``docs/RESULTS.md`` -> ``docs/img/results``."""
    return out.parent / "img" / out.stem.lower()


# ---------------------------------------------------------------------------------------------
# where the results come from
# ---------------------------------------------------------------------------------------------


class ResultsSource(Protocol):
    """The stored rows of an experiment (`sweeps.reporting.tables.results` layout) and its
    status."""

    def results_table(self, experiment_id: str) -> pa.Table: ...

    def status(self, experiment_id: str) -> str | None: ...


class StoreSource:
    """A `ResultsSource` over a results store opened in this process."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def results_table(self, experiment_id: str) -> pa.Table:
        return results(experiment_id, store=self.store)

    def status(self, experiment_id: str) -> str | None:
        if not self.store.has_experiment(experiment_id):
            return None
        return str(self.store.get_experiment(experiment_id).status)


# ---------------------------------------------------------------------------------------------
# measuring: results rows -> the study's cells and verdict
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """A study's measured cells, its trial counts and its verdict."""

    cells: list[dict[str, Any]]
    n_trials: int
    n_reused: int
    verdict: Verdict


def study_cells(study: Study, spec: ExperimentSpec, table: pa.Table) -> list[dict[str, Any]]:
    """``table`` (one row per report) as the study's cells, with per-seed values. The
    parameter columns are the spec's varied fields plus the seed; every complete trial's last
    report counts (`sweeps.reporting.tables.summarize`)."""
    params = set(spec.varied_fields) | {"seed"}
    return cells_of(study, summarize(table, params, per_seed=True).to_pylist())


def measure(
    study: Study,
    spec: ExperimentSpec,
    table: pa.Table,
    reference: Sequence[Mapping[str, Any]] | None = None,
) -> Measurement:
    """Summarise ``table`` across seeds and judge it (``reference``: the cells of a threshold
    study's grid twin, `Study.reference`)."""
    cells = study_cells(study, spec, table)
    if table.num_rows:
        trials = set(table.column("trial_id").to_pylist())
        reused = {
            t
            for t, r in zip(
                table.column("trial_id").to_pylist(),
                table.column("reused_from").to_pylist(),
                strict=True,
            )
            if r
        }
    else:
        trials, reused = set(), set()
    verdict = judge(study, cells, spec, len(trials), reference)
    return Measurement(cells, len(trials), len(reused), verdict)


# ---------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------


def fmt_stat(cell: Mapping[str, Any], metric: str) -> str:
    """``0.941 ± 0.012`` (mean ± std across seeds; no ± with one seed; ``–`` if unmeasured);
    a count (``test_rules_op_new_x``) is its smallest value over the seeds: ``≥ 163``."""
    m, s = cell.get(f"{metric}_mean"), cell.get(f"{metric}_std")
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    if "_rules_" in metric or "_n_" in metric:
        low = min((v for v in values(cell, metric) if not math.isnan(v)), default=m)
        return f"≥ {low:.0f}" if (cell.get("n") or 0) > 1 else f"{m:.0f}"
    if (cell.get("n") or 0) < 2 or s is None or math.isnan(s):
        return f"{m:.3f}"
    return f"{m:.3f} ± {s:.3f}"


def _metrics(spec_metrics: Sequence[str], cells: Sequence[Mapping[str, Any]]) -> list[str]:
    measured = sorted(
        {c.removesuffix("_mean") for cell in cells for c in cell if c.endswith("_mean")}
    )
    out: list[str] = []
    for m in spec_metrics:
        if m.endswith("*"):
            out += sorted((x for x in measured if x.startswith(m[:-1])), key=lambda x: (len(x), x))
        elif m in measured:
            out.append(m)
    return out


def _values(study: Study, cells: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    k = study.keys[key]
    return sorted({c[key] for c in cells if c.get(key) is not None}, key=k.order)


def table_md(study: Study, layout: Pivot | Long, cells: Sequence[Mapping[str, Any]]) -> str:
    """One table of the study's cells as markdown (see `sweeps.reporting.studies.Pivot` /
    `Long`)."""
    if isinstance(layout, Long):
        keys = [k for k in layout.keys if cells and k in cells[0]]
        metrics = _metrics(layout.metrics, cells)
        head = [study.keys[k].header for k in keys] + ["n"] + [metric_name(m) for m in metrics]
        lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for c in cells:
            vals = [study.keys[k].fmt(c[k]) for k in keys] + [str(c.get("n"))]
            lines.append("| " + " | ".join(vals + [fmt_stat(c, m) for m in metrics]) + " |")
        return "\n".join(lines)
    if not cells or layout.rows not in cells[0] or layout.cols not in cells[0]:
        return f"(no {layout.rows} × {layout.cols} cells measured)"
    rk, ck = study.keys[layout.rows], study.keys[layout.cols]
    cols = _values(study, cells, layout.cols)
    ns = sorted({int(c.get("n") or 0) for c in cells})
    lines = [
        f"{metric_name(layout.metric)}, mean ± std across seeds "
        f"(n = {'–'.join(map(str, (ns[0], ns[-1]) if len(ns) > 1 else ns))} per cell):",
        "",
        "| " + " | ".join([f"{rk.header} \\ {ck.header}"] + [ck.fmt(v) for v in cols]) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for r in _values(study, cells, layout.rows):
        row = [rk.fmt(r)]
        for v in cols:
            cell = next((c for c in cells if c[layout.rows] == r and c[layout.cols] == v), None)
            row.append(fmt_stat(cell, layout.metric) if cell else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """``455`` -> ``7 min 35 s``; ``12.34`` -> ``12.3 s``."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {s} s"


def stamp(t: float | None) -> str:
    """A UTC time to the minute: ``2026-12-01 10:04 UTC``."""
    return "–" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def figure_png(
    study: Study, cells: Sequence[Mapping[str, Any]], title: str, level: float | None = None
) -> bytes:
    """``study.metric`` against the ``x`` key, one line (± std band) per ``group`` value.

    A numeric x is drawn on a log axis labelled with the measured values; a threshold study
    also gets its level, the search's I* and the crossing's bootstrap interval.
    """
    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    metric = study.metric
    usable = [c for c in cells if study.x in c and c.get(f"{metric}_mean") is not None]
    if not usable:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        _lines(ax, study, usable)
        if level is not None:
            _threshold_marks(ax, usable, study.x, metric, level)
    ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _threshold_marks(
    ax: Any, cells: Sequence[Mapping[str, Any]], x: str, metric: str, level: float
) -> None:
    ax.axhline(level, color="grey", linestyle="--", linewidth=1)
    i_star = threshold_of([(c[x], c[f"{metric}_mean"]) for c in cells], level)
    if i_star is not None:
        ax.axvline(i_star, color="tab:red", linestyle=":", linewidth=1.5, label=f"I* = {i_star:g}")
    ci = threshold_interval([{**c, "I": c[x]} for c in cells], level, metric)
    if math.isfinite(ci.low) and math.isfinite(ci.high):
        ax.axvspan(ci.low, ci.high, color="tab:red", alpha=0.1, label="95 % interval")
    # Neither mark when no curve crosses the level: a legend without artists only warns.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _lines(ax: Any, study: Study, cells: Sequence[Mapping[str, Any]]) -> None:
    x, metric, group = study.x, study.metric, study.group
    xk = study.keys[x]
    numeric = all(isinstance(c[x], int | float) and c[x] > 0 for c in cells)
    xs_all = _values(study, cells, x)
    groups = _values(study, cells, group) if group and group in cells[0] else [None]
    series = []
    for g in groups:
        rs = [c for c in cells if g is None or c[group] == g]  # type: ignore[index]
        rs.sort(key=lambda c: xk.order(c[x]))
        series.append(
            Series(
                study.keys[group].fmt(g) if group and g is not None else None,
                [c[x] if numeric else xs_all.index(c[x]) for c in rs],
                [c[f"{metric}_mean"] for c in rs],
                [c.get(f"{metric}_std") or 0.0 for c in rs],
            )
        )
    draw_bands(ax, series, numeric)
    if numeric:
        log_ticks(ax, xs_all)
    else:
        ax.set_xticks(range(len(xs_all)), [xk.fmt(v) for v in xs_all])
    ax.set_xlabel(xk.header)
    ax.set_ylabel(metric_name(metric))
    if group and len(groups) > 1:
        ax.legend(fontsize=8, title=study.keys[group].header, title_fontsize=8)


def per_seed_md(study: Study, cells: Sequence[Mapping[str, Any]]) -> str:
    """Each cell's seeds and the per-seed values of the metrics its verdict reads."""
    keys = [k for k in study.keys if cells and k in cells[0]]
    metrics = [m for m in study.per_seed if any(f"{m}_values" in c for c in cells)]
    head = [study.keys[k].header for k in keys] + ["seeds"] + [metric_name(m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for c in cells:
        row = [study.keys[k].fmt(c[k]) for k in keys]
        row.append(", ".join(map(str, c.get("seeds") or [])))
        for m in metrics:
            row.append(", ".join("–" if math.isnan(v) else f"{v:.3f}" for v in values(c, m)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------------

HEADER = """\
# Results: the paper's studies, reproduced

<!-- Generated by `divsweep reproduce`: do not edit by hand. -->

**Generated by `divsweep reproduce` (`bash scripts/reproduce.sh`); do not edit by hand.** Rerun
it (`--studies a,b` for some studies, `--render-only` to redraw from the store). `{index}` beside
this file names the experiment that answered each study; every number and figure below is read
back from that experiment's stored results. Each study runs a `-mini` preset
(`sweeps/presets/`), scaled down for a CPU; docs/PAPER.md has the paper's settings.
Mean ± std are across seeds; n is the number of seeds in a cell."""


def header_md(
    index: ResultsIndex,
    index_name: str,
    verdicts: Mapping[str, str],
    stale: Mapping[str, str] | None = None,
) -> str:
    """The document's header: provenance, machine, wall time, and one line per study
    (``stale``: the studies whose sections are not current, see `render`)."""
    stale = stale or {}
    run = index.last_run
    lines = [HEADER.format(index=index_name), ""]
    if run is not None:
        m = run.machine
        machine = (
            f"{m.get('nproc', '?')} CPUs, {m.get('memory_gib', '?')} GiB memory, "
            f"torch threads {m.get('torch_threads', '?')} (client process; each trial "
            f"runs with its own CPUs, see its section); {m.get('platform', '')}"
        ).rstrip("; ")
        total = sum(
            r.wall_s or 0.0
            for name, r in index.studies.items()
            if r.status == ExperimentStatus.COMPLETE
            and name not in stale
            and name in STUDIES
            and STUDIES[name].default
        )
        lines += [
            "| | |",
            "|---|---|",
            f"| last run | {stamp(run.started_at)}: {', '.join(run.studies)}"
            f"{' (smoke settings)' if run.smoke else ''} |",
            f"| commit | `{run.commit}` |",
            f"| seeds | {_seeds_note(run.seed_offset)} |",
            f"| machine | {machine} |",
            f"| wall time | last run "
            f"{duration(run.wall_s) if run.finished_at else 'still in progress'}; "
            f"all complete and current studies of the default run together "
            f"{duration(total)} |",
            "",
        ]
    lines += ["| study | experiment | status | wall time | verdict |", "|---|---|---|---:|---|"]
    for name, study in STUDIES.items():
        rec = index.studies.get(name)
        exp = f"`{rec.experiment_id}`" if rec and rec.experiment_id else "–"
        status = (rec.status + (" (smoke)" if rec.smoke else "")) if rec else "not run"
        if not study.default:  # run only when named: `--studies <name>`
            status += " (not in the default run)"
        lines.append(
            f"| [{name}](#{name}) | {exp} | {status} | "
            f"{duration(rec.wall_s if rec else None)} | "
            f"{'not current' if name in stale and rec else verdicts.get(name, '–')} |"
        )
    return "\n".join(lines)


def section_md(
    study: Study,
    rec: StudyRecord | None,
    source: ResultsSource,
    img_dir: Path,
    img_rel: str,
    reference: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[str, str]:
    """One study's section and its short verdict (``effect shown`` / ``partly`` / ...).

    Writes the study's figure into ``img_dir`` (linked as ``img_rel/<study>.png``).
    ``reference``: the cells of the study's grid twin (`Study.reference`), if measured.
    """
    head = [
        f'<a id="{study.name}"></a>',
        f"## {study.name}: {study.title}",
        "",
        f"**Claim.** {study.claim}",
        "",
    ]
    if rec is None:
        why = "" if study.default else " (not part of the default run, it has its own time budget)"
        run = f"Not run yet{why}: `divsweep reproduce --studies {study.name}`."
        return "\n".join(head + [run]), "–"
    if rec.status == SKIPPED:
        return "\n".join(head + [f"**Skipped.** {rec.error}"]), SKIPPED
    spec = ExperimentSpec.model_validate(rec.spec) if rec.spec else None
    status = source.status(rec.experiment_id) if rec.experiment_id else None
    status = status or rec.status
    provenance = (
        f"Experiment `{rec.experiment_id}` (preset `{study.preset}`"
        f"{', **smoke settings: the numbers mean nothing**' if rec.smoke else ''}): "
        f"{status}, submitted {stamp(rec.submitted_at)} at commit "
        f"`{rec.commit or '?'}`, wall time {duration(rec.wall_s)}"
    )
    if spec is not None:
        provenance += f", seeds {', '.join(map(str, spec.seeds))}" + (
            f" ({_seeds_note(rec.seed_offset)})" if rec.seed_offset else ""
        )
    if spec is None or rec.experiment_id is None:
        return "\n".join(head + [provenance + ".", "", f"**Not measured.** {rec.error}"]), "–"
    try:
        table = source.results_table(rec.experiment_id)
    except Exception as e:  # a lost experiment must not take the other sections down
        return "\n".join(
            head + [provenance + ".", "", f"**Results unavailable:** {e}"]
        ), "unavailable"
    meas = measure(study, spec, table, reference)
    verdict, short = meas.verdict, str(meas.verdict.outcome)
    if (
        status != ExperimentStatus.COMPLETE
    ):  # judge only finished studies; show what is stored so far
        verdict = Verdict(
            "not shown",
            f"the experiment is {status}"
            + (f": {rec.error}" if rec.error else "")
            + ("; the cells below are what it stored" if meas.cells else ""),
        )
        short = status
    body = [
        provenance + f"; {meas.n_trials} trials ({meas.n_reused} reused from earlier "
        f"experiments), {spec.resources.cpus:g} CPU each, at most "
        f"{spec.max_concurrent or 'all'} at a time.",
        "",
    ]
    body += [f"**Setting.** {_setting(spec, rec.smoke)}", "", "**Measured:**", ""]
    for layout in study.tables:
        body += [table_md(study, layout, meas.cells), ""]
    body += ["Per seed (what the verdict's tests read):", "", per_seed_md(study, meas.cells), ""]
    search = spec.search
    frontier = isinstance(search, ThresholdSearch) and search.over is not None
    # one threshold per curve: a frontier's phase diagram gets no single threshold mark
    level = search.level if isinstance(search, ThresholdSearch) and not frontier else None
    png = figure_png(study, meas.cells, f"{study.name} ({rec.experiment_id})", level)
    _write_atomic(img_dir / f"{study.name}.png", png)
    body += [f"![{study.name}]({img_rel}/{study.name}.png)", ""]
    if frontier:
        body += frontier_md(study, spec, meas, rec.experiment_id, img_dir, img_rel)
    body += ["**The paper, side by side:**", "", study.paper, "", verdict.line()]
    return "\n".join(head + body), short


def frontier_md(
    study: Study,
    spec: ExperimentSpec,
    meas: Measurement,
    experiment_id: str,
    img_dir: Path,
    img_rel: str,
) -> list[str]:
    """A frontier study's own lines: I* at each budget with its interval and trials (against
    a grid at the same step), the slope, and the log-log figure ``<study>-frontier.png`` with the
    paper's single point beside ours."""
    run = frontier_run(spec, meas.n_trials)
    fit = fit_frontier(frontier_probes(meas.cells, study.metric), run.search.level)
    grid = run.grid_trials // max(len(run.budgets), 1)
    name = f"{study.name}-frontier"
    title = f"{study.name} ({experiment_id}): the phase boundary"
    _write_atomic(img_dir / f"{name}.png", frontier_png(fit, title, PAPER_FRONTIER_POINT))
    return [
        f"**The phase boundary** ({metric_name(study.metric)}; crossing of "
        f"{run.search.level:g}, bootstrap 95 % intervals over the seeds):",
        "",
        frontier_table_md(fit, grid),
        "",
        f"Slope of log I* against log N: {fit.slope.text()}. Trials: {meas.n_trials} "
        f"({meas.n_reused} reused) against {run.grid_trials} for a grid at the same step at "
        "every budget.",
        "",
        f"![{name}]({img_rel}/{name}.png)",
        "",
    ]


def _seeds_note(offset: int) -> str:
    if not offset:
        return "the presets' own"
    return (
        f"the presets' seeds shifted by {offset:+d} (`--seed-offset {offset}`): seeds the "
        "calibration did not use"
    )


def _setting(spec: ExperimentSpec, smoke: bool) -> str:
    described = spec.description.strip() or spec.name
    if not smoke:
        return described
    model = spec.train.model or spec.train.init
    return (
        f"smoke settings (`sweeps.reporting.studies.smoke_overrides`): {spec.train.max_steps} "
        f"optimizer steps of the {model} model, seed {spec.seeds[0]}, the first and last "
        f"value of each axis, {spec.data.test.n_test} test examples. The preset itself: "
        f"{described}"
    )


def reference_cells(
    study: Study, index: ResultsIndex, source: ResultsSource
) -> list[dict[str, Any]] | None:
    """The cells of ``study``'s grid twin (`Study.reference`) when it ran to completion (None
    otherwise: the threshold verdict then says nothing about the grid)."""
    rec = index.studies.get(study.reference) if study.reference else None
    if (
        rec is None
        or rec.status != ExperimentStatus.COMPLETE
        or not rec.spec
        or not rec.experiment_id
    ):
        return None
    twin = STUDIES[rec.study]
    try:
        table = source.results_table(rec.experiment_id)
    except Exception:  # the section of the twin says why its results are missing
        return None
    return study_cells(twin, ExperimentSpec.model_validate(rec.spec), table)


def render(
    index: ResultsIndex,
    source: ResultsSource,
    out: Path,
    stale: Mapping[str, str] | None = None,
) -> str:
    """Write ``out`` (and its figures) from ``index`` and ``source``; returns the markdown.

    ``stale``: ``{study: why its section is not from this checkout's code and preset}`` (what
    ``divsweep reproduce --check`` finds); such a section says so above its numbers.
    """
    img_dir = figure_dir(out)
    img_rel = img_dir.relative_to(out.parent).as_posix()
    sections, outcomes = [], {}
    for name, study in STUDIES.items():
        ref = reference_cells(study, index, source)
        text, outcome = section_md(study, index.studies.get(name), source, img_dir, img_rel, ref)
        why = (stale or {}).get(name)
        if why and name in index.studies:
            head, _, rest = text.partition("\n\n")
            note = f"> **Not current:** {why}. Its numbers are not the shipped code's."
            text = f"{head}\n\n{note}\n\n{rest}"
        sections.append(text)
        outcomes[name] = outcome
    head = header_md(index, index_path(out).name, outcomes, stale)
    doc = "\n\n".join([head, *sections]) + "\n"
    _write_atomic(out, doc.encode())
    return doc
