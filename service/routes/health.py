"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.deps import get_results, get_runner
from service.jobs import JobRunner
from service.results import ResultsView
from service.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """The process answers."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def readyz(
    runner: Annotated[JobRunner, Depends(get_runner)],
    results: Annotated[ResultsView, Depends(get_results)],
) -> JSONResponse:
    """Ready when the Ray Jobs API answers and the results store is writable (else 503)."""
    checks = {"ray": "ok" if runner.ping() else "unreachable"}
    try:
        results.check_writable()
        checks["store"] = "ok"
    except Exception as e:  # reported, not raised: readiness is a report
        checks["store"] = f"not writable: {e}"
    ok = all(v == "ok" for v in checks.values())
    body = HealthOut(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
