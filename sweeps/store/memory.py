"""`MemoryStore`: the results store in one process's memory (tests, the service's dry runs).

``open_store("memory://name")`` returns the same instance for the same name within a process, so
a test and the code under test can share one. Example::

    store = MemoryStore()
    store.create_experiment("e1", name="demo", spec_json="{}", spec_hash="h")
    store.progress("e1")["total"]   # -> 0
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

from sweeps.store.base import ExperimentRecord, MetricRecord, ResultsStore, TrialRecord


class MemoryStore(ResultsStore):
    """Lists in a dict; every method is guarded by the base class's lock where it writes."""

    def __init__(self) -> None:
        super().__init__()
        self._experiments: dict[str, list[ExperimentRecord]] = defaultdict(list)
        self._trials: dict[str, list[TrialRecord]] = defaultdict(list)
        self._metrics: dict[str, list[MetricRecord]] = defaultdict(list)

    def _write_experiment(self, record: ExperimentRecord) -> None:
        self._experiments[record.experiment_id].append(record)

    def _read_experiment_versions(self, experiment_id: str) -> list[ExperimentRecord]:
        return list(self._experiments.get(experiment_id, ()))

    def _experiment_ids(self) -> list[str]:
        return [k for k, v in self._experiments.items() if v]

    def _write_trials(self, experiment_id: str, records: Sequence[TrialRecord]) -> None:
        self._trials[experiment_id].extend(records)

    def _read_trial_versions(self, experiment_id: str) -> list[TrialRecord]:
        return list(self._trials.get(experiment_id, ()))

    def _write_metrics(self, experiment_id: str, records: Sequence[MetricRecord]) -> None:
        self._metrics[experiment_id].extend(records)

    def _read_metrics(self, experiment_id: str, since_seq: int) -> list[MetricRecord]:
        rows = self._metrics.get(experiment_id, [])
        # rows are appended in seq order, so skip the old ones by bisection
        lo, hi = 0, len(rows)
        while lo < hi:
            mid = (lo + hi) // 2
            if rows[mid].seq <= since_seq:
                lo = mid + 1
            else:
                hi = mid
        return rows[lo:]

    def state_token(self, experiment_id: str) -> Hashable | None:
        # append-only lists: their lengths change with every write
        return (
            len(self._experiments.get(experiment_id, ())),
            len(self._trials.get(experiment_id, ())),
            len(self._metrics.get(experiment_id, ())),
        )

    def _max_seq(self, experiment_id: str) -> int:
        rows = self._metrics.get(experiment_id)
        return rows[-1].seq if rows else 0
