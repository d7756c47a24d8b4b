"""Turning a submission body into a validated, quota-checked experiment spec.

A body is either a full ``sweeps.ExperimentSpec`` as JSON or ``{"preset": NAME, "overrides":
{...}}`` (overrides are merged into the preset's spec, nested dicts key by key). Every problem
becomes a :class:`service.errors.FieldError` whose ``field`` is the dotted path into the body::

    >>> prepare({"name": "t", "data": {"noop_fraction": 2}, "train": {}}, quotas)
    SpecValidationError: data.noop_fraction: Input should be less than or equal to 1

Quotas are checked after validation: ``n_trials`` (the spec's own upper bound) against
``max_trials`` and the largest per-trial training set against ``max_examples``.

Two spec fields are the service's, not the submitter's: ``store`` (jobs write where the service
reads) and ``data_cache_dir`` (a path on the cluster). A body that sets either is refused; the
service fills them in itself.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from service.errors import FieldError, NotFoundError, PayloadTooLargeError, SpecValidationError
from sweeps.spec import ExperimentSpec, OptunaSearch, ThresholdSearch

log = logging.getLogger(__name__)

SERVICE_FIELDS = ("store", "data_cache_dir")
_LEADING_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): (.*)$", re.S)


@dataclass(frozen=True)
class Quotas:
    max_trials: int
    max_examples: int


@dataclass(frozen=True)
class PreparedSpec:
    """A spec ready to submit: canonical JSON plus what the registry and quotas need."""

    spec: ExperimentSpec
    spec_json: str
    spec_hash: str
    n_trials: int
    max_examples: int

    @property
    def name(self) -> str:
        return self.spec.name


def field_errors(e: ValidationError, prefix: str = "") -> list[FieldError]:
    """One :class:`FieldError` per pydantic error, with the dotted path (``data.noop_fraction``).

    Rule errors raised inside a model validator carry their own field (``ctx.error.field``),
    which is appended to the location so the path points at the field, not the model.
    """
    out = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        inner = (err.get("ctx") or {}).get("error")
        details = getattr(inner, "details", None)
        if details:
            # A nested spec (data.DataSpec) validated itself and lists (path, rule) pairs.
            for path, msg in details:
                full = ".".join([*([prefix] if prefix else []), *loc, *([path] if path else [])])
                out.append(FieldError(full, str(msg), str(err["type"])))
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        extra = getattr(inner, "field", None)
        if not extra and inner is not None:
            # trainer.ConfigError: "the message starts with the field name".
            m = _LEADING_FIELD.match(str(inner))
            if m:
                extra, msg = m.group(1), m.group(2)
        if extra and (not loc or loc[-1] != str(extra)):
            loc.append(str(extra))
        path = ".".join(([prefix] if prefix else []) + loc) or "body"
        out.append(FieldError(path, msg, str(err["type"])))
    return out


def _validate(body: Mapping[str, Any], prefix: str = "") -> ExperimentSpec:
    for name in SERVICE_FIELDS:
        if body.get(name) is not None:
            path = f"{prefix}.{name}" if prefix else name
            raise SpecValidationError(
                f"{path}: is set by the service, leave it out",
                [FieldError(path, "is set by the service, leave it out", "forbidden")],
            )
    try:
        return ExperimentSpec.model_validate(dict(body))
    except ValidationError as e:
        fields = field_errors(e, prefix)
        raise SpecValidationError(
            "invalid experiment spec: " + "; ".join(f"{f.field}: {f.message}" for f in fields),
            fields,
        ) from None
    except ValueError as e:  # a data/trainer SpecError escaping a nested validator
        raise SpecValidationError(
            f"invalid experiment spec: {e}", [FieldError(prefix or "body", str(e))]
        ) from None


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: dicts merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def max_train_examples(spec: ExperimentSpec) -> int:
    """An upper bound on the training examples of any one trial.

    Grid: every planned trial. Threshold: both bracket ends. Optuna: every corner of the space
    (2**d plans, d capped at 8), which bounds the monotone budget fields.
    """
    plans = spec.trials()
    search = spec.search
    if isinstance(search, ThresholdSearch):
        for bound in (search.low, search.high):
            value = round(bound) if search.integer else bound
            plans.append(spec.plan({search.axis: value}))
    elif isinstance(search, OptunaSearch):
        dims = list(search.space.items())[:8]
        corners = [
            list(d.choices) if d.choices else [d.low, d.high] for _, d in dims
        ]
        for combo in itertools.product(*corners):
            params: dict[str, Any] = {}
            for (path, d), v in zip(dims, combo, strict=True):
                params[path] = round(v) if d.kind == "int" and isinstance(v, float) else v
            try:
                plans.append(spec.plan(params))
            except ValueError:
                # A corner the data engine rejects is never run either; it cannot bust a quota.
                continue
    return max(p.data.n_train for p in plans)


def grid_size_hint(body: Mapping[str, Any]) -> int:
    """The grid size a raw body asks for (axes x seeds), read before validation.

    Validating a spec builds every grid cell, so a body with two axes of 10**5 values would cost
    10**10 plans before the trial quota could refuse it; this cheap count lets it be refused
    first. Shapes it does not understand count as 1 and are left to the validator.
    """
    n = 1
    axes = body.get("axes")
    if isinstance(axes, list):
        for axis in axes:
            if not isinstance(axis, Mapping):
                continue
            values, rng = axis.get("values"), axis.get("range")
            if isinstance(values, list):
                n *= max(1, len(values))
            elif isinstance(rng, Mapping) and isinstance(rng.get("num"), int):
                n *= max(1, min(rng["num"], 10**12))
    seeds = body.get("seeds")
    if isinstance(seeds, list):
        n *= max(1, len(seeds))
    return n


def _over_trials(n_trials: int, quotas: Quotas) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"n_trials={n_trials} is over the quota max_trials={quotas.max_trials}",
        [FieldError("n_trials", f"{n_trials} > max_trials={quotas.max_trials}", "quota")],
    )


def prepare(body: Mapping[str, Any], quotas: Quotas, prefix: str = "") -> PreparedSpec:
    """Validate a full-spec body and check quotas."""
    hint = grid_size_hint(body)
    if hint > quotas.max_trials:
        raise _over_trials(hint, quotas)
    spec = _validate(body, prefix)
    n_trials = spec.n_trials
    if n_trials > quotas.max_trials:
        raise _over_trials(n_trials, quotas)
    try:
        n_examples = max_train_examples(spec)
    except ValueError as e:
        raise SpecValidationError(str(e), [FieldError(prefix or "body", str(e))]) from None
    if n_examples > quotas.max_examples:
        raise PayloadTooLargeError(
            f"a trial trains on {n_examples} examples, over the quota "
            f"max_examples={quotas.max_examples}",
            [FieldError("data.n_train", f"{n_examples} > max_examples={quotas.max_examples}",
                        "quota")],
        )
    return PreparedSpec(spec, spec.spec_json, spec.spec_hash, n_trials, n_examples)


def prepare_preset(
    preset: ExperimentSpec | None, name: str, overrides: Mapping[str, Any], quotas: Quotas
) -> PreparedSpec:
    """Apply ``overrides`` to a preset's spec (None: unknown preset -> 404) and check quotas."""
    if preset is None:
        raise NotFoundError(f"preset {name!r} does not exist; GET /v1/presets lists them")
    base = preset.model_dump(mode="json", exclude_none=False)
    for f in SERVICE_FIELDS:
        base.pop(f, None)
    return prepare(deep_merge(base, overrides), quotas, prefix="")
