"""The experiments resource: submit, list, status, cancel, results, summary, charts, plot.

Every path id must match the registry's id pattern (``x`` + 16 hex digits) before anything is
looked up, so an id like ``../../etc`` is a 422 (or a 404 from routing), never a file access.
The event stream lives in :mod:`service.routes.events`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service import presets
from service.auth import require_token
from service.deps import get_results, get_service, get_settings
from service.errors import SpecValidationError
from service.experiments import ExperimentService
from service.results import ResultsView, table_bytes, table_records
from service.routes.params import ERRORS, ExpId
from service.schemas import (
    CapacityOut,
    ExperimentOut,
    ExperimentPage,
    PresetSubmission,
    SubmitOut,
)
from service.settings import Settings
from service.specs import (
    PreparedSpec,
    Quotas,
    field_errors,
    parse_body,
    prepare,
    prepare_preset,
)
from service.views import experiment_out, links_for
from sweeps.specs.lifecycle import ExperimentStatus

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

Svc = Annotated[ExperimentService, Depends(get_service)]
Conf = Annotated[Settings, Depends(get_settings)]
Results = Annotated[ResultsView, Depends(get_results)]


def _parse_submission(raw: bytes, settings: Settings) -> PreparedSpec:
    body = parse_body(raw, settings.max_body_bytes, settings.max_json_depth)
    quotas = Quotas.from_settings(settings)
    if "preset" in body:
        try:
            sub = PresetSubmission.model_validate(body, strict=True)
        except ValidationError as e:
            fields = field_errors(e)
            raise SpecValidationError(
                "invalid preset submission: "
                + "; ".join(f"{f.field}: {f.message}" for f in fields),
                fields,
            ) from None
        return prepare_preset(presets.find(sub.preset), sub.preset, sub.overrides, quotas)
    return prepare(body, quotas)


_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ExperimentSpec"},
                        {"$ref": "#/components/schemas/PresetSubmission"},
                    ]
                }
            }
        },
    }
}


@router.post(
    "", status_code=202, response_model=SubmitOut, responses=ERRORS, openapi_extra=_SUBMIT_BODY
)
async def submit_experiment(
    request: Request,
    svc: Svc,
    settings: Conf,
    submitter: Annotated[str, Depends(require_token)],
    idempotency_key: Annotated[
        str | None, Header(max_length=200, description="retries with one key get one experiment")
    ] = None,
) -> JSONResponse:
    """Validate a spec (or a preset + overrides), check quotas, and submit it as a Ray job."""
    raw = await request.body()
    prepared = await run_in_threadpool(_parse_submission, raw, settings)
    placement = await run_in_threadpool(svc.check_feasible, prepared)
    exp, created = await run_in_threadpool(svc.submit, prepared, submitter, idempotency_key)
    capacity = CapacityOut(
        checked=placement.checked,
        waits_for_autoscaler=list(placement.waits_for),
        detail=placement.detail,
    )
    out = SubmitOut(
        id=exp.id,
        status=exp.status,
        created=created,
        links=links_for(exp, settings.public_url, svc.runner.dashboard_url),
        capacity=capacity if created else None,
    )
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=202 if created else 200,
        headers={"Location": out.links.status},
    )


@router.get("", response_model=ExperimentPage, responses=ERRORS)
def list_experiments(
    svc: Svc,
    settings: Conf,
    status: Annotated[ExperimentStatus | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> ExperimentPage:
    """Newest first, filtered by exact status and name substring (registry data only)."""
    rows, total = svc.query(status, name, limit, offset)
    nxt = None
    if offset + len(rows) < total:
        q = [f"limit={limit}", f"offset={offset + limit}"]
        if status:
            q.append(f"status={status}")
        if name:
            from urllib.parse import quote

            q.append(f"name={quote(name)}")
        nxt = "/v1/experiments?" + "&".join(q)
    items = [experiment_out(r, svc, settings, with_progress=False) for r in rows]
    return ExperimentPage(items=items, total=total, limit=limit, offset=offset, next=nxt)


@router.get("/{exp_id}", response_model=ExperimentOut, responses=ERRORS)
def get_experiment(exp_id: ExpId, svc: Svc, settings: Conf) -> Response:
    """Status from the Ray job, trial counts by state and the best metric so far."""
    exp, state = svc.refresh(exp_id)
    # Serialised here: the model was built and validated once in `experiment_out`; FastAPI would
    # validate it again against response_model (which still documents the schema).
    return Response(
        experiment_out(exp, svc, settings, state).model_dump_json(), media_type="application/json"
    )


@router.post("/{exp_id}/cancel", response_model=ExperimentOut, responses=ERRORS)
def cancel_experiment(
    exp_id: ExpId, svc: Svc, settings: Conf, _: Annotated[str, Depends(require_token)]
) -> ExperimentOut:
    """Stop the Ray job; unfinished trials end ``cancelled``; stored results are kept."""
    exp = svc.cancel(exp_id)
    return experiment_out(exp, svc, settings)


@router.get(
    "/{exp_id}/results",
    responses=ERRORS
    | {
        200: {
            "content": {
                "application/json": {},
                "text/csv": {},
                "application/vnd.apache.parquet": {},
            }
        }
    },
)
def get_results_table(
    exp_id: ExpId,
    svc: Svc,
    results: Results,
    format: Annotated[Literal["json", "csv", "parquet"], Query()] = "json",
) -> Response:
    """One row per reported result, trial parameters joined (json, csv or parquet)."""
    svc.get(exp_id)
    table = results.table(exp_id)
    if format == "json":
        return JSONResponse({"experiment_id": exp_id, "rows": table_records(table)})
    data, media = table_bytes(table, format)
    ext = "parquet" if format == "parquet" else "csv"
    return Response(
        data,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{exp_id}.{ext}"'},
    )


@router.get("/{exp_id}/summary", responses=ERRORS)
def get_summary(exp_id: ExpId, svc: Svc, results: Results) -> JSONResponse:
    """Per grid cell: mean, spread and count of the metrics across seeds."""
    svc.get(exp_id)
    return JSONResponse({"experiment_id": exp_id, "rows": table_records(results.summary(exp_id))})


@router.get("/{exp_id}/charts", responses=ERRORS)
def get_charts(exp_id: ExpId, svc: Svc, results: Results) -> JSONResponse:
    """What the results page draws, as JSON (`sweeps.reporting.charts`): the phase diagram's cells
    (mean and std over seeds of the metric and its train-rule twin, running trials with their latest
    report), the heat map where two axes vary, a threshold search's estimate and interval,
    each trial's learning curve, and every trial's state, error and reuse source."""
    svc.get(exp_id)
    return JSONResponse({"experiment_id": exp_id, **results.charts(exp_id)})


@router.get(
    "/{exp_id}/plot.png",
    responses=ERRORS | {200: {"content": {"image/png": {}}}},
    response_class=Response,
)
def get_plot(exp_id: ExpId, svc: Svc, results: Results) -> Response:
    """The phase diagram of the experiment's headline metric."""
    svc.get(exp_id)
    return Response(results.plot_png(exp_id), media_type="image/png")
