"""Path parameters and error responses shared by the routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from service.schemas import ErrorOut
from sweeps.store.base import ID_PATTERN

#: An experiment id in a path: checked against the results store's id rule before any lookup
#: (the service's own ids, ``x`` + 16 hex digits, and those of sweeps started outside it, e.g.
#: ``smoke-20260101T120000-1a2b``), so an id like ``../../etc`` is a 422, never a file access.
ExpId = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        max_length=128,
        description="experiment id, e.g. x0123456789abcdef or smoke-20260101T120000-1a2b",
    ),
]
#: The error responses every experiment route documents (all share `ErrorOut`'s shape).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}
