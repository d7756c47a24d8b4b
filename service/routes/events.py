"""``GET /v1/experiments/{id}/events``: Server-Sent Events of stored results.

Each stored metric row is one ``result`` event whose ``id`` is its ``seq``; a client that
reconnects with ``Last-Event-ID: 17`` gets rows 18, 19, ... and nothing twice. When the
experiment reaches a terminal status and every row has been sent, one ``status`` event carries
the final experiment (same JSON as ``GET /v1/experiments/{id}``) and the stream ends::

    id: 1
    event: result
    data: {"seq": 1, "trial_id": "t0", "time": 1763930000.1, "metrics": {"test_acc": 0.4, ...}}

    event: status
    data: {"id": "x0123456789abcdef", "status": "complete", ...}

Comment lines (``: keep-alive``) are sent while nothing happens, so proxies keep the
connection open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.deps import get_results, get_service, get_settings
from service.experiments import ExperimentService
from service.results import ResultsView
from service.routes.params import ERRORS, ExpId
from service.settings import Settings
from service.views import experiment_out

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

BATCH = 500


def _last_seq(header: str | None, query: int | None) -> int:
    """Resume point: the Last-Event-ID header (what browsers send), else ?since=, else 0."""
    if header is not None and header.strip().isdigit():
        return int(header.strip())
    return query or 0


@router.get(
    "/{exp_id}/events",
    responses=ERRORS | {200: {"content": {"text/event-stream": {}}}},
    response_class=StreamingResponse,
)
async def experiment_events(
    exp_id: ExpId,
    request: Request,
    svc: Annotated[ExperimentService, Depends(get_service)],
    results: Annotated[ResultsView, Depends(get_results)],
    settings: Annotated[Settings, Depends(get_settings)],
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    since: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> StreamingResponse:
    """Stream every stored result after ``Last-Event-ID``, then the final status."""
    await run_in_threadpool(svc.get, exp_id)  # 404 before the stream starts
    start = _last_seq(last_event_id, since)

    async def stream() -> AsyncIterator[str]:
        last = start
        last_sent = time.monotonic()
        yield "retry: 2000\n\n"
        while True:
            if await request.is_disconnected():
                return
            batch = await run_in_threadpool(results.events, exp_id, last, BATCH)
            for ev in batch:
                last = ev.seq
                yield f"id: {ev.seq}\nevent: result\ndata: {ev.as_json()}\n\n"
            if batch:
                last_sent = time.monotonic()
                if len(batch) == BATCH:
                    continue
            exp, state = await run_in_threadpool(svc.refresh, exp_id)
            if exp.is_terminal:
                # Rows written between the read above and the job ending come first.
                tail = await run_in_threadpool(results.events, exp_id, last, 10**9)
                for ev in tail:
                    last = ev.seq
                    yield f"id: {ev.seq}\nevent: result\ndata: {ev.as_json()}\n\n"
                out = await run_in_threadpool(experiment_out, exp, svc, settings, state)
                yield f"event: status\ndata: {out.model_dump_json()}\n\n"
                return
            if time.monotonic() - last_sent > settings.sse_keepalive_s:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(settings.sse_poll_s)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
