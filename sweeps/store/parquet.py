"""`ParquetStore`: the results store as a Parquet dataset on any `pyarrow.fs` filesystem.

Layout under the root (every file is written once and never changed)::

    <root>/experiments/<experiment_id>/experiment/<version>-<rand>.parquet   one row per status
    <root>/experiments/<experiment_id>/trials/<version>-<rand>.parquet       trial state rows
    <root>/experiments/<experiment_id>/metrics/<first>-<last>-<rand>.parquet metric rows, seq range

Writes are atomic: a file is written as ``name.tmp``, flushed (and fsync'ed locally), then renamed;
readers skip ``*.tmp``, so they see whole files or nothing. Because files are immutable, a reader
caches what it parsed and only opens files it has not seen. Metric files carry their seq range in
the name, so ``get_metrics(since_seq=n)`` opens only files with newer rows. The metric files also
hold one float column per numeric metric, so the directory reads directly as a dataset, e.g.
``pyarrow.dataset.dataset(root + "/experiments/e1/metrics", format="parquet")`` (deduplicate by
``seq`` there: see compaction).

**Compaction.** A sweep writes one metric file per report, and a read of a running experiment
used to open every one of them (10^4 files for 10^4 rows). So the writer merges them as it goes,
like a counter in base `COMPACT_FANIN`: size class L holds FANIN^L to FANIN^(L+1) - 1 rows, and
whenever the newest files (those of class L or smaller at the end of the seq order) include
FANIN files of class L, they become one file covering their seq range. An experiment then has
at most about 2 x FANIN x log_FANIN(rows) files, and each row is written about log_FANIN(rows)
times (measured: 5,000 one-row writes leave 9 files, each row written 4.7 times in all; a fresh
read takes 20 ms instead of 3.4 s: `benchmarks/bench_sweep.py`). The writer keeps the small
files it wrote in memory until they merge (`KEEP_CLASSES`), so merging reads nothing back;
one-row ingest then runs at 0.95x (10^4 rows) to 1.6x (10^3 rows, where a directory of 10^3
files slows the uncompacted store) of the rate without compaction (`bench_service.py
--curves`). The merged file is written (atomically) before the files it replaces are deleted;
a file whose seq range lies inside another's is a leftover of that and readers skip it, so a
crash between the two steps, or a reader listing between them, sees every row once. A reader
whose listed file was deleted before it opened it lists again. Only an experiment's (single)
metrics writer compacts.

Example::

    store = ParquetStore("/tmp/results")                 # or open_store("s3://bucket/results")
    store.create_experiment("e1", name="demo", spec_json="{}", spec_hash="h")
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Hashable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeps.store.base import (
    EXPERIMENT_SCHEMA,
    METRIC_BASE_COLUMNS,
    TRIAL_SCHEMA,
    ExperimentRecord,
    MetricRecord,
    ResultsStore,
    TrialRecord,
    metrics_to_table,
    records_to_table,
    table_to_records,
)

#: Metric files of one size class that merge into one (see the module docstring).
COMPACT_FANIN = 8
#: Size classes below this stay in the writer's memory until merged (`ParquetStore._keep`):
#: at most about FANIN files of each, < 4,700 rows with fan-in 8.
KEEP_CLASSES = 3


def _size_class(rows: int) -> int:
    """0 for 1-7 rows, 1 for 8-63, 2 for 64-511, ... (with `COMPACT_FANIN` 8)."""
    level = 0
    while rows >= COMPACT_FANIN:
        rows //= COMPACT_FANIN
        level += 1
    return level


def _mergeable_tail(classes: list[int]) -> int:
    """How many of the newest files (size ``classes`` in seq order) merge now, 0 for none: the
    newest files of class L or smaller, once `COMPACT_FANIN` of them are of exactly class L
    (smaller ones in between, from odd write sizes, go along); the smallest such L."""
    for level in range(max(classes, default=0) + 1):
        tail = 0
        while tail < len(classes) and classes[-1 - tail] <= level:
            tail += 1
        if sum(c == level for c in classes[len(classes) - tail :]) >= COMPACT_FANIN:
            return tail
    return 0


def _live(files: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """``files`` (first seq, last seq, path), sorted, without those whose range lies within
    another file's: leftovers of a compaction that wrote its merged file but was interrupted
    before deleting them."""
    out: list[tuple[int, int, str]] = []
    for first, last, path in sorted(files, key=lambda f: (f[0], -f[1], f[2])):
        if out and last <= out[-1][1]:
            continue  # inside the previous (wider) file's range
        out.append((first, last, path))
    return out


class ParquetStore(ResultsStore):
    """A store rooted at ``root`` on ``filesystem`` (local when not given)."""

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None) -> None:
        super().__init__()
        self.fs = filesystem if filesystem is not None else pafs.LocalFileSystem()
        self.root = root.rstrip("/") or "/"
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self._cache: dict[str, list[Any]] = {}  # file path -> parsed records (files are immutable)
        # experiment -> its live metric files, as this (the single) writer left them: listed
        # once, then kept up to date, so that a write does not list the directory.
        self._written: dict[str, list[tuple[int, int, str]]] = {}
        # small metric files this writer wrote and has not merged yet, by path (`_keep`)
        self._unmerged: dict[str, pa.Table] = {}

    def __repr__(self) -> str:
        return f"ParquetStore({self.root!r}, {type(self.fs).__name__})"

    # --- paths and files ---------------------------------------------------------------------
    def _dir(self, experiment_id: str, kind: str) -> str:
        return f"{self.root}/experiments/{experiment_id}/{kind}"

    def _list(self, directory: str) -> list[str]:
        sel = pafs.FileSelector(directory, allow_not_found=True)
        return sorted(
            i.path
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File and i.path.endswith(".parquet")
        )

    def _write_table(self, directory: str, name: str, table: pa.Table) -> None:
        final = f"{directory}/{name}"
        tmp = final + ".tmp"
        if self._local:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "wb") as f:
                pq.write_table(table, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            return
        self.fs.create_dir(directory, recursive=True)
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        # Object stores publish an object whole on close, so the move is a rename for readers.
        self.fs.move(tmp, final)

    def _read(self, path: str, cls: type[Any], columns: Sequence[str] | None = None) -> list[Any]:
        cached = self._cache.get(path)
        if cached is None:
            table = pq.read_table(
                path, filesystem=self.fs, columns=list(columns) if columns else None
            )
            cached = table_to_records(table, cls)
            self._cache[path] = cached
        return cached

    @staticmethod
    def _name(version: int) -> str:
        return f"{version:020d}-{uuid.uuid4().hex[:8]}.parquet"

    # --- primitives --------------------------------------------------------------------------
    def _write_experiment(self, record: ExperimentRecord) -> None:
        self._write_table(
            self._dir(record.experiment_id, "experiment"),
            self._name(record.version),
            records_to_table([record], EXPERIMENT_SCHEMA),
        )

    def _read_experiment_versions(self, experiment_id: str) -> list[ExperimentRecord]:
        out: list[ExperimentRecord] = []
        for p in self._list(self._dir(experiment_id, "experiment")):
            out.extend(self._read(p, ExperimentRecord))
        return out

    def _experiment_ids(self) -> list[str]:
        sel = pafs.FileSelector(f"{self.root}/experiments", allow_not_found=True)
        return sorted(
            i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.Directory
        )

    def state_token(self, experiment_id: str) -> Hashable | None:
        # Files are written once under unique names and never changed (compaction replaces
        # files by new names): the same names mean the same rows.
        return tuple(
            tuple(self._list(self._dir(experiment_id, kind)))
            for kind in ("experiment", "trials", "metrics")
        )

    def _write_trials(self, experiment_id: str, records: Sequence[TrialRecord]) -> None:
        version = max(r.version for r in records)
        self._write_table(
            self._dir(experiment_id, "trials"),
            self._name(version),
            records_to_table(records, TRIAL_SCHEMA),
        )

    def _read_trial_versions(self, experiment_id: str) -> list[TrialRecord]:
        out: list[TrialRecord] = []
        for p in self._list(self._dir(experiment_id, "trials")):
            out.extend(self._read(p, TrialRecord))
        return out

    def _write_metrics(self, experiment_id: str, records: Sequence[MetricRecord]) -> None:
        files = self._written.get(experiment_id)
        if files is None:
            every = self._all_metric_files(experiment_id)
            files = self._written[experiment_id] = _live(every)
            live = {p for _, _, p in files}
            self._delete([p for _, _, p in every if p not in live])  # an interrupted merge's
        directory = self._dir(experiment_id, "metrics")
        first, last = records[0].seq, records[-1].seq
        name = self._metric_name(first, last)
        table = metrics_to_table(records)
        self._write_table(directory, name, table)
        files.append((first, last, f"{directory}/{name}"))
        self._keep(f"{directory}/{name}", table)
        self._compact(directory, files)

    def _keep(self, path: str, table: pa.Table) -> None:
        """Hold a small file this writer wrote until it is merged: merging it then needs no
        read-back (reading the files back was 40 % of one-row ingest with compaction)."""
        if _size_class(table.num_rows) < KEEP_CLASSES:
            self._unmerged[path] = table

    @staticmethod
    def _metric_name(first: int, last: int) -> str:
        return f"{first:012d}-{last:012d}-{uuid.uuid4().hex[:8]}.parquet"

    def _all_metric_files(self, experiment_id: str) -> list[tuple[int, int, str]]:
        out = []
        for p in self._list(self._dir(experiment_id, "metrics")):
            first, last, _ = p.rsplit("/", 1)[-1].split("-", 2)
            out.append((int(first), int(last), p))
        return out

    def _metric_files(self, experiment_id: str) -> list[tuple[int, int, str]]:
        return _live(self._all_metric_files(experiment_id))

    def _compact(self, directory: str, files: list[tuple[int, int, str]]) -> None:
        """Merge the newest of ``files`` (seq order, updated in place) while `COMPACT_FANIN` of
        them are of one size class or smaller."""
        while tail := _mergeable_tail([_size_class(last - first + 1) for first, last, _ in files]):
            merge = files[-tail:]
            table = pa.concat_tables(
                [self._merge_input(p) for _, _, p in merge], promote_options="default"
            )
            first, last = merge[0][0], merge[-1][1]
            name = self._metric_name(first, last)
            self._write_table(directory, name, table)
            self._delete([p for _, _, p in merge])
            files[-tail:] = [(first, last, f"{directory}/{name}")]
            self._keep(f"{directory}/{name}", table)

    def _merge_input(self, path: str) -> pa.Table:
        kept = self._unmerged.pop(path, None)
        return kept if kept is not None else pq.read_table(path, filesystem=self.fs)

    def _delete(self, paths: Sequence[str]) -> None:
        for p in paths:
            try:
                self.fs.delete_file(p)
            except FileNotFoundError:
                pass
            self._cache.pop(p, None)

    def _read_metrics(self, experiment_id: str, since_seq: int) -> list[MetricRecord]:
        # A compaction may delete a listed file before it is opened; its rows are then in a
        # file that the next listing shows.
        for _ in range(4):
            try:
                return self._read_metrics_once(experiment_id, since_seq)
            except FileNotFoundError:
                pass
        return self._read_metrics_once(experiment_id, since_seq)

    def _read_metrics_once(self, experiment_id: str, since_seq: int) -> list[MetricRecord]:
        out: list[MetricRecord] = []
        for _, last, p in self._metric_files(experiment_id):
            if last > since_seq:
                rows = self._read(p, MetricRecord, METRIC_BASE_COLUMNS)
                out.extend(r for r in rows if r.seq > since_seq)
        return out

    def _max_seq(self, experiment_id: str) -> int:
        return max((last for _, last, _ in self._metric_files(experiment_id)), default=0)
