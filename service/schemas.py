"""Request and response models of the HTTP API (what the OpenAPI schema documents).

Responses are built from the registry and the results store; requests other than the spec
itself (which is ``sweeps.ExperimentSpec``) are small models here. Every model forbids unknown
fields, so a typo in a submission is a 422 naming the field rather than a silent default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sweeps.specs.lifecycle import ExperimentStatus

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PresetSubmission(BaseModel):
    """Submit a named preset, optionally with overrides merged into its spec.

    ``{"preset": "smoke", "overrides": {"train": {"epochs": 2}, "seeds": [0, 1]}}``
    """

    model_config = _STRICT

    preset: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    overrides: dict[str, Any] = Field(default_factory=dict)


class FieldErrorOut(BaseModel):
    field: str = Field(description="dotted path into the request, e.g. data.noop_fraction")
    message: str
    type: str


class ErrorOut(BaseModel):
    """The body of every 4xx/5xx response."""

    error: str = Field(description="stable code: bad_request, unauthorized, forbidden, ...")
    detail: str = Field(description="what was wrong, naming the value and the rule")
    fields: list[FieldErrorOut] = Field(default_factory=list)


class Links(BaseModel):
    status: str
    results: str
    events: str
    summary: str
    plot: str
    page: str
    dashboard: str | None = Field(description="the Ray dashboard (loopback unless configured)")


class Progress(BaseModel):
    """Trial counts by state plus the best value of the spec's metric so far."""

    n_trials: int = Field(description="upper bound on trials (the quota figure)")
    pending: int
    running: int
    complete: int
    failed: int
    pruned: int = 0
    cancelled: int = 0
    results: int = Field(0, description="stored result rows (SSE events)")
    metric: str
    best: float | None = None
    best_trial: str | None = None


class DemandOut(BaseModel):
    kind: str = Field(description="task or placement_group")
    resources: dict[str, float] = Field(description='one bundle, e.g. {"CPU": 1.0}')
    count: int
    infeasible: bool = Field(description="no live node and no node type could ever hold it")


class WaitingOut(BaseModel):
    """Why an experiment has had no running trial for `resource_wait_s` seconds (Ray's view)."""

    since: datetime
    seconds: float
    request: dict[str, float] = Field(description="one trial's resource request")
    infeasible: bool = Field(description="Ray holds this experiment's request as infeasible")
    demands: list[DemandOut] = Field(description="every demand Ray queues, of any job")
    detail: str


class ExperimentOut(BaseModel):
    id: str
    name: str
    status: ExperimentStatus
    submitter: str
    spec_hash: str
    ray_job_id: str | None
    ray_status: str | None = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    progress: Progress | None = None
    waiting: WaitingOut | None = Field(
        None, description="set while no trial has run for the configured time, with Ray's reason"
    )
    external: bool = Field(
        False,
        description="started outside the service (ray job submit ... python -m sweeps.run "
        "--store <the service's store>): known from the results store, read-only here",
    )
    links: Links


class CapacityOut(BaseModel):
    """What the admission check found about where the trials can run (`service.capacity`)."""

    checked: bool = Field(
        description="false: Ray did not list its nodes (asked twice), so only the checks that "
        "need no node ran; a spec no node can hold then waits instead of being refused"
    )
    waits_for_autoscaler: list[str] = Field(
        default_factory=list,
        description="no live node can run a trial; these node types the autoscaler may add can",
    )
    detail: str


class SubmitOut(BaseModel):
    id: str
    status: ExperimentStatus
    created: bool = Field(description="false when an Idempotency-Key returned an earlier one")
    links: Links
    capacity: CapacityOut | None = Field(
        None, description="the admission check's finding (null on an Idempotency-Key replay)"
    )


class ExperimentPage(BaseModel):
    items: list[ExperimentOut]
    total: int
    limit: int
    offset: int
    next: str | None = Field(description="URL of the next page, null on the last")


class PresetOut(BaseModel):
    name: str
    description: str
    n_trials: int
    spec: dict[str, Any]


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class StatesOut(BaseModel):
    states: list[str] = Field(description="every state, in lifecycle order")
    terminal: list[str] = Field(description="the final ones: nothing changes after them")


class LifecycleOut(BaseModel):
    """`sweeps.specs.lifecycle`, for clients (the results page's scripts read it)."""

    experiment: StatesOut
    trial: StatesOut
