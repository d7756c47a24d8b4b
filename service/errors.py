"""Exceptions raised by the service package, each mapped to one HTTP status.

The tree::

    ServiceError(Exception)              anything the service refuses to do
    ├── BadRequestError        400       the body is not JSON, or not a JSON object
    ├── AuthMissingError       401       no (or a malformed) ``Authorization: Bearer`` header
    ├── AuthForbiddenError     403       a bearer token that is not configured
    ├── NotFoundError          404       no experiment / preset with that id or name
    ├── ConflictError          409       an Idempotency-Key reused for another spec; a finished
    │                                    experiment cannot be cancelled; too many running
    ├── PayloadTooLargeError   413       the body, or the experiment, is over a configured quota
    ├── SpecValidationError    422       the spec breaks a rule; ``fields`` name the paths
    └── BackendError           503       Ray or the results store cannot be reached

Messages name the value and the rule, e.g.
``"n_trials=4096 is over the quota max_trials=256"``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One broken rule at one field path, e.g. ``FieldError("data.noop_fraction", "...")``."""

    field: str
    message: str
    type: str = "value_error"


class ServiceError(Exception):
    """Base class; ``status`` is the HTTP status and ``code`` a stable machine-readable name."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields: list[FieldError] = list(fields or [])


class BadRequestError(ServiceError):
    status, code = 400, "bad_request"


class AuthMissingError(ServiceError):
    status, code = 401, "unauthorized"


class AuthForbiddenError(ServiceError):
    status, code = 403, "forbidden"


class NotFoundError(ServiceError):
    status, code = 404, "not_found"


class ConflictError(ServiceError):
    status, code = 409, "conflict"


class PayloadTooLargeError(ServiceError):
    status, code = 413, "too_large"


class SpecValidationError(ServiceError):
    status, code = 422, "validation_error"


class BackendError(ServiceError):
    status, code = 503, "backend_unavailable"
