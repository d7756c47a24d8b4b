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
        details: list[tuple[str, str]] = []
        for err in errors:
            ctx = err.get("ctx") or {}
            inner = ctx.get("error")
            loc = ".".join(str(p) for p in err.get("loc", ()))
            if isinstance(inner, SpecError):
                # A nested spec validated itself: prefix its field paths with where it sits.
                details += [(".".join(p for p in (loc, f) if p), m) for f, m in inner.details]
            elif isinstance(inner, FieldRuleError):
                # A model-level rule: the field lives in the exception, not in pydantic's loc.
                details.append((".".join(p for p in (loc, inner.field) if p), str(inner)))
            else:
                details.append((loc, str(err.get("msg", "")).removeprefix("Value error, ")))
        lines = [f"{f}: {m}" if f else m for f, m in details]
        return cls(
            f"invalid {model}: " + "; ".join(lines),
            tuple(f for f, _ in details),
            tuple(details),
        )


class DatasetMismatchError(DataError):
    """A dataset on disk does not belong to the requested spec or to this generator version."""


class FieldRuleError(ValueError):
    """Raised inside validators so the resulting SpecError can name the field (internal)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
