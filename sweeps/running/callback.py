"""Stream a running sweep into the results store, and stop it when the store says cancelled.

`StoreCallback` is a Tune `Callback` living in the driver process. As Tune's event loop sees
things happen it writes them at once, so another process reading the store watches the sweep
live:

- ``on_step_begin``: trials Tune has created but not started → ``pending`` rows;
- ``on_trial_start`` → ``running``; ``on_trial_result`` → one metric row per report. A trial that
  resumes from a checkpoint (its node died, or a dead driver's experiment was restored) reports
  again the iterations that followed that checkpoint; those are already stored, so a report whose
  ``training_iteration`` is not newer than the trial's last stored one is skipped: the store never
  holds a report twice;
- ``on_trial_complete`` → ``complete``, or ``pruned`` when the scheduler stopped it early;
- ``on_trial_error`` (after the retries are spent) → ``failed`` with the error text. The sweep
  goes on: a crashed trial is a row, not a crashed sweep.

A fused Tune trial (`sweeps.running.fusing`: config ``{"members": [params, ...]}``) is K trials in
the store: member ``k`` gets the trial id ``<tune trial id>-m<k>``, its own trial key and params,
and its own metric rows from ``result["members"]["<k>"]``; states and errors apply to all K.

`CancelStopper` checks the experiment's status every few seconds; once the service has marked it
``cancelled`` (``store.cancel_experiment``), Tune stops every trial.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.result import AUTO_RESULT_KEYS

from sweeps.running.trainable import trial_params
from sweeps.specs.lifecycle import ExperimentStatus, TrialState
from sweeps.specs.spec import ExperimentSpec
from sweeps.store import ResultsStore, TrialRecord

log = logging.getLogger(__name__)

#: Tune bookkeeping kept next to the trainer's own metrics.
KEEP_TUNE_KEYS = frozenset({"training_iteration", "time_total_s"})
_DROP_KEYS = (set(AUTO_RESULT_KEYS) - KEEP_TUNE_KEYS) | {
    "done",
    "trial_id",
    "experiment_tag",
    "should_checkpoint",
}
_MAX_ERROR_CHARS = 4000


def report_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a Tune result worth storing: what the trainer reported, plus the iteration."""
    return {k: v for k, v in result.items() if k not in _DROP_KEYS and not isinstance(v, dict)}


class StoreCallback(Callback):
    """Writes trial states and metrics of experiment ``experiment_id`` into ``store``."""

    def __init__(
        self,
        store: ResultsStore,
        experiment_id: str,
        spec: ExperimentSpec,
        was_pruned: Callable[[str], bool] = lambda trial_id: False,
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.spec = spec
        self.was_pruned = was_pruned
        self._known: set[str] = set()
        self._started: dict[str, float] = {}
        self._base: dict[str, list[TrialRecord]] = {}
        self._last_iteration: dict[str, int] | None = None  # loaded from the store on first use
        self._finished: set[str] | None = None  # likewise

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its saved state; a restored driver re-reads the store.
        return {**self.__dict__, "_last_iteration": None, "_finished": None}

    def _is_finished(self, trial: Any) -> bool:
        """Whether the store holds every store trial of ``trial`` as complete: a restored
        experiment re-runs such a trial only to report its stored result (see
        `sweeps.running.trainable.tune_trainable`), and its row keeps its times."""
        if self._finished is None:
            states: dict[str, set[str]] = {}
            for t in self.store.get_trials(self.experiment_id):
                states.setdefault(t.trial_id.split("-m")[0], set()).add(t.state)
            self._finished = {k for k, v in states.items() if v == {TrialState.COMPLETE}}
        return trial.trial_id in self._finished

    def _is_new(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Whether ``result`` is a report the store does not hold yet (see the module doc)."""
        if self._last_iteration is None:
            self._last_iteration = {}
            for m in self.store.get_metrics(self.experiment_id):
                it = m.metrics.get("training_iteration")
                if isinstance(it, int | float):
                    last = self._last_iteration.get(m.trial_id, 0)
                    self._last_iteration[m.trial_id] = max(last, int(it))
        it = result.get("training_iteration")
        if not isinstance(it, int | float):
            return True
        if int(it) <= self._last_iteration.get(trial_id, 0):
            return False
        self._last_iteration[trial_id] = int(it)
        return True

    def _records(self, trial: Any) -> list[TrialRecord]:
        """The identity part of the rows of a Tune trial's store trials (params, content
        hashes): one, or one per member of a fused trial; computed once."""
        known = self._base.get(trial.trial_id)
        if known is not None:
            return known
        members = trial_params(trial.config)
        recs = []
        for k, params in enumerate(members):
            plan = self.spec.plan(params)
            recs.append(
                TrialRecord(
                    self.experiment_id,
                    trial.trial_id if len(members) == 1 else member_trial_id(trial, k),
                    trial_key=plan.trial_key,
                    params_json=json.dumps(plan.params, sort_keys=True),
                    data_hash=plan.data.content_hash,
                )
            )
        self._base[trial.trial_id] = recs
        return recs

    def _put(self, trial: Any, state: str, **fields: Any) -> None:
        recs = [
            TrialRecord(**{**r.__dict__, "state": state, **fields}) for r in self._records(trial)
        ]
        try:
            self.store.put_trials(recs)
        except Exception:  # never let a store hiccup take the sweep down; the rows say what we have
            log.exception("could not record trial %s as %s", trial.trial_id, state)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        # A restored experiment lists its trials as pending again, finished ones included.
        new = [
            t
            for t in trials
            if t.trial_id not in self._known and t.status == "PENDING" and not self._is_finished(t)
        ]
        if not new:
            return
        recs: list[TrialRecord] = []
        for t in new:
            self._known.add(t.trial_id)
            recs.extend(
                TrialRecord(**{**r.__dict__, "state": TrialState.PENDING}) for r in self._records(t)
            )
        try:
            self.store.put_trials(recs)
        except Exception:
            log.exception("could not record %d pending trials", len(recs))

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._known.add(trial.trial_id)
        if self._is_finished(trial):
            return
        self._started[trial.trial_id] = time.time()
        self._put(trial, TrialState.RUNNING, started_at=self._started[trial.trial_id])

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if self._is_finished(trial):
            return  # its stored result, reported again (see _is_finished)
        try:
            rows = []
            for trial_id, metrics in self._results(trial, result):
                if self._is_new(trial_id, result):
                    rows.append((trial_id, metrics, None))
                else:
                    log.info(
                        "trial %s: iteration %s is already stored (resumed from a checkpoint)",
                        trial_id,
                        result.get("training_iteration"),
                    )
            if rows:
                self.store.append_metrics_batch(self.experiment_id, rows)
        except Exception:
            log.exception("could not store a result of trial %s", trial.trial_id)

    def _results(self, trial: Any, result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """``(store trial id, metrics)`` of each store trial in one Tune result."""
        members = result.get("members")
        if not isinstance(members, dict):
            return [(trial.trial_id, report_metrics(result))]
        tune_keys = {k: result[k] for k in KEEP_TUNE_KEYS if k in result}
        return [
            (r.trial_id, {**report_metrics(members[str(k)]), **tune_keys})
            for k, r in enumerate(self._records(trial))
        ]

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self._is_finished(trial):
            return
        state = TrialState.PRUNED if self.was_pruned(trial.trial_id) else TrialState.COMPLETE
        self._put(trial, state, started_at=self._started.get(trial.trial_id), ended_at=time.time())

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        text = _error_text(trial) or "trial failed (no error text)"
        self._put(
            trial,
            TrialState.FAILED,
            error=text[-_MAX_ERROR_CHARS:],
            started_at=self._started.get(trial.trial_id),
            ended_at=time.time(),
        )


def member_trial_id(trial: Any, member: int) -> str:
    """The store's id of member ``member`` of a fused Tune trial, e.g. ``a1b2c_00003-m2``."""
    return f"{trial.trial_id}-m{member}"


def _error_text(trial: Any) -> str | None:
    """The trial's error: Tune writes it to the local trial dir before calling back, and syncs
    it to the storage path later, so the local file comes first."""
    try:
        local = trial.error_file
        if local and os.path.isfile(local):
            with open(local) as f:
                return f.read()
        error = trial.get_error()
        return str(error) if error else None
    except Exception:  # an unreadable error file must not hide that the trial failed
        log.exception("could not read the error of trial %s", trial.trial_id)
        return None


class CancelStopper(Stopper):
    """Stops the whole sweep once the experiment is ``cancelled`` in the store."""

    def __init__(self, store: ResultsStore, experiment_id: str, every_s: float = 2.0) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.every_s = every_s
        self._last = 0.0
        self._cancelled = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last >= self.every_s:
            self._last = now
            try:
                status = self.store.get_experiment(self.experiment_id).status
            except Exception:
                log.exception("could not read the status of %s", self.experiment_id)
                return False
            self._cancelled = status == ExperimentStatus.CANCELLED
            if self._cancelled:
                log.info("experiment %s was cancelled; stopping every trial", self.experiment_id)
        return self._cancelled
