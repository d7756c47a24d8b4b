"""The results page: server-rendered HTML, ``/static/app.js`` for live progress and
``/static/charts.js`` drawing the charts with Plotly (served from its Python package).

``/`` lists experiments (newest first) with a progress bar each; ``/experiments/{id}`` shows one
experiment's progress, phase diagram and summary table. Every value put into HTML goes through
:func:`html.escape`. The script opens one EventSource per unfinished experiment and refreshes
that row's counts from ``GET /v1/experiments/{id}`` whenever a result arrives.
"""

from __future__ import annotations

import functools
import html
import logging
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response

from service.deps import get_service, get_settings
from service.experiments import ExperimentService
from service.registry import Experiment
from service.results import table_records
from service.routes.params import ExpId
from service.schemas import ExperimentOut
from service.settings import Settings
from service.views import experiment_out
from sweeps.specs.lifecycle import ExperimentStatus

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
Svc = Annotated[ExperimentService, Depends(get_service)]
Conf = Annotated[Settings, Depends(get_settings)]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse}td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;
text-align:left}progress{width:10rem}.status-complete{color:#070}.status-failed{color:#a00}
.status-cancelled{color:#777}.status-running{color:#05a}img{max-width:48rem;border:1px solid #ddd}
.waiting{background:#fff8e0;padding:.5rem}.infeasible{background:#fde8e8}
.chart{max-width:60rem}.note{color:#666;font-size:.9rem}td.error{color:#a00}td.reused{color:#555}
#threshold{font-weight:600}nav.pages a{margin-right:1rem}form.filters{margin:.5rem 0}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _doc(title: str, body: str, scripts: tuple[str, ...] = ("/static/app.js",)) -> HTMLResponse:
    tags = "".join(f"<script src='{src}'></script>" for src in scripts)
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}{tags}</body></html>"
    )


def _done(out: ExperimentOut) -> int:
    p = out.progress
    return 0 if p is None else p.complete + p.failed + p.pruned + p.cancelled


def _row(out: ExperimentOut) -> str:
    p = out.progress
    total = p.n_trials if p else 0
    best = "" if p is None or p.best is None else f"{p.best:.4g}"
    results = p.results if p else 0
    return (
        f"<tr class=exp data-id='{_e(out.id)}' data-status='{_e(out.status)}' "
        f"data-results='{results}'>"
        f"<td><a href='/experiments/{_e(out.id)}'>{_e(out.name)}</a>"
        f"{_OUTSIDE if out.external else ''}</td>"
        f"<td><code>{_e(out.id)}</code></td>"
        f"<td class='status status-{_e(out.status)}'>{_e(out.status)}</td>"
        f"<td><progress max='{total}' value='{_done(out)}'></progress> "
        f"<span class=counts>{_done(out)}/{total} trials done, "
        f"{p.running if p else 0} running, {results} results</span></td>"
        f"<td class=best>{_e(best)}</td>"
        f"<td>{_e(out.created_at.strftime('%Y-%m-%d %H:%M:%S'))}</td></tr>"
    )


#: the mark of an experiment started outside the service (read-only here)
_OUTSIDE = " <small class=external>started outside the service</small>"


def _safe_out(exp: Experiment, svc: ExperimentService, settings: Settings) -> ExperimentOut:
    try:
        return experiment_out(exp, svc, settings)
    except Exception as e:  # one unreadable experiment must not break the page
        log.warning("progress of %s unavailable: %s", exp.id, e)
        return experiment_out(exp, svc, settings, with_progress=False)


PAGE_SIZE = 50
_STATUSES = tuple(s.value for s in ExperimentStatus)


def _page_link(status: str | None, name: str | None, offset: int, limit: int) -> str:
    q = {"status": status, "name": name, "offset": offset or None, "limit": limit}
    return "/?" + urlencode({k: v for k, v in q.items() if v})


@router.get("/", response_class=HTMLResponse)
def index(
    svc: Svc,
    settings: Conf,
    status: Annotated[ExperimentStatus | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=100)] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
) -> HTMLResponse:
    """Newest first, ``limit`` a page, filtered like ``GET /v1/experiments``."""
    rows, total = svc.query(status, name or None, limit, offset)
    body = "".join(_row(_safe_out(r, svc, settings)) for r in rows)
    filtered = status is not None or bool(name)
    empty = (
        ""
        if rows
        else (
            "<p id=empty>No experiment matches.</p>"
            if filtered
            else "<p id=empty>No experiments yet. Submit one with "
            "<code>divsweep submit smoke</code>.</p>"
        )
    )
    options = "".join(
        f"<option{' selected' if s == status else ''}>{s}</option>" for s in _STATUSES
    )
    form = (
        f"<form class=filters method=get action='/'><label>status <select name=status>"
        f"<option value=''>any</option>{options}</select></label> "
        f"<label>name <input name=name value='{_e(name)}' maxlength=100></label> "
        f"<input type=hidden name=limit value='{limit}'><button>filter</button></form>"
    )
    links = []
    if offset > 0:
        newer = _page_link(status, name, max(offset - limit, 0), limit)
        links.append(f"<a id=prev href='{_e(newer)}'>&larr; newer</a>")
    if offset + len(rows) < total:
        older = _page_link(status, name, offset + limit, limit)
        links.append(f"<a id=next href='{_e(older)}'>older &rarr;</a>")
    shown = f"{offset + 1}&ndash;{offset + len(rows)} of {total}" if rows else f"0 of {total}"
    return _doc(
        "divsweep",
        (
            f"<h1>divsweep experiments</h1>{form}<p id=shown>{shown} experiment(s)</p>{empty}"
            "<table id=experiments><thead><tr><th>name</th><th>id</th><th>status</th>"
            "<th>progress</th><th>best</th><th>submitted (UTC)</th></tr></thead>"
            f"<tbody>{body}</tbody></table><nav class=pages>{''.join(links)}</nav>"
        ),
    )


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No results yet.</p>"
    cols = [c for c in rows[0] if c not in ("metrics_json", "params_json")]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else _e(v)

    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table id=summary><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _waiting(out: ExperimentOut) -> str:
    """Ray's reason why nothing runs (`service.waiting`), shown above the results."""
    if out.waiting is None:
        return ""
    cls = "waiting infeasible" if out.waiting.infeasible else "waiting"
    return f"<p id=waiting class='{cls}'><b>Waiting for resources:</b> {_e(out.waiting.detail)}</p>"


_CHARTS = (
    "<section id=charts data-id='{id}' data-status='{status}'>"
    "<h2>Phase diagram</h2><p class=note>mean &plusmn; std over seeds; running trials count "
    "with their latest report; dotted: the same metric on training rules</p>"
    "<div id=phase class=chart></div><p id=threshold hidden></p>"
    "<div id=heatmap class=chart hidden></div>"
    "<section id=frontier-section hidden><h2>Phase boundary</h2><p class=note>the threshold at "
    "each budget (crossing of the level, bootstrap 95 % interval over the seeds) and the fitted "
    "slope of log I* against log N; finished probes only</p><div id=frontier class=chart></div>"
    "<p id=frontier-text></p></section>"
    "<h2>Learning curves</h2><div id=curves class=chart></div><div id=loss class=chart></div>"
    "<h2>Trials</h2><table id=trials><thead><tr><th>trial</th><th>state</th>"
    "<th>parameters</th><th>error / reuse</th></tr></thead><tbody></tbody></table>"
    "</section>"
)


@router.get("/experiments/{exp_id}", response_class=HTMLResponse)
def experiment_page(exp_id: ExpId, svc: Svc, settings: Conf) -> HTMLResponse:
    exp, state = svc.refresh(exp_id)
    out = experiment_out(exp, svc, settings, state)
    summary = "<p>No results yet.</p>"
    if out.progress and out.progress.results:
        try:
            summary = _table(table_records(svc.results.summary(exp_id)))
        except Exception as e:  # the summary needs finished trials; say why it is missing
            log.info("summary of %s unavailable: %s", exp_id, e)
            summary = f"<p>Summary not available yet ({_e(type(e).__name__)}).</p>"
    dash = out.links.dashboard
    dash_html = f" &middot; <a href='{_e(dash)}'>Ray dashboard</a>" if dash else ""
    return _doc(
        f"divsweep {exp.name}",
        (
            f"<p><a href='/'>&larr; all experiments</a>{dash_html}</p>"
            f"<h1>{_e(exp.name)} <code>{_e(exp.id)}</code></h1>"
            f"<table id=experiments><tbody>{_row(out)}</tbody></table>"
            f"{_waiting(out)}{_CHARTS.format(id=_e(exp.id), status=_e(exp.status))}"
            f"<h2>Summary</h2>{summary}"
            f"<p>Download: <a href='{_e(out.links.results)}?format=csv'>CSV</a> &middot; "
            f"<a href='{_e(out.links.results)}?format=parquet'>Parquet</a> &middot; "
            f"<a href='/v1/experiments/{_e(exp.id)}/charts'>chart data (JSON)</a> &middot; "
            f"<a href='/v1/experiments/{_e(exp.id)}/plot.png'>phase diagram (PNG)</a></p>"
        ),
        scripts=("/static/plotly.min.js", "/static/app.js", "/static/charts.js"),
    )


@functools.cache
def _plotly_js() -> bytes:
    return resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()


#: Our own scripts, by the name the page asks for (nothing else under static/ is served).
_OWN_JS = ("app.js", "charts.js")


@router.get("/static/{name}")
def static_js(name: str) -> Response:
    """Our scripts, and Plotly's from its Python package, so the page needs no internet."""
    if name == "plotly.min.js":
        import plotly

        bundle = _plotly_js()
        # versioned by the installed package: browsers may keep it for a day
        return Response(
            bundle,
            media_type="text/javascript",
            headers={
                "Cache-Control": "public, max-age=86400",
                "ETag": f'"plotly-{plotly.__version__}"',
            },
        )
    if name not in _OWN_JS:
        return Response("not found", status_code=404, media_type="text/plain")
    js = resources.files("service").joinpath(f"static/{name}").read_text()
    return Response(js, media_type="text/javascript")
