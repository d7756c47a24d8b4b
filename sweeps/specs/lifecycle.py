"""The two lifecycles, defined once: an experiment's status and a trial's state.

The results store, the service's registry, the service's routes and page, the CLI and the
Python client all use these (a `StrEnum` member *is* its string: it compares equal to it, and
JSON, Parquet and SQL see the plain string)::

    ExperimentStatus:  submitted* -> pending -> running -> complete | failed | cancelled
    TrialState:        pending -> running -> complete | pruned | failed | cancelled

    * ``submitted`` exists only in the service's registry: recorded, not yet accepted by Ray.

>>> ExperimentStatus("complete").is_terminal, TrialState.RUNNING.is_terminal
(True, False)
>>> [s.value for s in ExperimentStatus.terminal()]
['complete', 'failed', 'cancelled']
"""

from __future__ import annotations

from enum import StrEnum


class ExperimentStatus(StrEnum):
    SUBMITTED = "submitted"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_EXPERIMENT

    @classmethod
    def terminal(cls) -> tuple[ExperimentStatus, ...]:
        """complete, failed, cancelled: an experiment in one of these never changes again."""
        return tuple(s for s in cls if s.is_terminal)

    @classmethod
    def stored(cls) -> tuple[ExperimentStatus, ...]:
        """The statuses the results store records (all but the registry's ``submitted``)."""
        return tuple(s for s in cls if s is not cls.SUBMITTED)


class TrialState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (TrialState.PENDING, TrialState.RUNNING)


_TERMINAL_EXPERIMENT = frozenset(
    {ExperimentStatus.COMPLETE, ExperimentStatus.FAILED, ExperimentStatus.CANCELLED}
)

#: every trial state, in lifecycle order (progress counts use this order)
TRIAL_STATES: tuple[str, ...] = tuple(TrialState)
#: the statuses an experiment ends in
TERMINAL_STATUSES: tuple[str, ...] = tuple(ExperimentStatus.terminal())
