"""Path parameters and error responses shared by the routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from service.registry import ID_PATTERN
from service.schemas import ErrorOut

#: An experiment id in a path: checked against the registry's pattern before any lookup, so an
#: id like ``../../etc`` is a 422, never a file access.
ExpId = Annotated[
    str, Path(pattern=ID_PATTERN, description="experiment id, e.g. x0123456789abcdef")
]
#: The error responses every experiment route documents (all share `ErrorOut`'s shape).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}
