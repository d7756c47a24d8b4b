"""The results store: `ResultsStore` (the contract), `MemoryStore`, `ParquetStore`, `open_store`.

``open_store(uri)`` picks the implementation from the URI::

    open_store("memory://demo")          # MemoryStore, shared by name within the process
    open_store("/data/divsweep/results") # ParquetStore on the local disk
    open_store("s3://bucket/results")    # ParquetStore on any pyarrow.fs filesystem
    open_store(None)     # the default: $DIVSWEEP_STORE_URI or ~/.cache/divsweep/store

An S3 URI carries pyarrow's S3 options in its query (pyarrow reads no endpoint from the
environment), e.g. an S3-compatible server: ``s3://bucket/results?endpoint_override=
minio.lab:9000&scheme=http``; credentials come from the usual AWS variables, files or the
instance's role, never from the URI. Paths under a store URI are built with `join_uri`, which
keeps the query at the end.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from sweeps.errors import StoreError
from sweeps.store.base import (
    EXPERIMENT_STATUSES,
    FINISHED_TRIAL_STATES,
    TRIAL_STATES,
    ExperimentRecord,
    MetricRecord,
    ResultsStore,
    TrialRecord,
)
from sweeps.store.memory import MemoryStore
from sweeps.store.parquet import ParquetStore

__all__ = [
    "EXPERIMENT_STATUSES",
    "FINISHED_TRIAL_STATES",
    "TRIAL_STATES",
    "ExperimentRecord",
    "MemoryStore",
    "MetricRecord",
    "ParquetStore",
    "ResultsStore",
    "TrialRecord",
    "default_store_uri",
    "join_uri",
    "open_store",
]

_MEMORY: dict[str, MemoryStore] = {}
_MEMORY_LOCK = threading.Lock()


def join_uri(uri: str, *parts: str) -> str:
    """``uri`` with path ``parts`` appended before its query, if it has one.

    >>> join_uri("s3://b/results?endpoint_override=127.0.0.1:9000&scheme=http", "tune", "x1")
    's3://b/results/tune/x1?endpoint_override=127.0.0.1:9000&scheme=http'
    >>> join_uri("/data/results/", "tune")
    '/data/results/tune'
    """
    base, sep, query = uri.partition("?") if "://" in uri else (uri, "", "")
    path = "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return f"{path}{sep}{query}"


def default_store_uri() -> str:
    """``$DIVSWEEP_STORE_URI`` or ``~/.cache/divsweep/store`` (never inside the git checkout)."""
    env = os.environ.get("DIVSWEEP_STORE_URI")
    if env:
        return env
    return str(Path.home() / ".cache" / "divsweep" / "store")


def open_store(uri: str | None = None) -> ResultsStore:
    """The store at ``uri`` (see the module docstring)."""
    uri = uri or default_store_uri()
    if uri.startswith("memory://"):
        with _MEMORY_LOCK:
            return _MEMORY.setdefault(uri, MemoryStore())
    if "://" not in uri:
        return ParquetStore(str(Path(uri).expanduser().absolute()))
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as e:
        raise StoreError(f"store: cannot open {uri!r}: {e}") from None
    return ParquetStore(path, fs)
