"""Reading and writing a dataset's tables as Parquet (the `RewriteDataset` and the cache build on
this; this module knows neither).

A dataset directory holds ``train.parquet``, ``test.parquet``, ``fresh.parquet`` and
``manifest.json``. Each Parquet
file carries the spec (canonical JSON), the content hash and the generator version in its schema
metadata; the manifest is written last and means "complete". Files are written as ``*.tmp`` and
renamed into place, so readers never see half a file.

``read_splits(dir, expect=spec)`` refuses (``DatasetMismatchError``) a directory written by
another generator version, for another spec, or whose files disagree with the manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data.errors import DatasetMismatchError, SpecError
from data.spec import DataSpec, canonical_json, content_hash
from data.version import GENERATOR_VERSION

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLITS = ("train", "test", "fresh")
META_SPEC = b"divsweep.spec"
META_HASH = b"divsweep.content_hash"
META_VERSION = b"divsweep.generator_version"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Writes ``<name>.tmp``, fsyncs it and renames it over ``path`` (readers ignore ``*.tmp``).
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_splits(path: str | Path, spec: DataSpec, tables: Mapping[str, pa.Table]) -> Path:
    """Write the ``train``, ``test`` and ``fresh`` tables of ``spec`` to directory ``path``
    (created if needed), the manifest last; returns the path."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    # Drop an old manifest first: until the new one lands the directory reads as incomplete.
    (out / MANIFEST).unlink(missing_ok=True)
    digest = content_hash(spec)
    meta = {
        META_SPEC: canonical_json(spec.model_dump(mode="json")).encode(),
        META_HASH: digest.encode(),
        META_VERSION: GENERATOR_VERSION.encode(),
    }
    for name in SPLITS:
        table = tables[name]
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        target = out / f"{name}.parquet"
        tmp = target.with_name(target.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    manifest = {
        "content_hash": digest,
        "generator_version": GENERATOR_VERSION,
        "spec": spec.model_dump(mode="json"),
        "rows": {name: tables[name].num_rows for name in SPLITS},
    }
    write_bytes_atomic(
        out / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    )
    return out


def read_splits(
    path: str | Path, expect: DataSpec | None = None
) -> tuple[DataSpec, dict[str, pa.Table]]:
    """The spec and the ``train``/``test``/``fresh`` tables of a directory `write_splits`
    wrote; with ``expect``, insist it was made for that spec (else `DatasetMismatchError`)."""
    src = Path(path)
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise DatasetMismatchError(f"{src}: no {MANIFEST}, not a complete dataset") from None
    version = manifest.get("generator_version")
    if version != GENERATOR_VERSION:
        raise DatasetMismatchError(
            f"{src}: written by generator version {version!r}, this is {GENERATOR_VERSION!r}"
        )
    try:
        spec = DataSpec.model_validate(manifest["spec"])
    except SpecError as exc:
        raise DatasetMismatchError(f"{src}: stored spec is not valid here: {exc}") from None
    stored = manifest.get("content_hash")
    if content_hash(spec) != stored:
        raise DatasetMismatchError(f"{src}: manifest hash {stored} does not match its spec")
    if expect is not None and content_hash(expect) != stored:
        raise DatasetMismatchError(
            f"{src}: holds data for spec hash {stored[:12]}, expected {content_hash(expect)[:12]}"
        )
    tables: dict[str, pa.Table] = {}
    for name in SPLITS:
        table = pq.read_table(src / f"{name}.parquet")
        meta = table.schema.metadata or {}
        if meta.get(META_HASH, b"").decode() != stored:
            raise DatasetMismatchError(f"{src}/{name}.parquet belongs to another dataset")
        tables[name] = table.replace_schema_metadata(None)
    return spec, tables


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a finished dataset directory (its manifest is written last)."""
    return (Path(path) / MANIFEST).exists()
