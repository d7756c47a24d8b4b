"""Exceptions raised by the data package.

The tree is small on purpose::

    DataError(Exception)            anything the data package refuses to do
    ├── SpecError(DataError)        an impossible or contradictory DataSpec; names field and rule
    └── DatasetMismatchError(DataError)
                                    a saved dataset belongs to another spec or generator version

Pydantic's own ``ValidationError`` never escapes this package: building a spec with bad values
raises :class:`SpecError`, whose ``fields`` lists the offending field paths (``"test.n_test"``).
"""

from __future__ import annotations

from typing import Any


class DataError(Exception):
    """Base class of every error raised by ``data``."""


class SpecError(DataError, ValueError):
    """A spec that cannot be generated; the message names the field and the rule broken.

    Example: ``SpecError("occurrences: occurrences=20 needs len(z) >= 20*20 = 400 ...")``.
    It is a ``ValueError`` too, so a spec nested in another pydantic model reports its own
    field paths through the outer model.
    """

    def __init__(
        self,
        message: str,
        fields: tuple[str, ...] = (),
        details: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.fields = fields
        #: (field path, rule) for every problem found.
        self.details = details or tuple((f, message) for f in fields)

    @classmethod
    def from_validation(cls, model: str, errors: list[Any]) -> SpecError:
        """Turn pydantic's error list into one readable SpecError."""
        details = [(path, msg) for path, msg, _ in error_details(errors)]
        return cls(
            f"invalid {model}: " + format_details(details),
            tuple(f for f, _ in details),
            tuple(details),
        )


class DatasetMismatchError(DataError):
    """A dataset on disk does not belong to the requested spec or to this generator version."""


class FieldRuleError(ValueError):
    """Raised inside a model validator so that the error names its field: pydantic locates a
    model-level rule at the model, so the field travels in the exception (`error_details`).

    ``raise FieldRuleError("seeds", "must be distinct, got [0, 0]")``
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def error_details(errors: list[Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted field path, message, pydantic error type)`` for each of pydantic's errors.

    The one reader of validation errors in the project (data, trainer, sweeps and the service
    format through it): a model-level rule names its field in a `FieldRuleError`, and a nested
    spec that validated itself lists its own ``(path, rule)`` pairs in ``SpecError.details``;
    both are joined onto pydantic's location. ``prefix`` is where the model sits (``"data"``).
    """
    out: list[tuple[str, str, str]] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        base = [prefix] if prefix else []
        kind = str(err.get("type", "value_error"))
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError) and inner.details:
            out += [
                (".".join([*base, *loc, *([f] if f else [])]), str(m), kind)
                for f, m in inner.details
            ]
            continue
        if isinstance(inner, FieldRuleError) and (not loc or loc[-1] != inner.field):
            loc.append(inner.field)
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        out.append((".".join(base + loc), msg, kind))
    return out


def format_details(details: list[tuple[str, str]] | list[tuple[str, str, str]]) -> str:
    """``path: message; path: message`` (a message without a path stands alone)."""
    return "; ".join(f"{d[0]}: {d[1]}" if d[0] else d[1] for d in details)
