"""The results store: records, the `ResultsStore` interface and its written contract.

A store holds three kinds of record per experiment:

- one **experiment** (id, name, spec, spec hash, status, times, error);
- **trials**, each an immutable row per state change (``pending → running → complete | pruned |
  failed | cancelled``); readers see the latest version of each trial;
- **metrics**, one row per report, numbered by ``seq`` (1, 2, 3, ... strictly increasing per
  experiment), so a reader can ask for only the rows after the last one it saw (SSE
  ``Last-Event-ID``).

The contract every implementation passes (``tests/sweeps/test_store_contract.py``):

1. ``create_experiment`` makes a ``pending`` experiment; a second create with the same id raises
   `StoreError` unless ``exist_ok`` and the spec hash matches (then it returns the stored one).
2. ``get_experiment``/``get_trials``/``get_metrics`` of an unknown id raise
   `UnknownExperimentError`; ``list_experiments`` is ordered by creation time.
3. ``put_trial`` records a new state of a trial; ``get_trials`` returns the latest state of each
   trial in first-seen order. Nothing is ever overwritten: every version stays stored.
4. ``append_metrics`` assigns ``seq = previous max + 1`` (also across store instances on the same
   URI, and after re-opening); ``get_metrics(since_seq=n)`` returns exactly the rows with
   ``seq > n`` in ``seq`` order. Numeric metrics become float columns of ``metrics_table``; every
   value is kept in ``metrics_json``.
5. ``cancel_experiment`` sets the experiment to ``cancelled`` and every ``pending``/``running``
   trial to ``cancelled``; finished trials and all metric rows are kept. ``cancelled`` is final:
   later status or trial-state writes do not undo it.
6. ``progress`` counts trials by state (every state key present, plus ``total``).

One process writes an experiment's metrics (the sweep driver); any number read it, from any
process. Example::

    store = open_store("memory://demo")
    store.create_experiment("e1", name="demo", spec_json="{}", spec_hash="h")
    store.put_trial(TrialRecord("e1", "t1", trial_key="k", params_json='{"seed": 0}',
                                data_hash="d", state=TrialState.RUNNING, started_at=time.time()))
    store.append_metrics("e1", "t1", {"step": 10, "test_acc": 0.5}).seq      # -> 1
    store.get_metrics("e1", since_seq=1)                                      # -> []
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import pyarrow as pa

from sweeps.errors import StoreError, UnknownExperimentError
from sweeps.specs.lifecycle import TRIAL_STATES, ExperimentStatus, TrialState

#: what the store records of the lifecycles (`sweeps.specs.lifecycle` defines them)
EXPERIMENT_STATUSES: tuple[str, ...] = tuple(ExperimentStatus.stored())
FINISHED_TRIAL_STATES = frozenset(s for s in TrialState if s.is_terminal)
#: Columns of every metric row; metric names equal to these stay in `metrics_json` only.
METRIC_BASE_COLUMNS = ("experiment_id", "trial_id", "seq", "time", "metrics_json")
#: Every id the store accepts (it becomes a path part: no ``/``, no leading ``.``); the service's
#: routes check path ids against it before any lookup.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_ID = re.compile(ID_PATTERN)


def check_id(kind: str, value: str) -> str:
    """Ids become path parts, so they are restricted to ``[A-Za-z0-9_.-]``."""
    if not isinstance(value, str) or not _ID.match(value):
        raise StoreError(
            f"{kind}: {value!r} is not a valid id (1-128 of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit)"
        )
    return value


@dataclass(frozen=True)
class ExperimentRecord:
    """One version of an experiment's row."""

    experiment_id: str
    name: str
    spec_json: str
    spec_hash: str
    status: str = ExperimentStatus.PENDING
    created_at: float = 0.0
    updated_at: float = 0.0
    error: str | None = None
    version: int = 0  # time.time_ns() of the write; orders versions


@dataclass(frozen=True)
class TrialRecord:
    """One version (state) of a trial's row."""

    experiment_id: str
    trial_id: str
    trial_key: str = ""
    params_json: str = "{}"
    data_hash: str = ""
    state: str = TrialState.PENDING
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    version: int = 0
    #: ``"<experiment_id>/<trial_id>"`` of the stored trial whose result this one reuses (same
    #: trial_key), or None when it ran here.
    reused_from: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The trial's parameters (field path → value, plus ``seed``)."""
        out: dict[str, Any] = json.loads(self.params_json)
        return out


@dataclass(frozen=True)
class MetricRecord:
    """One reported result."""

    experiment_id: str
    trial_id: str
    seq: int
    time: float
    metrics_json: str

    @property
    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.metrics_json)
        return out


EXPERIMENT_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("name", pa.string()),
        ("spec_json", pa.string()),
        ("spec_hash", pa.string()),
        ("status", pa.string()),
        ("created_at", pa.float64()),
        ("updated_at", pa.float64()),
        ("error", pa.string()),
        ("version", pa.int64()),
    ]
)
TRIAL_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("trial_id", pa.string()),
        ("trial_key", pa.string()),
        ("params_json", pa.string()),
        ("data_hash", pa.string()),
        ("state", pa.string()),
        ("error", pa.string()),
        ("started_at", pa.float64()),
        ("ended_at", pa.float64()),
        ("version", pa.int64()),
        ("reused_from", pa.string()),
    ]
)


def records_to_table(records: Sequence[Any], schema: pa.Schema) -> pa.Table:
    """Dataclass records to an Arrow table with ``schema``."""
    return pa.Table.from_pylist([asdict(r) for r in records], schema=schema)


def table_to_records(table: pa.Table, cls: type[Any]) -> list[Any]:
    """The inverse of `records_to_table` (unknown columns are ignored)."""
    names = [f.name for f in fields(cls)]
    return [cls(**{k: row.get(k) for k in names}) for row in table.to_pylist()]


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that become float columns: finite-or-NaN numbers, bools as 0/1."""
    out = {}
    for k, v in metrics.items():
        if k in METRIC_BASE_COLUMNS or not isinstance(v, int | float):
            continue
        out[k] = float(v)
    return out


def metrics_to_table(records: Sequence[MetricRecord]) -> pa.Table:
    """Metric rows as a table: the base columns, then one float64 column per scalar metric."""
    cols: dict[str, list[Any]] = {c: [] for c in METRIC_BASE_COLUMNS}
    scalars = [scalar_metrics(r.metrics) for r in records]
    names = sorted({k for s in scalars for k in s})
    for r in records:
        cols["experiment_id"].append(r.experiment_id)
        cols["trial_id"].append(r.trial_id)
        cols["seq"].append(r.seq)
        cols["time"].append(r.time)
        cols["metrics_json"].append(r.metrics_json)
    arrays: list[pa.Array] = [
        pa.array(cols["experiment_id"], pa.string()),
        pa.array(cols["trial_id"], pa.string()),
        pa.array(cols["seq"], pa.int64()),
        pa.array(cols["time"], pa.float64()),
        pa.array(cols["metrics_json"], pa.string()),
    ]
    for n in names:
        arrays.append(pa.array([s.get(n) for s in scalars], pa.float64()))
    return pa.Table.from_arrays(arrays, names=[*METRIC_BASE_COLUMNS, *names])


def _json_default(v: Any) -> Any:
    # numpy scalars and the like that Tune results may carry
    for cast in (float, str):
        try:
            return cast(v)
        except (TypeError, ValueError):
            continue
    return repr(v)


def dumps_metrics(metrics: Mapping[str, Any]) -> str:
    """Metrics as JSON; NaN/inf become null so every reader can parse the text."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }
    return json.dumps(clean, sort_keys=True, default=_json_default)


class ResultsStore(ABC):
    """The store interface; see the module docstring for the contract.

    Subclasses implement the eight storage primitives (``_write_*``/``_read_*``/...); the
    versioning, sequence numbering and cancellation rules live here, once.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._next_seq: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks (and so the store) into its experiment state; locks and
        # read caches are per process, so they are rebuilt on unpickling.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_next_seq"] = {}
        for per_process in ("_cache", "_written", "_unmerged"):
            if per_process in state:
                state[per_process] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # --- storage primitives --------------------------------------------------------------------
    @abstractmethod
    def _write_experiment(self, record: ExperimentRecord) -> None: ...

    @abstractmethod
    def _read_experiment_versions(self, experiment_id: str) -> list[ExperimentRecord]: ...

    @abstractmethod
    def _experiment_ids(self) -> list[str]: ...

    @abstractmethod
    def _write_trials(self, experiment_id: str, records: Sequence[TrialRecord]) -> None: ...

    @abstractmethod
    def _read_trial_versions(self, experiment_id: str) -> list[TrialRecord]: ...

    @abstractmethod
    def _write_metrics(self, experiment_id: str, records: Sequence[MetricRecord]) -> None: ...

    @abstractmethod
    def _read_metrics(self, experiment_id: str, since_seq: int) -> list[MetricRecord]:
        """Rows with ``seq > since_seq`` (any order; the caller sorts)."""

    @abstractmethod
    def _max_seq(self, experiment_id: str) -> int:
        """The largest stored seq of the experiment, 0 when none."""

    # --- experiments -----------------------------------------------------------------------------
    def create_experiment(
        self,
        experiment_id: str,
        *,
        name: str,
        spec_json: str,
        spec_hash: str,
        exist_ok: bool = False,
    ) -> ExperimentRecord:
        """Create a ``pending`` experiment (see contract rule 1)."""
        check_id("experiment_id", experiment_id)
        with self._lock:
            existing = self._latest_experiment(experiment_id)
            if existing is not None:
                if exist_ok and existing.spec_hash == spec_hash:
                    return existing
                why = "spec differs" if existing.spec_hash != spec_hash else "exist_ok=False"
                raise StoreError(f"experiment_id: {experiment_id!r} already exists ({why})")
            now = time.time()
            rec = ExperimentRecord(
                experiment_id,
                name,
                spec_json,
                spec_hash,
                ExperimentStatus.PENDING,
                now,
                now,
                None,
                time.time_ns(),
            )
            self._write_experiment(rec)
            return rec

    def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        """The current experiment record; `UnknownExperimentError` if there is none."""
        check_id("experiment_id", experiment_id)
        rec = self._latest_experiment(experiment_id)
        if rec is None:
            raise UnknownExperimentError(f"experiment_id: no experiment {experiment_id!r}")
        return rec

    def has_experiment(self, experiment_id: str) -> bool:
        return self._latest_experiment(check_id("experiment_id", experiment_id)) is not None

    def state_token(self, experiment_id: str) -> Hashable | None:
        """A value equal between two calls exactly when nothing was stored for the experiment
        in between (None: this backend cannot tell). Readers cache what they derive from an
        experiment's rows under it, e.g. the service's results table of a running sweep."""
        return None

    def list_experiments(self) -> list[ExperimentRecord]:
        """Every experiment, oldest first."""
        recs = [r for r in (self._latest_experiment(e) for e in self._experiment_ids()) if r]
        return sorted(recs, key=lambda r: (r.created_at, r.experiment_id))

    def set_experiment_status(
        self, experiment_id: str, status: str, error: str | None = None
    ) -> ExperimentRecord:
        """Record a new status; a cancelled experiment stays cancelled (returned unchanged)."""
        if status not in EXPERIMENT_STATUSES:
            raise StoreError(f"status: {status!r} is not one of {EXPERIMENT_STATUSES}")
        with self._lock:
            cur = self.get_experiment(experiment_id)
            if cur.status == ExperimentStatus.CANCELLED:
                return cur
            rec = replace(
                cur,
                status=status,
                error=error,
                updated_at=time.time(),
                version=_next_version(cur.version),
            )
            self._write_experiment(rec)
            return rec

    def cancel_experiment(self, experiment_id: str) -> ExperimentRecord:
        """Mark the experiment and its unfinished trials ``cancelled`` (contract rule 5)."""
        with self._lock:
            cur = self.get_experiment(experiment_id)
            now = time.time()
            open_trials = [
                t for t in self.get_trials(experiment_id) if t.state not in FINISHED_TRIAL_STATES
            ]
            if open_trials:
                self._write_trials(
                    experiment_id,
                    [
                        replace(
                            t,
                            state=TrialState.CANCELLED,
                            ended_at=now,
                            version=_next_version(t.version),
                        )
                        for t in open_trials
                    ],
                )
            if cur.status == ExperimentStatus.CANCELLED:
                return cur
            rec = replace(
                cur,
                status=ExperimentStatus.CANCELLED,
                updated_at=now,
                version=_next_version(cur.version),
            )
            self._write_experiment(rec)
            return rec

    # --- trials ----------------------------------------------------------------------------------
    def put_trial(self, record: TrialRecord) -> TrialRecord:
        """Store a new state of one trial (a cancelled trial stays cancelled)."""
        return self.put_trials([record])[0]

    def put_trials(self, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        """`put_trial` for several trials of one experiment in one write."""
        if not records:
            return []
        eid = records[0].experiment_id
        for r in records:
            if r.experiment_id != eid:
                raise StoreError("put_trials: all records must belong to one experiment")
            check_id("trial_id", r.trial_id)
            if r.state not in TRIAL_STATES:
                raise StoreError(f"state: {r.state!r} is not one of {TRIAL_STATES}")
        with self._lock:
            self.get_experiment(eid)
            current = {t.trial_id: t for t in self.get_trials(eid)}
            out, todo = [], []
            for r in records:
                cur = current.get(r.trial_id)
                if cur is not None and cur.state == TrialState.CANCELLED:
                    out.append(cur)
                    continue
                new = replace(r, version=_next_version(cur.version if cur else 0))
                todo.append(new)
                out.append(new)
            if todo:
                self._write_trials(eid, todo)
            return out

    def get_trials(self, experiment_id: str) -> list[TrialRecord]:
        """The latest state of each trial, in the order trials first appeared."""
        self.get_experiment(experiment_id)
        latest: dict[str, TrialRecord] = {}
        first: dict[str, int] = {}
        for t in sorted(self._read_trial_versions(experiment_id), key=lambda t: t.version):
            first.setdefault(t.trial_id, t.version)
            cur = latest.get(t.trial_id)
            if cur is not None and cur.state == TrialState.CANCELLED:
                continue  # final, even if a late writer says otherwise
            latest[t.trial_id] = t
        return sorted(latest.values(), key=lambda t: first[t.trial_id])

    def progress(self, experiment_id: str) -> dict[str, int]:
        """Trial counts per state, e.g. ``{"pending": 0, "running": 2, ..., "total": 5}``."""
        counts = dict.fromkeys(TRIAL_STATES, 0)
        trials = self.get_trials(experiment_id)
        for t in trials:
            counts[t.state] += 1
        counts["total"] = len(trials)
        return counts

    # --- metrics ---------------------------------------------------------------------------------
    def append_metrics(
        self,
        experiment_id: str,
        trial_id: str,
        metrics: Mapping[str, Any],
        time_s: float | None = None,
    ) -> MetricRecord:
        """Store one report and return its row (with its new ``seq``)."""
        return self.append_metrics_batch(experiment_id, [(trial_id, metrics, time_s)])[0]

    def append_metrics_batch(
        self,
        experiment_id: str,
        rows: Iterable[tuple[str, Mapping[str, Any], float | None]],
    ) -> list[MetricRecord]:
        """Store several reports in one write; seqs are consecutive in the given order."""
        with self._lock:
            seq = self._next_seq.get(experiment_id)
            if seq is None:
                # Experiments are never deleted, so one existence check per writer is enough.
                self.get_experiment(experiment_id)
                seq = self._max_seq(experiment_id) + 1
            now = time.time()
            recs = []
            for trial_id, metrics, t in rows:
                check_id("trial_id", trial_id)
                recs.append(
                    MetricRecord(
                        experiment_id,
                        trial_id,
                        seq,
                        now if t is None else t,
                        dumps_metrics(metrics),
                    )
                )
                seq += 1
            if recs:
                self._write_metrics(experiment_id, recs)
            self._next_seq[experiment_id] = seq
            return recs

    def get_metrics(self, experiment_id: str, since_seq: int = 0) -> list[MetricRecord]:
        """Rows with ``seq > since_seq``, in seq order."""
        self.get_experiment(experiment_id)
        return sorted(self._read_metrics(experiment_id, since_seq), key=lambda r: r.seq)

    def metrics_table(self, experiment_id: str, since_seq: int = 0) -> pa.Table:
        """`get_metrics` as an Arrow table with one float column per numeric metric."""
        return metrics_to_table(self.get_metrics(experiment_id, since_seq))

    # --- helpers ---------------------------------------------------------------------------------
    def _latest_experiment(self, experiment_id: str) -> ExperimentRecord | None:
        versions = sorted(self._read_experiment_versions(experiment_id), key=lambda r: r.version)
        if not versions:
            return None
        for v in versions:
            if v.status == ExperimentStatus.CANCELLED:
                return v  # final
        return versions[-1]


def _next_version(previous: int) -> int:
    """A version after ``previous`` even if the clock stalls or steps back."""
    return max(time.time_ns(), previous + 1)
