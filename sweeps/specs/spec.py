"""`ExperimentSpec`: one diversity study, described once, validated once.

A spec embeds a base `data.DataSpec` and `trainer.TrainConfig`, then says what to vary and how to
search. Axes name any field of either by a dotted path; seeds are a replicate axis; a fixed example
budget couples ``examples_per_instruction = budget // n_instructions``. Worked example (the shape
of P1 Fig. 2a at toy scale)::

    >>> spec = ExperimentSpec.model_validate({
    ...     "name": "toy",
    ...     "data": {"n_instructions": 10, "examples_per_instruction": 10, "z_len": [4, 8],
    ...              "x_len": [2, 3], "y_len": [1, 2], "test": {"n_test": 100}},
    ...     "train": {"model": "nano", "epochs": 1},
    ...     "axes": [{"field": "data.n_instructions", "values": [10, 100]}],
    ...     "budget": {"total_examples": 1000},
    ...     "seeds": [0, 1],
    ... })
    >>> [(t.params["data.n_instructions"], t.params["data.examples_per_instruction"], t.seed)
    ...  for t in spec.trials()]
    [(10, 100, 0), (10, 100, 1), (100, 10, 0), (100, 10, 1)]
    >>> spec.n_trials
    4

Errors name the field path: a typo in an axis gives
``SpecError: axes.0.field: unknown field 'data.n_instrucions' ...``, and a value the data engine
rejects gives ``axes.0.values.1: data.n_instructions=0: n_instructions: ...``. `load_spec` turns
pydantic's `ValidationError` into a `SpecError` with one ``path: message`` line per problem.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from data.errors import FieldRuleError, error_details, format_details
from data.spec import DataSpec, canonical_json
from sweeps.errors import SpecError
from sweeps.specs.bisection import max_probes
from sweeps.specs.expand import (
    Budget,
    TrialBase,
    TrialPlan,
    as_axis_value,
    check_path,
    grid_plans,
    resolve,
)
from sweeps.specs.tracking import Tracking
from trainer.config import TrainConfig, fusable

# No NaN or infinity anywhere: no setting of a study means "not a number" or "unbounded".
_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
#: Validation context that asks for strict types everywhere, axis values included (the service
#: passes it with ``strict=True``: ``true`` is not 1 and ``"3"`` is not 3 in a submitted body;
#: hand-written YAML, where ``1e-3`` is a string to PyYAML, keeps pydantic's lax coercion).
STRICT_CONTEXT = {"strict": True}


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``1e-3`` is a float (YAML 1.2), not the string PyYAML 1.1
    makes of it: a spec's ``lr: 1e-3`` must mean the number it says, and the service validates
    submitted types strictly."""


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse YAML (or JSON) with `SpecLoader`: ``yaml_load("lr: 1e-3") == {"lr": 0.001}``."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------------------------
class LogRange(BaseModel):
    """``num`` points from ``start`` to ``stop`` (both included), log-spaced by default.

    ``LogRange(start=10, stop=1000, num=3)`` gives ``[10, 100, 1000]``.
    """

    model_config = _FROZEN

    start: float = Field(gt=0)
    stop: float = Field(gt=0)
    num: int = Field(ge=2)
    log: bool = True
    integer: bool = True

    def points(self) -> list[float | int]:
        """The values, rounded to distinct integers when ``integer``."""
        if self.log:
            a, b = math.log(self.start), math.log(self.stop)
            raw = [math.exp(a + (b - a) * i / (self.num - 1)) for i in range(self.num)]
        else:
            raw = [
                self.start + (self.stop - self.start) * i / (self.num - 1) for i in range(self.num)
            ]
        if not self.integer:
            return raw
        return list(dict.fromkeys(round(v) for v in raw))


class Axis(BaseModel):
    """One thing to vary: a field path and its values (or a `LogRange`).

    Without ``field`` each value is a mapping of field paths to values, set together (e.g. the
    semantic study's ``{"data.family.k": [3, 4], "data.test.family.k": [1, 2]}``).
    """

    model_config = _FROZEN

    field: str | None = None
    values: tuple[Any, ...] | None = None
    range: LogRange | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.values is None) == (self.range is None):
            raise ValueError("values/range: give exactly one of them")
        if self.values is not None and len(self.values) == 0:
            raise FieldRuleError("values", "must not be empty")
        if self.field is None:
            if self.range is not None:
                raise FieldRuleError("field", "required with range")
            for i, v in enumerate(self.values or ()):
                if not isinstance(v, Mapping) or not v:
                    raise ValueError(
                        f"values.{i}: without `field` every value must be a non-empty mapping "
                        f"of field paths to values, got {v!r}"
                    )
        return self

    @property
    def label(self) -> str:
        """How results and plots name this axis."""
        if self.name:
            return self.name
        if self.field:
            return self.field
        return "+".join(sorted({k for v in self.values or () for k in v}))

    def points(self) -> list[Any]:
        """The axis values in order."""
        return list(self.values) if self.values is not None else self.range.points()  # type: ignore[union-attr]

    def settings(self) -> list[dict[str, Any]]:
        """Each value as the field overrides it makes."""
        if self.field is None:
            return [dict(v) for v in self.points()]
        return [{self.field: v} for v in self.points()]

    def fields(self) -> list[str]:
        """Every field path this axis sets."""
        return [self.field] if self.field else sorted({k for v in self.values or () for k in v})


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------
class Objective(BaseModel):
    """The metric a search optimises and its direction."""

    model_config = _FROZEN

    metric: str = "test_acc"
    mode: Literal["max", "min"] = "max"


class Domain(BaseModel):
    """One dimension of an Optuna search space.

    ``{"kind": "loguniform", "low": 1e-4, "high": 1e-2}``, ``{"kind": "int", "low": 10,
    "high": 1000, "log": true}`` or ``{"kind": "choice", "choices": [64, 128]}``.
    """

    model_config = _FROZEN

    kind: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.kind == "choice":
            if not self.choices:
                raise FieldRuleError("choices", "kind='choice' needs a non-empty list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"low/high: kind={self.kind!r} needs both bounds")
        if not self.low < self.high:
            raise ValueError(f"low/high: need low < high, got low={self.low}, high={self.high}")
        if (self.kind == "loguniform" or self.log) and self.low <= 0:
            raise FieldRuleError("low", f"a log scale needs low > 0, got {self.low}")
        return self


class GridSearch(BaseModel):
    """Every combination of the axes, times every seed."""

    model_config = _FROZEN
    kind: Literal["grid"] = "grid"


class OptunaSearch(BaseModel):
    """Optuna (via `ray.tune.search.optuna.OptunaSearch`) over ``space``, ``n_trials`` trials."""

    model_config = _FROZEN

    kind: Literal["optuna"] = "optuna"
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    space: dict[str, Domain]
    objective: Objective = Objective()
    n_trials: int = Field(ge=1)
    sampler_seed: int | None = 0

    @model_validator(mode="after")
    def _space(self) -> Self:
        if not self.space:
            raise FieldRuleError("space", "must name at least one field")
        return self


class ThresholdSearch(BaseModel):
    """The smallest ``axis`` value whose mean ``metric`` over replicates reaches ``level``.

    Bisection on a log scale between ``low`` (assumed below) and ``high`` (assumed above); both ends
    are probed first. It stops when ``high / low <= resolution`` (integers: also when they are
    adjacent) and reports ``high``. E.g. ``axis="data.n_instructions", metric="test_acc_op",
    level=0.5, low=10, high=10000, resolution=1.25``.

    With ``max_replicates`` set, replicates are adaptive: a probed value whose seeds disagree
    (scores on both sides of ``level`` and a Student-t interval of their mean, at ``confidence``,
    that contains ``level``) gets one more seed per round until they agree or it has
    ``max_replicates`` seeds (see `sweeps.running.threshold`). E.g. ``replicates=2,
    max_replicates=6``.

    With ``over`` (an `Axis` with one ``field``), one independent bisection of ``axis`` runs for
    each of its values, all in one experiment: the phase boundary. E.g. ``axis=
    "data.n_instructions", over={"field": "data.n_examples", "values": [14000, 56000, 224000]}``
    finds the threshold in I at three budgets (each trial's params carry its ``data.n_examples``).
    """

    model_config = _FROZEN

    kind: Literal["threshold"] = "threshold"
    axis: str = "data.n_instructions"
    metric: str = "test_acc"
    level: float
    low: float = Field(gt=0)
    high: float = Field(gt=0)
    replicates: int = Field(1, ge=1)
    #: Adaptive replicates: the most seeds one value may get (None: always ``replicates``).
    max_replicates: int | None = Field(None, ge=1)
    #: Two-sided Student-t level that decides a value whose seeds disagree (adaptive mode).
    confidence: float = Field(0.9, gt=0, lt=1)
    resolution: float = Field(1.25, gt=1)
    integer: bool = True
    #: One bisection per value of this axis (a field path and its values), in one experiment.
    over: Axis | None = None

    @model_validator(mode="after")
    def _bracket(self) -> Self:
        if not self.low < self.high:
            raise ValueError(f"low/high: need low < high, got low={self.low}, high={self.high}")
        if self.max_replicates is not None:
            if self.max_replicates < self.replicates:
                raise FieldRuleError(
                    "max_replicates",
                    f"must be >= replicates={self.replicates}, got {self.max_replicates}",
                )
            if self.replicates < 2:
                raise FieldRuleError(
                    "replicates",
                    f"adaptive replicates (max_replicates="
                    f"{self.max_replicates}) need replicates >= 2, got "
                    f"{self.replicates}; one seed cannot disagree with itself",
                )
        if self.integer and not 1 <= round(self.low) < round(self.high):
            raise ValueError(
                f"low/high: an integer search needs 1 <= round(low) < round(high), "
                f"got low={self.low}, high={self.high}"
            )
        if self.over is not None:
            self._check_over(self.over)
        return self

    def _check_over(self, over: Axis) -> None:
        if over.field is None:
            raise FieldRuleError(
                "over.field", "required: each bisection runs at one value of one field"
            )
        if over.field == self.axis:
            raise FieldRuleError(
                "over.field", f"must differ from axis={self.axis!r}: it is the searched field"
            )
        points = over.points()
        if len(set(map(repr, points))) != len(points):
            raise FieldRuleError("over.values", f"must be distinct, got {points}")

    @property
    def groups(self) -> list[dict[str, Any]]:
        """The field overrides of each bisection: ``[{}]`` without ``over``, else one per value
        (``[{"data.n_examples": 14000}, {"data.n_examples": 56000}]``)."""
        return [{}] if self.over is None else self.over.settings()

    @property
    def replicate_cap(self) -> int:
        """The most replicates one probed value can get: ``max_replicates`` or ``replicates``."""
        return self.replicates if self.max_replicates is None else self.max_replicates

    @property
    def max_probes(self) -> int:
        """An upper bound on the probed values of one bisection
        (`sweeps.specs.bisection.max_probes`); every group of ``over`` has the same bracket."""
        return max_probes(self.low, self.high, self.resolution, self.integer)

    @property
    def max_trials(self) -> int:
        """An upper bound on the trials of the whole search: groups x probes x replicates."""
        return len(self.groups) * self.max_probes * self.replicate_cap


Search = Annotated[GridSearch | OptunaSearch | ThresholdSearch, Field(discriminator="kind")]


# --------------------------------------------------------------------------------------------
# scheduling and resources
# --------------------------------------------------------------------------------------------
class FifoScheduler(BaseModel):
    """Run every trial to the end."""

    model_config = _FROZEN
    kind: Literal["fifo"] = "fifo"


class AshaScheduler(BaseModel):
    """Asynchronous successive halving: stop trials that trail at a rung (reported as pruned)."""

    model_config = _FROZEN

    kind: Literal["asha"] = "asha"
    objective: Objective = Objective()
    time_attr: str = "training_iteration"
    max_t: int = Field(100, ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


Scheduler = Annotated[FifoScheduler | AshaScheduler, Field(discriminator="kind")]


#: The most trials one fused model trains (`Resources.fuse`).
MAX_FUSE = 64


class Resources(BaseModel):
    """Per trial: CPUs and a GPU share (0.25 lets four small trials share one GPU).

    ``gpu: auto`` sizes each trial's share (a fused group's: the group's) from a measured memory
    estimate (`sweeps.running.packing`): the smallest eighth of the cluster's smallest GPU that
    holds it with 25 % headroom, e.g. 0.125 for the ``tiny`` model on an 80 GB GPU, so eight
    such trials share one GPU. The GPUs' memory is read from the cluster (Ray's accelerator type
    of each node and node type); ``gpu_memory_gb`` overrides it. Each trial's trainer then caps
    its CUDA allocator at its share.
    """

    model_config = _FROZEN

    cpus: float = Field(1.0, gt=0)
    gpu: float | Literal["auto"] = 0.0
    #: Override, for ``gpu: auto``: take every GPU to have this much memory (80 for an H100).
    #: Unset: read from the cluster (each node's Ray accelerator type, `sweeps.running.cluster`).
    gpu_memory_gb: float | None = Field(None, gt=0)
    #: Train up to this many compatible trials as one fused model in one process
    #: (`sweeps.running.fusing`, `trainer.fused`): 1 turns fusing off, ``auto`` fuses as many as fit
    #: the GPU (``gpu: auto``) or 16. Unset: ``auto`` with ``gpu: auto``, otherwise off.
    fuse: int | Literal["auto"] | None = Field(None, json_schema_extra={"minimum": 1})

    @model_validator(mode="after")
    def _gpu(self) -> Self:
        if isinstance(self.gpu, float | int) and self.gpu < 0:
            raise FieldRuleError("gpu", f"must be >= 0 or 'auto', got {self.gpu}")
        if isinstance(self.gpu, float | int) and self.gpu > 1 and self.gpu != int(self.gpu):
            raise FieldRuleError("gpu", f"above 1 it must be a whole number, got {self.gpu}")
        if isinstance(self.fuse, int) and not 1 <= self.fuse <= MAX_FUSE:
            raise FieldRuleError("fuse", f"must be 1..{MAX_FUSE} or 'auto', got {self.fuse}")
        return self

    @property
    def fuse_mode(self) -> int | Literal["auto"]:
        """``fuse`` with its default applied: ``auto`` under ``gpu: auto``, else 1 (off)."""
        if self.fuse is not None:
            return self.fuse
        return "auto" if self.gpu == "auto" else 1

    def as_tune(self, gpu: float | None = None) -> dict[str, float]:
        """The dict `tune.with_resources` takes; ``gpu`` is the resolved share for ``auto``."""
        share = self.gpu if gpu is None else gpu
        if isinstance(share, str):
            raise FieldRuleError(
                "gpu", "'auto' is sized per trial (sweeps.running.packing.TrialResources)"
            )
        return {"cpu": self.cpus, "gpu": float(share)}


# --------------------------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------------------------
class ExperimentSpec(BaseModel):
    """A whole study. See the module docstring for an example and the error format."""

    model_config = _FROZEN

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    data: DataSpec
    train: TrainConfig
    axes: tuple[Axis, ...] = ()
    budget: Budget | None = None
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    #: Which fields each seed sets; a trial's data and model both follow its replicate seed.
    seed_fields: tuple[str, ...] = ("data.seed", "train.seed")
    search: Search = GridSearch()
    scheduler: Scheduler = FifoScheduler()
    resources: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1)
    retries: int = Field(0, ge=0)
    #: Adopt stored complete results of identical trials (same `TrialPlan.trial_key`) instead of
    #: running them again (see `sweeps.running.reuse`). False runs every trial.
    reuse: bool = True
    #: Results-store URI (a local directory, ``memory://name`` or any pyarrow.fs URI).
    store: str | None = None
    #: Where generated data sets are cached by content hash (default ``~/.cache/divsweep/data``).
    data_cache_dir: str | None = None
    #: The headline metric for summaries and the phase diagram.
    metric: str = "test_acc"
    #: MLflow / W&B runs for every trial, through Tune's logger callbacks
    #: (`sweeps.specs.tracking`, `sweeps.running.trackers`).
    tracking: Tracking = Tracking()

    @model_validator(mode="after")
    def _paths_and_plans(self, info: ValidationInfo) -> Self:
        strict = bool(info.context and info.context.get("strict"))
        for i, axis in enumerate(self.axes):
            for path in axis.fields():
                check_path(f"axes.{i}.field", path)
        for i, path in enumerate(self.seed_fields):
            check_path(f"seed_fields.{i}", path)
        if len(set(self.seeds)) != len(self.seeds):
            raise FieldRuleError("seeds", f"must be distinct, got {list(self.seeds)}")
        if self.budget is not None:
            check_path("budget.instructions_field", self.budget.instructions_field)
            check_path("budget.examples_field", self.budget.examples_field)
        search = self.search
        if isinstance(search, OptunaSearch):
            if self.axes:
                raise FieldRuleError(
                    "axes", "an optuna search varies `search.space`; leave axes empty"
                )
            for path in search.space:
                check_path(f"search.space.{path}", path)
        if isinstance(search, ThresholdSearch):
            if self.axes:
                raise FieldRuleError(
                    "axes", "a threshold search varies `search.axis`; leave axes empty"
                )
            check_path("search.axis", search.axis)
            cap = search.replicate_cap
            if len(self.seeds) > 1 and len(self.seeds) != cap:
                which = "replicates" if search.max_replicates is None else "max_replicates"
                raise FieldRuleError(
                    "seeds",
                    f"a threshold search with {which}={cap} needs one seed (replicates "
                    f"count up from it) or exactly {cap} seeds, got {len(self.seeds)}",
                )
            self._check_threshold(search, strict)
        else:
            # Build every grid cell now so a bad combination fails at load time, not mid-sweep.
            self._grid_plans(strict)
        self._check_fuse()
        return self

    def _check_threshold(self, search: ThresholdSearch, strict: bool) -> None:
        """Both bracket ends of every group must be valid trials; errors name the bound (or the
        group's value of ``search.over``)."""
        over = search.over
        if over is not None:
            assert over.field is not None  # ThresholdSearch checked it
            check_path("search.over.field", over.field)
            if self.budget is not None:
                budget_fields = {
                    "data.n_examples",
                    "data.examples_per_instruction",
                    self.budget.examples_field,
                }
                if over.field in budget_fields:
                    raise FieldRuleError(
                        "search.over.field",
                        f"{over.field} sets each group's data budget, which conflicts with "
                        f"`budget` (it fixes {self.budget.examples_field} = "
                        f"{self.budget.total_examples} // {self.budget.instructions_field}); "
                        "remove `budget` and give data.n_examples in `over`",
                    )
        for i, group in enumerate(search.groups):
            for bound in ("low", "high"):
                value = as_axis_value(getattr(search, bound), search.integer)
                where = f"search.{bound}" if over is None else f"search.over.values.{i}"
                resolve(
                    self.trial_base, {**group, search.axis: value}, self.seeds[0], where, strict
                )

    def _check_fuse(self) -> None:
        """An explicit ``resources.fuse`` > 1 must be something the driver can honour."""
        fuse = self.resources.fuse
        if not isinstance(fuse, int) or fuse == 1:
            return  # unset or auto: fused where possible, separate elsewhere
        if (why := self.search_cannot_fuse()) is not None:
            raise FieldRuleError("resources.fuse", why)
        if (why := fusable([self.train])) is not None:
            raise FieldRuleError("resources.fuse", f"train cannot be fused: {why}")

    def search_cannot_fuse(self) -> str | None:
        """Why this spec's search never runs fused trials (None: a grid under FIFO does).

        Optuna and threshold searches choose one point at a time, and ASHA stops trials one by
        one; which trials of a grid fuse is `trainer.config.fusable`'s to say.
        """
        if not isinstance(self.search, GridSearch) or not isinstance(self.scheduler, FifoScheduler):
            return (
                f"fusing trials needs a grid search with the fifo scheduler, got "
                f"search={self.search.kind!r}, scheduler={self.scheduler.kind!r}"
            )
        return None

    # --- derived values ----------------------------------------------------------------------
    @property
    def trial_base(self) -> TrialBase:
        """What every trial starts from (`sweeps.specs.expand` builds the trials from it)."""
        return TrialBase(self.data, self.train, self.budget, self.seed_fields)

    @property
    def spec_json(self) -> str:
        """Canonical JSON of the whole spec (what the store keeps)."""
        return canonical_json(self.model_dump(mode="json"))

    @property
    def spec_hash(self) -> str:
        """sha256 of `spec_json`."""
        return hashlib.sha256(self.spec_json.encode()).hexdigest()

    @property
    def n_trials(self) -> int:
        """An upper bound on the trials this spec runs (for quotas)."""
        search = self.search
        if isinstance(search, OptunaSearch):
            return search.n_trials
        if isinstance(search, ThresholdSearch):
            return search.max_trials
        return len(self.seeds) * math.prod(len(a.points()) for a in self.axes)

    @property
    def replicate_seeds(self) -> tuple[int, ...]:
        """Seeds of the replicates of one cell (threshold: counted up from a single seed).

        A threshold search gets ``replicate_cap`` seeds (``max_replicates`` when adaptive).
        """
        search = self.search
        if isinstance(search, ThresholdSearch) and len(self.seeds) != search.replicate_cap:
            return tuple(self.seeds[0] + r for r in range(search.replicate_cap))
        return self.seeds

    @property
    def varied_fields(self) -> list[str]:
        """Field paths that differ between trials (seed excluded), in axis order."""
        search = self.search
        if isinstance(search, OptunaSearch):
            out = list(search.space)
        elif isinstance(search, ThresholdSearch):
            # the group's field first: tables sort by it, and the phase diagram draws one line
            # per group (`independent_fields`: the last is the x axis)
            out = ([search.over.field] if search.over and search.over.field else []) + [search.axis]
        else:
            out = [p for a in self.axes for p in a.fields()]
        if self.budget is not None and self.budget.instructions_field in out:
            out.append(self.budget.examples_field)
        return list(dict.fromkeys(out))

    @property
    def objective(self) -> tuple[str, str]:
        """The headline ``metric`` and its direction: ``max`` unless an optuna objective on the
        same metric minimises it. ``ExperimentSpec(...).objective == ("test_acc", "max")``"""
        search = self.search
        if (
            isinstance(search, OptunaSearch)
            and search.objective.metric == self.metric
            and search.objective.mode == "min"
        ):
            return self.metric, "min"
        return self.metric, "max"

    @property
    def independent_fields(self) -> list[str]:
        """`varied_fields` without the one a budget couples to the others (S follows I at a
        fixed I x S): the axes a table sorts by and a chart draws, in axis order."""
        coupled = {self.budget.examples_field} if self.budget else set()
        return [f for f in self.varied_fields if f not in coupled]

    def trials(self) -> list[TrialPlan]:
        """Every trial of a grid search (axes × seeds, first axis slowest, seeds fastest).

        For `optuna` and `threshold` searches, trials are chosen while the sweep runs; this then
        returns the base configuration once per replicate seed.
        """
        if isinstance(self.search, GridSearch):
            return self._grid_plans()
        return [resolve(self.trial_base, {}, s, "seeds") for s in self.replicate_seeds]

    def _grid_plans(self, strict: bool = False) -> list[TrialPlan]:
        return grid_plans(self.trial_base, [a.settings() for a in self.axes], self.seeds, strict)

    def plan(self, params: Mapping[str, Any]) -> TrialPlan:
        """The trial for explicit ``params`` (field path → value, plus ``"seed"``).

        This is how the Tune trainable rebuilds its typed configs from Tune's config dict.
        """
        values = dict(params)
        seed = int(values.pop("seed", self.seeds[0]))
        return resolve(self.trial_base, values, seed, "params")


def format_errors(e: ValidationError, prefix: str = "") -> str:
    """``path: message`` for each pydantic error (`data.errors.error_details`)."""
    return format_details(error_details(e.errors(), prefix))


def spec_from_dict(obj: Mapping[str, Any]) -> ExperimentSpec:
    """Validate a mapping into an `ExperimentSpec`, raising `SpecError` with field paths."""
    try:
        return ExperimentSpec.model_validate(dict(obj))
    except ValidationError as e:
        raise SpecError(f"invalid experiment spec: {format_errors(e)}") from None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Load a spec from a YAML or JSON file (JSON is read as YAML).

    ``load_spec("sweeps/presets/smoke.yaml").name == "smoke"``
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError(f"cannot read spec file {p}: {e}") from None
    try:
        obj = yaml_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML/JSON: {e}") from None
    if not isinstance(obj, Mapping):
        raise SpecError(f"{p}: a spec file must hold a mapping, got {type(obj).__name__}")
    try:
        return spec_from_dict(obj)
    except SpecError as e:
        raise SpecError(f"{p}: {e}") from None
