"""Reading an experiment's results for the API: progress, the event feed, tables and the plot.

:class:`ResultsView` is the seam between the routes and ``sweeps``: the routes only see this
protocol, so unit tests swap in an in-memory fake through ``Depends``. :class:`StoreResults`
implements it over ``sweeps.open_store(uri)`` and the ``sweeps`` report functions.

Best-so-far is kept incrementally: each call reads only the metric rows after the last ``seq``
it saw, so a status request costs O(new rows), not O(all rows).

Example::

    view = StoreResults("/tmp/ds/results")
    view.progress("x0123456789abcdef", metric="test_acc", mode="max")
    # TrialCounts(counts={'pending': 0, 'running': 2, ...}, results=14, best=0.93, best_trial='t3')
    [e.seq for e in view.events("x0123456789abcdef", since_seq=10, limit=100)]   # [11, 12, 13, 14]
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from service.errors import BackendError, NotFoundError
from sweeps.reporting.charts import chart_data
from sweeps.reporting.plot import plot_phase_diagram
from sweeps.reporting.tables import results as results_table
from sweeps.reporting.tables import summary as summary_table
from sweeps.specs.lifecycle import TERMINAL_STATUSES, TRIAL_STATES, ExperimentStatus
from sweeps.specs.spec import ExperimentSpec
from sweeps.store import open_store
from sweeps.store.base import ExperimentRecord

log = logging.getLogger(__name__)

TABLE_CACHE_SIZE = 8
PROGRESS_CACHE_SIZE = 4096  # a few hundred bytes each


@dataclass(frozen=True)
class ResultEvent:
    """One stored result row as an SSE event (``id`` = ``seq``)."""

    seq: int
    trial_id: str
    time: float
    metrics: dict[str, Any]

    def as_json(self) -> str:
        return json.dumps(
            {"seq": self.seq, "trial_id": self.trial_id, "time": self.time, "metrics": self.metrics}
        )


@dataclass(frozen=True)
class TrialCounts:
    counts: dict[str, int]
    results: int
    best: float | None
    best_trial: str | None
    store_status: ExperimentStatus | None = None


class ResultsView(Protocol):
    """What the routes read from the results store."""

    def progress(self, exp_id: str, metric: str, mode: str) -> TrialCounts: ...

    def events(self, exp_id: str, since_seq: int, limit: int) -> list[ResultEvent]: ...

    def table(self, exp_id: str) -> pa.Table: ...

    def summary(self, exp_id: str) -> pa.Table: ...

    def plot_png(self, exp_id: str) -> bytes: ...

    def charts(self, exp_id: str) -> dict[str, Any]: ...

    def cancel(self, exp_id: str) -> None: ...

    def check_writable(self) -> None: ...

    def record(self, exp_id: str) -> ExperimentRecord | None:
        """The store's experiment record, None when the store does not hold it."""
        ...

    def records(self) -> list[ExperimentRecord]:
        """Every experiment the store holds, oldest first."""
        ...


@dataclass
class _Best:
    last_seq: int = 0
    n: int = 0
    best: float | None = None
    best_trial: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class StoreResults:
    """:class:`ResultsView` over a sweeps results store URI."""

    def __init__(self, store_uri: str) -> None:
        self.store_uri = store_uri
        self._store: Any = None
        self._best: dict[str, _Best] = {}
        self._tables: dict[str, pa.Table] = {}  # finished experiments only, oldest first
        self._live: dict[str, tuple[Hashable, pa.Table]] = {}  # running: (state token, table)
        self._progress: dict[tuple[str, str, str], tuple[Hashable, TrialCounts]] = {}
        self._lock = threading.Lock()

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.store_uri)
            return self._store

    def _known(self, exp_id: str) -> bool:
        return bool(self._open().has_experiment(exp_id))

    def progress(self, exp_id: str, metric: str, mode: str) -> TrialCounts:
        """Counts by state and the best metric so far; computed once per state of the store
        (`state_token`), so repeated status requests of an unchanged experiment read only the
        directory listings."""
        store = self._open()
        token = store.state_token(exp_id)
        key = (exp_id, metric, mode)
        with self._lock:
            hit = self._progress.get(key)
        if hit is not None and token is not None and hit[0] == token:
            return hit[1]
        out = self._progress_now(store, exp_id, metric, mode)
        if token is not None:
            with self._lock:
                _put_bounded(self._progress, key, (token, out), PROGRESS_CACHE_SIZE)
        return out

    def _progress_now(self, store: Any, exp_id: str, metric: str, mode: str) -> TrialCounts:
        if not store.has_experiment(exp_id):
            # The job has not started writing yet.
            return TrialCounts(dict.fromkeys(TRIAL_STATES, 0), 0, None, None, None)
        counts = {k: int(v) for k, v in store.progress(exp_id).items() if k in TRIAL_STATES}
        status = store.get_experiment(exp_id).status
        with self._lock:
            b = self._best.setdefault(exp_id, _Best())
        with b.lock:
            for row in store.get_metrics(exp_id, since_seq=b.last_seq):
                b.last_seq, b.n = row.seq, b.n + 1
                v = row.metrics.get(metric)
                if isinstance(v, int | float) and not isinstance(v, bool) and v == v:
                    better = b.best is None or (v > b.best if mode == "max" else v < b.best)
                    if better:
                        b.best, b.best_trial = float(v), row.trial_id
            return TrialCounts(counts, b.n, b.best, b.best_trial, ExperimentStatus(status))

    def events(self, exp_id: str, since_seq: int, limit: int) -> list[ResultEvent]:
        store = self._open()
        if not store.has_experiment(exp_id):
            return []
        rows = store.get_metrics(exp_id, since_seq=since_seq)[:limit]
        return [ResultEvent(r.seq, r.trial_id, r.time, r.metrics) for r in rows]

    def table(self, exp_id: str) -> pa.Table:
        """All result rows, read once per state of the store: a finished experiment's table is
        kept (its rows can no longer change), a running one's under the store's
        `state_token`, which changes with every write; reading 10**4 rows costs ~0.2 s."""
        with self._lock:
            cached = self._tables.get(exp_id)
        if cached is not None:
            return cached
        if not self._known(exp_id):
            raise NotFoundError(f"experiment {exp_id!r} has no results yet")
        store = self._open()
        # Token and status first: rows read after them are at least that new.
        token = store.state_token(exp_id)
        with self._lock:
            live = self._live.get(exp_id)
        if live is not None and token is not None and live[0] == token:
            return live[1]
        final = store.get_experiment(exp_id).status in TERMINAL_STATUSES
        table: pa.Table = results_table(exp_id, store=store)
        with self._lock:
            if final:
                _put_bounded(self._tables, exp_id, table, TABLE_CACHE_SIZE)
                self._live.pop(exp_id, None)
            elif token is not None:
                _put_bounded(self._live, exp_id, (token, table), TABLE_CACHE_SIZE)
        return table

    def summary(self, exp_id: str) -> pa.Table:
        if not self._known(exp_id):
            raise NotFoundError(f"experiment {exp_id!r} has no results yet")
        table: pa.Table = summary_table(exp_id, store=self._open())
        return table

    def plot_png(self, exp_id: str) -> bytes:
        """The phase diagram of the spec's metric over its independent axes."""
        table = self.summary(exp_id)
        spec = ExperimentSpec.model_validate_json(self._open().get_experiment(exp_id).spec_json)
        independent = spec.independent_fields
        return plot_phase_diagram(
            table,
            metric=spec.metric,
            independent=independent or None,
            title=f"{spec.name} ({exp_id})",
        )

    def charts(self, exp_id: str) -> dict[str, Any]:
        """What the results page draws (`sweeps.reporting.charts`), running trials included."""
        table = self.table(exp_id)  # metrics before trials: every row's trial is listed below
        store = self._open()
        spec = ExperimentSpec.model_validate_json(store.get_experiment(exp_id).spec_json)
        return chart_data(spec, table, store.get_trials(exp_id))

    def cancel(self, exp_id: str) -> None:
        store = self._open()
        if store.has_experiment(exp_id):
            store.cancel_experiment(exp_id)

    def record(self, exp_id: str) -> ExperimentRecord | None:
        store = self._open()
        if not store.has_experiment(exp_id):
            return None
        rec: ExperimentRecord = store.get_experiment(exp_id)
        return rec

    def records(self) -> list[ExperimentRecord]:
        recs: list[ExperimentRecord] = self._open().list_experiments()
        return recs

    def check_writable(self) -> None:
        """Write and delete a ``.readyz-*.tmp`` file under the store root (readers skip ``*.tmp``).

        A probe file rather than a probe experiment, so /readyz never shows up in the results.
        """
        if self.store_uri.startswith("memory://"):
            return
        try:
            fs, root = pafs.FileSystem.from_uri(self._uri_for_fs())
            fs.create_dir(root, recursive=True)
            probe = f"{root.rstrip('/')}/.readyz-{uuid.uuid4().hex[:12]}.tmp"
            with fs.open_output_stream(probe) as f:
                f.write(b"ok")
            fs.delete_file(probe)
        except Exception as e:  # any failure means "not ready"; the message says which
            raise BackendError(f"results store {self.store_uri} is not writable: {e}") from e

    def _uri_for_fs(self) -> str:
        # pyarrow wants absolute local paths; a relative store path is relative to our cwd.
        if "://" in self.store_uri:
            return self.store_uri
        return os.path.abspath(self.store_uri)


def _put_bounded(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Store ``value`` under ``key``, dropping the oldest entries beyond ``limit`` (dicts keep
    insertion order). The caller holds the lock."""
    cache[key] = value
    while len(cache) > limit:
        cache.pop(next(iter(cache)))


def table_bytes(table: pa.Table, fmt: str) -> tuple[bytes, str]:
    """Serialise a table as csv or parquet; returns ``(bytes, media type)``."""
    buf = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, buf)
        return buf.getvalue(), "text/csv"
    if fmt == "parquet":
        pq.write_table(table, buf)
        return buf.getvalue(), "application/vnd.apache.parquet"
    raise ValueError(f"format={fmt!r} must be csv or parquet")


def table_records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN -> None)."""
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for k, v in row.items():
            if isinstance(v, float) and v != v:
                row[k] = None
    return rows
