"""The FastAPI application factory.

``create_app(settings)`` wires the registry, the Ray job runner, the results view and the
routers; nothing connects to Ray or opens the store until the first request (or start-up
reconciliation) needs it. Tests pass fakes, or override the ``service.deps`` dependencies::

    app = create_app(Settings(state_dir=tmp, tokens={"alice": "s3cret-token"}))
    app = create_app(settings, runner=FakeRunner(), results=FakeResults())
    uvicorn.run(app, host=settings.host, port=settings.port)

Every error answers with the same JSON body (:class:`service.schemas.ErrorOut`)::

    {"error": "validation_error", "detail": "invalid experiment spec: data.noop_fraction: ...",
     "fields": [{"field": "data.noop_fraction", "message": "...", "type": "less_than_equal"}]}
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.capacity import NodeTypes
from service.errors import BackendError, FieldError, ServiceError
from service.experiments import ExperimentService
from service.jobs import JobRunner, JobState, RayJobRunner
from service.registry import Registry
from service.results import ResultsView, StoreResults
from service.routes import events, experiments, health, lifecycle, page, presets
from service.schemas import PresetSubmission
from service.settings import Settings
from service.waiting import Stalls
from sweeps.errors import UnknownExperimentError
from sweeps.specs.spec import ExperimentSpec

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_error",
}


def error_response(
    status: int,
    code: str,
    detail: str,
    fields: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The uniform error body."""
    body = {
        "error": code,
        "detail": detail,
        "fields": [{"field": f.field, "message": f.message, "type": f.type} for f in fields or []],
    }
    return JSONResponse(body, status_code=status, headers=headers)


class NoCluster:
    """The runner used when no Ray dashboard is configured: every call is a clear 503."""

    dashboard_url = None

    def _fail(self) -> BackendError:
        return BackendError(
            "no Ray cluster configured: set DIVSWEEP_DASHBOARD_URL "
            "or start the service with `divsweep serve`"
        )

    def submit(self, exp_id: str, spec_json: str) -> str:
        raise self._fail()

    def status(self, job_id: str) -> JobState:
        raise self._fail()

    def stop(self, job_id: str) -> None:
        raise self._fail()

    def ping(self) -> bool:
        return False

    def nodes(self) -> list[dict[str, float]] | None:
        return None

    def cluster_status(self) -> dict[str, Any] | None:
        return None


def _default_runner(settings: Settings) -> JobRunner:
    if not settings.dashboard_url:
        return NoCluster()
    return RayJobRunner(
        settings.dashboard_url,
        settings.jobs_dir,
        settings.store_uri,
        python=settings.job_python,
        ship_packages=settings.ship_packages,
        token=settings.ray_token,
        driver_cpus=settings.driver_cpus,
    )


def _loc_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, rest = parts[0], parts[1:]
        return ".".join(rest) if where == "body" and rest else ".".join([where, *rest])
    return ".".join(parts)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.fields, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "bad_request", "request body is not valid JSON")
        fields = [
            FieldError(_loc_path(e.get("loc", ())), str(e.get("msg", "")), str(e.get("type", "")))
            for e in errors
        ]
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields)
        return error_response(422, "validation_error", detail, fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Store lookups of unknown experiments surface as KeyError subclasses from sweeps.
        if isinstance(exc, UnknownExperimentError):
            return error_response(404, "not_found", str(exc))
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


def _custom_openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the submission body's models (ExperimentSpec, PresetSubmission),
    which the submit route reads by hand so that it can tell a preset from a spec."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ExperimentSpec, PresetSubmission):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(js.pop("$defs", {}))
        components[model.__name__] = js
    app.openapi_schema = schema
    return schema


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    runner: JobRunner | None = None,
    results: ResultsView | None = None,
    reconcile_on_start: bool = True,
) -> FastAPI:
    """Build the app; collaborators default to the real ones named by ``settings``."""
    registry = registry or Registry(settings.registry_url)
    runner = runner or _default_runner(settings)
    results = results or StoreResults(settings.store_uri)
    resubmits: dict[str, int] = {}  # per process: how often each lost job was resubmitted
    stalls = Stalls()  # per process: since when each experiment has had no running trial
    node_types = NodeTypes(settings.node_types, settings.cluster_config)
    service = ExperimentService(
        registry,
        runner,
        results,
        settings.max_concurrent,
        node_types=node_types,
        resubmits=resubmits,
        stalls=stalls,
        wait_s=settings.resource_wait_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if reconcile_on_start:
            changed = await run_in_threadpool(service.reconcile)
            log.info("start-up reconciliation: %d experiment(s) changed", changed)
        yield
        registry.close()

    app = FastAPI(
        title="divsweep",
        version="0.1.0",
        description="Submit instruction-diversity sweeps to Ray, watch them, fetch results.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.runner = runner
    app.state.results = results
    app.state.resubmits = resubmits
    app.state.stalls = stalls
    app.state.node_types = node_types
    app.state.service = service
    _install_handlers(app)
    for module in (experiments, events, presets, health, lifecycle, page):
        app.include_router(module.router)
    app.openapi = lambda: _custom_openapi(app)  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """``uvicorn --factory service.app:app_from_env``: settings from ``DIVSWEEP_*`` variables."""
    return create_app(Settings())


__all__ = ["app_from_env", "create_app", "error_response"]
