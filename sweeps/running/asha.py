"""ASHA that remembers which trials it stopped early, so the store can call them ``pruned``.

Tune's callbacks see a trial stopped by the scheduler as an ordinary completion; the scheduler is
the only place that knows. A trial stopped because it reached ``max_t`` is complete, not pruned.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler


class RecordingASHA(AsyncHyperBandScheduler):
    """`AsyncHyperBandScheduler` plus ``stopped``: ids of trials it cut short."""

    def __init__(self, *, time_attr: str, max_t: int, **kwargs: Any) -> None:
        super().__init__(time_attr=time_attr, max_t=max_t, **kwargs)
        self.stopped: set[str] = set()
        self._time_attr_name = time_attr
        self._max_t_value = max_t

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        reached_end = result.get(self._time_attr_name, 0) >= self._max_t_value
        if decision == TrialScheduler.STOP and not reached_end and not result.get("done"):
            self.stopped.add(trial.trial_id)
        return str(decision)
