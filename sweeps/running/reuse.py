"""Content-addressed trials: a stored complete result stands in for running the same trial again.

A trial's identity is its `TrialPlan.trial_key`: sha256 of its data spec, train config (with the
seed) and the code version of ``data/`` and ``trainer/``. Equal keys give equal numbers, so before a
sweep runs a trial the driver asks the `ReuseIndex` whether any experiment in the store already
has a ``complete`` trial with that key. If so the result is *adopted*: its metric rows are copied
into the new experiment under the trial id ``reused-<key prefix>`` and the trial row records
``reused_from="<experiment>/<trial>"``. That makes three things cheap:

- **extending** a finished study (more seeds, more grid points): submit the larger spec; only the
  new trials run;
- **resubmitting** an experiment whose driver died: its complete trials are found in the
  experiment itself and kept (nothing is copied);
- **overlapping studies** (the same cell in fig2a and in a robustness sweep) run it once.

Adoption is idempotent and crash-safe: the metric rows are copied in one atomic store write, and
a trial whose rows are already in the experiment is not copied again.

Example::

    index = ReuseIndex(store, experiment_id="fig2a-v2")
    final = index.adopt("fig2a-v2", plan)   # final metrics dict, or None: the trial must run
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from sweeps.specs.lifecycle import TrialState
from sweeps.specs.spec import TrialPlan
from sweeps.store import MetricRecord, ResultsStore, TrialRecord

log = logging.getLogger(__name__)


def reused_trial_id(trial_key: str) -> str:
    """The id an adopted trial gets in the adopting experiment, e.g. ``reused-1a2b3c4d5e6f``."""
    return f"reused-{trial_key[:12]}"


class ReuseIndex:
    """``trial_key -> complete trial`` over every experiment of ``store`` (read once, at start).

    Trials of ``experiment_id`` itself win over other experiments' (nothing to copy then).
    """

    def __init__(self, store: ResultsStore, experiment_id: str | None = None) -> None:
        self.store = store
        self._by_key: dict[str, TrialRecord] = {}
        for exp in store.list_experiments():
            for t in store.get_trials(exp.experiment_id):
                if t.state != TrialState.COMPLETE or not t.trial_key:
                    continue
                known = self._by_key.get(t.trial_key)
                if known is None or (
                    t.experiment_id == experiment_id and known.experiment_id != experiment_id
                ):
                    self._by_key[t.trial_key] = t
        self.adopted: set[str] = set()  # keys copied in from other experiments
        self.kept: set[str] = set()  # keys already complete in the experiment itself

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, trial_key: str) -> TrialRecord | None:
        """The stored complete trial with this key, if any."""
        return self._by_key.get(trial_key)

    def adopt(self, experiment_id: str, plan: TrialPlan) -> dict[str, Any] | None:
        """Make a stored result of ``plan`` part of ``experiment_id``; its final metrics, or None.

        None means no complete result with ``plan.trial_key`` is stored: the trial must run.
        """
        src = self._by_key.get(plan.trial_key)
        if src is None:
            return None
        rows = _trial_metrics(self.store, src.experiment_id, src.trial_id)
        if src.experiment_id == experiment_id:
            if plan.trial_key not in self.adopted:
                self.kept.add(plan.trial_key)
            return rows[-1].metrics if rows else {}
        origin = src.reused_from or f"{src.experiment_id}/{src.trial_id}"
        trial_id = reused_trial_id(plan.trial_key)
        if not _trial_metrics(self.store, experiment_id, trial_id):
            # One write: either every row of the trial is copied or none is (crash-safe).
            self.store.append_metrics_batch(
                experiment_id, [(trial_id, m.metrics, m.time) for m in rows]
            )
        # From now on the key points at the copy, so asking again copies nothing.
        self._by_key[plan.trial_key] = self.store.put_trial(
            TrialRecord(
                experiment_id,
                trial_id,
                trial_key=plan.trial_key,
                params_json=json.dumps(plan.params, sort_keys=True),
                data_hash=plan.data.content_hash,
                state=TrialState.COMPLETE,
                started_at=src.started_at,
                ended_at=src.ended_at,
                reused_from=origin,
            )
        )
        self.adopted.add(plan.trial_key)
        log.info("trial %s: reusing the complete result of %s", trial_id, origin)
        return rows[-1].metrics if rows else {}


def _trial_metrics(store: ResultsStore, experiment_id: str, trial_id: str) -> list[MetricRecord]:
    return [m for m in store.get_metrics(experiment_id) if m.trial_id == trial_id]


def final_metric(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    """``metrics[name]`` as a float (0.0 when the stored result lacks it); None: no result."""
    if metrics is None:
        return None
    value = metrics.get(name)
    return 0.0 if value is None else float(value)
