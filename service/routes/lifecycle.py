"""``GET /v1/lifecycle``: the experiment statuses and trial states, and which of them are final.

`sweeps.specs.lifecycle` defines both lifecycles once; the results page's scripts read them
here instead of keeping their own lists::

    {"experiment": {"states": ["submitted", "pending", ...], "terminal": ["complete", ...]},
     "trial": {"states": ["pending", "running", ...], "terminal": ["complete", "pruned", ...]}}
"""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter

from service.schemas import LifecycleOut, StatesOut
from sweeps.specs.lifecycle import ExperimentStatus, TrialState

router = APIRouter(prefix="/v1", tags=["lifecycle"])


def _states(enum: type[ExperimentStatus] | type[TrialState]) -> StatesOut:
    members: list[StrEnum] = list(enum)
    return StatesOut(
        states=[s.value for s in members],
        terminal=[s.value for s in members if getattr(s, "is_terminal", False)],
    )


@router.get("/lifecycle", response_model=LifecycleOut)
async def lifecycle() -> LifecycleOut:
    """Every experiment status and trial state, in lifecycle order, and the final ones."""
    return LifecycleOut(experiment=_states(ExperimentStatus), trial=_states(TrialState))
