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
``pyarrow.dataset.dataset(root + "/experiments/e1/metrics", format="parquet")``.

Example::

    store = ParquetStore("/tmp/results")                 # or open_store("s3://bucket/results")
    store.create_experiment("e1", name="demo", spec_json="{}", spec_hash="h")
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
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


class ParquetStore(ResultsStore):
    """A store rooted at ``root`` on ``filesystem`` (local when not given)."""

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None) -> None:
        super().__init__()
        self.fs = filesystem if filesystem is not None else pafs.LocalFileSystem()
        self.root = root.rstrip("/") or "/"
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self._cache: dict[str, list[Any]] = {}  # file path -> parsed records (files are immutable)

    def __repr__(self) -> str:
        return f"ParquetStore({self.root!r}, {type(self.fs).__name__})"

    # --- paths and files ---------------------------------------------------------------------
    def _dir(self, experiment_id: str, kind: str) -> str:
        return f"{self.root}/experiments/{experiment_id}/{kind}"

    def _list(self, directory: str) -> list[str]:
        sel = pafs.FileSelector(directory, allow_not_found=True)
        return sorted(
            i.path for i in self.fs.get_file_info(sel)
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
            table = pq.read_table(path, filesystem=self.fs,
                                  columns=list(columns) if columns else None)
            cached = table_to_records(table, cls)
            self._cache[path] = cached
        return cached

    @staticmethod
    def _name(version: int) -> str:
        return f"{version:020d}-{uuid.uuid4().hex[:8]}.parquet"

    # --- primitives --------------------------------------------------------------------------
    def _write_experiment(self, record: ExperimentRecord) -> None:
        self._write_table(self._dir(record.experiment_id, "experiment"), self._name(record.version),
                          records_to_table([record], EXPERIMENT_SCHEMA))

    def _read_experiment_versions(self, experiment_id: str) -> list[ExperimentRecord]:
        out: list[ExperimentRecord] = []
        for p in self._list(self._dir(experiment_id, "experiment")):
            out.extend(self._read(p, ExperimentRecord))
        return out

    def _experiment_ids(self) -> list[str]:
        sel = pafs.FileSelector(f"{self.root}/experiments", allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory)

    def _write_trials(self, experiment_id: str, records: Sequence[TrialRecord]) -> None:
        version = max(r.version for r in records)
        self._write_table(self._dir(experiment_id, "trials"), self._name(version),
                          records_to_table(records, TRIAL_SCHEMA))

    def _read_trial_versions(self, experiment_id: str) -> list[TrialRecord]:
        out: list[TrialRecord] = []
        for p in self._list(self._dir(experiment_id, "trials")):
            out.extend(self._read(p, TrialRecord))
        return out

    def _write_metrics(self, experiment_id: str, records: Sequence[MetricRecord]) -> None:
        name = f"{records[0].seq:012d}-{records[-1].seq:012d}-{uuid.uuid4().hex[:8]}.parquet"
        self._write_table(self._dir(experiment_id, "metrics"), name, metrics_to_table(records))

    def _metric_files(self, experiment_id: str) -> list[tuple[int, int, str]]:
        out = []
        for p in self._list(self._dir(experiment_id, "metrics")):
            first, last, _ = p.rsplit("/", 1)[-1].split("-", 2)
            out.append((int(first), int(last), p))
        return out

    def _read_metrics(self, experiment_id: str, since_seq: int) -> list[MetricRecord]:
        out: list[MetricRecord] = []
        for _, last, p in self._metric_files(experiment_id):
            if last > since_seq:
                rows = self._read(p, MetricRecord, METRIC_BASE_COLUMNS)
                out.extend(r for r in rows if r.seq > since_seq)
        return out

    def _max_seq(self, experiment_id: str) -> int:
        return max((last for _, last, _ in self._metric_files(experiment_id)), default=0)
