"""Saving and loading datasets as Parquet, and a content-addressed cache.

A dataset directory holds ``train.parquet``, ``test.parquet`` and ``manifest.json``. Each Parquet
file carries the spec (canonical JSON), the content hash and the generator version in its schema
metadata; the manifest is written last and means "complete". Files are written as ``*.tmp`` and
renamed into place, so readers never see half a file.

``load_dataset(dir, expect=spec)`` refuses (``DatasetMismatchError``) a directory written by
another generator version, for another spec, or whose files disagree with the manifest.
``cached_generate(spec, cache_dir)`` returns ``cache_dir/<content_hash>/``, generating it once;
concurrent callers race on an atomic directory rename and the loser reuses the winner's copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from data.errors import DatasetMismatchError, SpecError
from data.spec import DataSpec, content_hash
from data.version import GENERATOR_VERSION

if TYPE_CHECKING:
    from data.dataset import RewriteDataset

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLITS = ("train", "test")
META_SPEC = b"divsweep.spec"
META_HASH = b"divsweep.content_hash"
META_VERSION = b"divsweep.generator_version"


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


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


def save_dataset(ds: RewriteDataset, path: str | Path) -> Path:
    """Write ``ds`` to directory ``path`` (created if needed); returns the path."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    # Drop an old manifest first: until the new one lands the directory reads as incomplete.
    (out / MANIFEST).unlink(missing_ok=True)
    meta = {
        META_SPEC: _canonical(ds.spec.model_dump(mode="json")).encode(),
        META_HASH: ds.content_hash.encode(),
        META_VERSION: GENERATOR_VERSION.encode(),
    }
    for name in SPLITS:
        table = ds.split(name)  # type: ignore[arg-type]
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        target = out / f"{name}.parquet"
        tmp = target.with_name(target.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    manifest = {
        "content_hash": ds.content_hash,
        "generator_version": GENERATOR_VERSION,
        "spec": ds.spec.model_dump(mode="json"),
        "rows": {name: ds.split(name).num_rows for name in SPLITS},  # type: ignore[arg-type]
    }
    write_bytes_atomic(
        out / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    )
    return out


def load_dataset(path: str | Path, expect: DataSpec | None = None) -> RewriteDataset:
    """Load a directory written by ``save``; with ``expect``, insist it was made for that spec."""
    from data.dataset import RewriteDataset

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
    return RewriteDataset(spec, tables["train"], tables["test"])


def cached_generate(spec: DataSpec, cache_dir: str | Path) -> RewriteDataset:
    """Load ``cache_dir/<content_hash>/`` or generate it there (atomic and race-safe)."""
    from data.generate import generate

    root = Path(cache_dir)
    final = root / content_hash(spec)
    if (final / MANIFEST).exists():
        return load_dataset(final, expect=spec)
    ds = generate(spec)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{final.name}.tmp-{uuid.uuid4().hex}"
    save_dataset(ds, tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        # Another process finished first (the target exists and is not empty): keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / MANIFEST).exists():
            raise
        log.info("dataset %s was generated concurrently; reusing it", final.name[:12])
        return load_dataset(final, expect=spec)
    return ds
