"""From a spec's pieces to its trials: dotted field paths, the budget coupling, the seeds, and
each trial's identity (`TrialPlan.trial_key`).

This module does not know `ExperimentSpec`: the spec hands it a `TrialBase` (the base configs,
the budget and the seed fields) and, for a grid, each axis's settings. `ExperimentSpec.trials`
and `ExperimentSpec.plan` call `grid_plans` and `resolve`; the spec's validator calls
`check_path` on every path it names and builds every trial once, so a bad combination fails
when the spec is loaded, not in the middle of a sweep. Example::

    resolve(spec.trial_base, {"data.n_instructions": 100}, seed=0, where="params").params
    # {'data.n_instructions': 100, 'data.examples_per_instruction': 10, 'seed': 0}
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from data.errors import FieldRuleError, error_details, format_details
from data.spec import DataSpec, canonical_json
from sweeps.codeversion import code_version
from trainer.config import TrainConfig

#: The parts of a spec an axis may reach into, with the model each part is validated by.
PARTS: dict[str, type[BaseModel]] = {"data": DataSpec, "train": TrainConfig}


def sha256_json(obj: Any) -> str:
    """sha256 hex of `canonical_json(obj)`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


@dataclass(frozen=True)
class TrialPlan:
    """One fully resolved trial: the varied values and the typed configs they produce.

    ``trial_key`` is the trial's identity: sha256 of its data spec, train config (both carry the
    seed) and `sweeps.codeversion.code_version`. Two trials with the same key give the same
    numbers, so a stored complete result with that key can stand in for running it.
    """

    trial_key: str
    params: dict[str, Any]
    data: DataSpec
    train: TrainConfig
    seed: int
    cell: dict[str, Any] = field(default_factory=dict)  # params without the seed
    #: The GPU share Ray granted the trial (0 < share < 1: the trainer caps its CUDA memory at
    #: it). Set by the trainable at run time; not part of the trial's identity.
    gpu_share: float | None = None


class Budget(BaseModel):
    """Fixed total examples: ``examples_field = total_examples // instructions_field``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    total_examples: int = Field(ge=1)
    instructions_field: str = "data.n_instructions"
    examples_field: str = "data.examples_per_instruction"


@dataclass(frozen=True)
class TrialBase:
    """What every trial of a spec starts from: the base configs, the spec's `Budget` (if any)
    and the field paths each replicate seed sets (`ExperimentSpec.trial_base`)."""

    data: DataSpec
    train: TrainConfig
    budget: Budget | None
    seed_fields: tuple[str, ...]


def grid_plans(
    base: TrialBase,
    axes: Sequence[Sequence[Mapping[str, Any]]],
    seeds: Sequence[int],
    strict: bool = False,
) -> list[TrialPlan]:
    """Every grid cell x seed (first axis slowest, seeds fastest), each validated; ``axes``
    holds each axis's settings (`Axis.settings`)."""
    per_axis = [list(enumerate(settings)) for settings in axes]
    plans = []
    for combo in itertools.product(*per_axis):
        overrides: dict[str, Any] = {}
        where = []
        for axis_i, (value_i, setting) in enumerate(combo):
            overrides.update(setting)
            where.append(f"axes.{axis_i}.values.{value_i}")
        for seed in seeds:
            plans.append(resolve(base, overrides, seed, ", ".join(where) or "data/train", strict))
    return plans


def resolve(
    base: TrialBase,
    overrides: Mapping[str, Any],
    seed: int,
    where: str,
    strict: bool = False,
) -> TrialPlan:
    """The trial from ``base`` with field-path ``overrides`` and replicate ``seed``: the budget
    coupling applied, the seed set in every seed field, both parts validated; errors start with
    ``where`` (``axes.0.values.1``) and the cell's values."""
    values = dict(overrides)
    budget = base.budget
    if budget is not None and budget.examples_field not in values:
        n_inst = values.get(budget.instructions_field, get_path(base, budget.instructions_field))
        per = budget.total_examples // int(n_inst)
        if per < 1:
            raise at(
                where,
                f"budget.total_examples={budget.total_examples} is smaller than "
                f"{budget.instructions_field}={n_inst}",
            )
        values[budget.examples_field] = per
    cell = dict(values)
    for path in base.seed_fields:
        values[path] = seed
    parts: dict[str, Any] = {}
    for part, model in PARTS.items():
        dumped = getattr(base, part).model_dump(mode="json")
        mine = {p: v for p, v in values.items() if p.split(".", 1)[0] == part}
        budget_fields = {"data.n_examples", "data.examples_per_instruction"}
        if part == "data" and budget_fields & mine.keys():
            # The data budget is one of two fields; setting one clears the other.
            for k in ("n_examples", "examples_per_instruction"):
                dumped[k] = None
        for path, v in mine.items():
            set_path(dumped, path.split(".")[1:], v)
        try:
            parts[part] = _validate(model, dumped, strict)
        except ValidationError as e:
            shown = ", ".join(f"{p}={v!r}" for p, v in cell.items()) or f"seed={seed}"
            why = format_details(error_details(e.errors(), part))
            raise at(where, f"{shown}: {why}") from None
        except ValueError as e:  # the data/trainer packages raise their own ValueErrors
            shown = ", ".join(f"{p}={v!r}" for p, v in cell.items()) or f"seed={seed}"
            raise at(where, f"{shown}: {part}: {e}") from None
    # A trial is its configs (the seed is in them) plus the code that turns them into numbers.
    key = sha256_json(
        {**{p: parts[p].model_dump(mode="json") for p in PARTS}, "code_version": code_version()}
    )
    params = {**cell, "seed": seed}
    return TrialPlan(key, params, parts["data"], parts["train"], seed, cell)


def _validate(model: type[BaseModel], obj: dict[str, Any], strict: bool = False) -> Any:
    # Go through pydantic's plain validator so nested errors keep their locations, whatever the
    # model's own `model_validate` wrapper raises.
    if strict:
        # JSON in, JSON rules: arrays are tuples, but booleans, strings and 2.0 are not integers
        # (NaN and infinity pass through as JSON tokens and are refused by the field itself).
        return model.__pydantic_validator__.validate_json(json.dumps(obj), strict=True)
    return model.__pydantic_validator__.validate_python(obj)


def as_axis_value(v: float, integer: bool) -> float | int:
    return round(v) if integer else v


def at(where: str, message: str) -> ValueError:
    """The error of a rule broken at ``where``: a `FieldRuleError` naming it when it is one
    field path (``axes.0.values.1``, ``search.low``), else a ValueError that says where
    (``axes.0.values.1, axes.1.values.0``: a cell of two axes)."""
    if all(part.isidentifier() or part.isdigit() for part in where.split(".")):
        return FieldRuleError(where, message)
    return ValueError(f"{where}: {message}")


def check_path(where: str, path: str) -> None:
    """Raise if ``path`` (``data.x.y``) does not name a field of the data spec or train config."""
    part, _, rest = path.partition(".")
    model: Any = PARTS.get(part)
    if model is None or not rest:
        raise at(where, f"{path!r} must start with 'data.' or 'train.' and name a field")
    parent = part
    for name in rest.split("."):
        if model is None:
            raise at(where, f"unknown field {path!r}; {parent!r} is not a nested spec")
        fields = model.model_fields
        if name not in fields:
            raise at(
                where, f"unknown field {path!r}; {model.__name__} has {', '.join(sorted(fields))}"
            )
        model = _model_of(fields[name].annotation)
        parent = f"{parent}.{name}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``Model | None`` included), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def get_path(obj: Any, path: str) -> Any:
    """The value at dotted ``path`` (``data.n_instructions``) of ``obj`` (a spec, a `TrialBase`)."""
    cur: Any = obj
    for name in path.split("."):
        cur = getattr(cur, name)
    return cur


def set_path(obj: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``obj[parts[0]][parts[1]]... = value``, creating mappings on the way."""
    cur = obj
    for name in parts[:-1]:
        if cur.get(name) is None:
            cur[name] = {}
        cur = cur[name]
    cur[parts[-1]] = value
