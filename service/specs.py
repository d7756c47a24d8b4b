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

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from data.errors import error_details
from service.errors import (
    BadRequestError,
    FieldError,
    NotFoundError,
    PayloadTooLargeError,
    SpecValidationError,
)
from sweeps.specs.limits import SizeError, TrialSizes, bounding_plans, path_values, trial_sizes
from sweeps.specs.spec import STRICT_CONTEXT, ExperimentSpec, TrialPlan
from sweeps.specs.tracking import missing as missing_trackers
from trainer.builtin import is_builtin

log = logging.getLogger(__name__)

SERVICE_FIELDS = ("store", "data_cache_dir")


@dataclass(frozen=True)
class Quotas:
    """What one submission may ask for (None: no limit). `Quotas.from_settings` reads the
    service's configuration; ``model_roots`` confines submitted paths (see `check_paths`)."""

    max_trials: int
    max_examples: int
    max_test_examples: int | None = None
    max_seq_len: int | None = None
    max_params: int | None = None
    max_layers: int | None = None
    model_roots: tuple[Path, ...] | None = None  # None: any path (the operator's own tools)

    @classmethod
    def from_settings(cls, settings: Any) -> Quotas:
        return cls(
            settings.max_trials,
            settings.max_examples,
            settings.max_test_examples,
            settings.max_seq_len,
            settings.max_params,
            settings.max_layers,
            tuple(settings.model_roots),
        )


@dataclass(frozen=True)
class PreparedSpec:
    """A spec ready to submit: canonical JSON plus what the registry and quotas need."""

    spec: ExperimentSpec
    spec_json: str
    spec_hash: str
    n_trials: int
    max_examples: int
    sizes: TrialSizes | None = None

    @property
    def name(self) -> str:
        return self.spec.name


def field_errors(e: ValidationError, prefix: str = "") -> list[FieldError]:
    """One :class:`FieldError` per pydantic error, with the dotted path (``data.noop_fraction``)
    as `data.errors.error_details` reads it (``body`` when the error names no field)."""
    return [
        FieldError(path or "body", msg, kind)
        for path, msg, kind in error_details(e.errors(), prefix)
    ]


def _validate(body: Mapping[str, Any], prefix: str = "") -> ExperimentSpec:
    for name in SERVICE_FIELDS:
        if body.get(name) is not None:
            path = f"{prefix}.{name}" if prefix else name
            raise SpecValidationError(
                f"{path}: is set by the service, leave it out",
                [FieldError(path, "is set by the service, leave it out", "forbidden")],
            )
    try:
        # Strict JSON rules for a submitted body (`sweeps.specs.spec.STRICT_CONTEXT`): `true` is not
        # 1, "3" is not 3, and NaN / infinity (Python's json reads them) are refused by name.
        return ExperimentSpec.model_validate_json(
            json.dumps(dict(body)), strict=True, context=STRICT_CONTEXT
        )
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
        plans = bounding_plans(spec)  # once: both checks below read every bounding trial
    except ValueError as e:
        raise SpecValidationError(str(e), [FieldError(prefix or "body", str(e))]) from None
    check_paths(spec, quotas.model_roots, plans)
    absent = missing_trackers(spec.tracking)
    if absent:
        raise SpecValidationError(
            "; ".join(f"{f}: {m}" for f, m in absent),
            [FieldError(f, m, "not_installed") for f, m in absent],
        )
    try:
        sizes = trial_sizes(spec, plans)
    except SizeError as e:
        raise SpecValidationError(str(e), [FieldError(e.field, e.message)]) from None
    except ValueError as e:
        raise SpecValidationError(str(e), [FieldError(prefix or "body", str(e))]) from None
    check_sizes(sizes, quotas)
    return PreparedSpec(spec, spec.spec_json, spec.spec_hash, n_trials, sizes.n_train, sizes)


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


# ---------------------------------------------------------------------------------------------
# before parsing, and after validation: the body's shape, the trial's sizes, submitted paths
# ---------------------------------------------------------------------------------------------
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in JSON text, counted without parsing it.

    Strings are blanked first (brackets inside them do not count), then the depth is a running
    sum of opening minus closing brackets: linear, in C, and safe on any input, which a
    recursive parser is not (``json.loads`` of 10**5 nested arrays raises ``RecursionError``).

    >>> json_depth(b'{"a": [1, {"b": "[[[["}]}')
    3
    """
    text = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    if text.size == 0:
        return 0
    step = np.isin(text, _OPEN).astype(np.int32) - np.isin(text, _CLOSE).astype(np.int32)
    return int(np.cumsum(step).max())


def parse_body(raw: bytes, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """A request body as a JSON object, or the 4xx that says why not (size, depth, syntax)."""
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(
            f"request body is {len(raw)} bytes, over max_body_bytes={max_bytes}",
            [FieldError("body", f"{len(raw)} bytes > max_body_bytes={max_bytes}", "quota")],
        )
    depth = json_depth(raw)
    if depth > max_depth:
        raise BadRequestError(
            f"request body nests arrays and objects {depth} deep, over max_json_depth={max_depth}",
            [
                FieldError(
                    "body", f"nesting depth {depth} > max_json_depth={max_depth}", "json_depth"
                )
            ],
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, 5000-digit ints
        raise BadRequestError(
            f"request body is not valid JSON: {e}",
            [FieldError("body", f"not valid JSON: {e}", "json_invalid")],
        ) from None
    if not isinstance(body, dict):
        raise BadRequestError(
            f"request body must be a JSON object, got {type(body).__name__}",
            [FieldError("body", "must be a JSON object", "json_type")],
        )
    return body


def _quota(
    field: str, what: str, value: int, name: str, limit: int | None, unit: str = ""
) -> PayloadTooLargeError | None:
    if limit is None or value <= limit:
        return None
    msg = f"{what} is {value:,}{unit}, over the quota {name}={limit:,}{unit}"
    return PayloadTooLargeError(msg, [FieldError(field, msg, "quota")])


def check_sizes(sizes: TrialSizes, quotas: Quotas) -> None:
    """Refuse (413, naming the field) a spec whose largest trial is over a quota."""
    checks = [
        (
            "data.n_train",
            "a trial's training set",
            sizes.n_train,
            "max_examples",
            quotas.max_examples,
        ),
        (
            "data.test.n_test",
            "a trial's test set",
            sizes.n_test,
            "max_test_examples",
            quotas.max_test_examples,
        ),
        (
            "data.z_len",
            "a trial's longest example (tokens)",
            sizes.seq_len,
            "max_seq_len",
            quotas.max_seq_len,
        ),
    ]
    if sizes.n_params is not None:
        checks.append(
            (
                "train.model",
                "a trial's model (parameters)",
                sizes.n_params,
                "max_params",
                quotas.max_params,
            )
        )
    if sizes.n_layer is not None:
        checks.append(
            (
                "train.n_layer",
                "a trial's model (layers)",
                sizes.n_layer,
                "max_layers",
                quotas.max_layers,
            )
        )
    for field, what, value, name, limit in checks:
        err = _quota(field, what, value, name, limit)
        if err is not None:
            raise err


def check_paths(
    spec: ExperimentSpec, roots: Sequence[Path] | None, plans: list[TrialPlan] | None = None
) -> None:
    """Refuse (422) any submitted path that is not under one of ``roots``.

    Every field marked as a path (`sweeps.specs.limits.path_values`, today ``train.init``) of every
    trial the spec can run is resolved (symlinks and ``..``) here and must lie inside a root,
    itself resolved. ``scratch`` and builtin models (``divsweep:<name>``) are not paths.
    ``roots=None`` allows any path (the operator's own tools).
    """
    if roots is None:
        return
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    for field, value in path_values(spec, plans):
        if value == "scratch" or is_builtin(value):
            continue
        real = Path(os.path.realpath(os.path.expanduser(value)))
        if any(real == r or r in real.parents for r in real_roots):
            continue
        allowed = (
            ", ".join(str(r) for r in real_roots)
            or "none configured: only builtin models (divsweep:<name>)"
        )
        msg = f"{value!r} is not under an allowed model directory (DIVSWEEP_MODEL_ROOTS: {allowed})"
        raise SpecValidationError(f"{field}: {msg}", [FieldError(field, msg, "path")])
