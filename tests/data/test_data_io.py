"""Parquet save/load, mismatch detection and the content-addressed cache."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from data_helpers import small_spec

import data.io as data_io
from data import DatasetMismatchError, cached_generate, generate, load_dataset


def test_round_trip_and_metadata(tmp_path: Path) -> None:
    spec = small_spec(noop_fraction=0.2)
    ds = generate(spec)
    ds.save(tmp_path / "d")
    back = load_dataset(tmp_path / "d", expect=spec)
    assert back.spec == spec and back.content_hash == ds.content_hash
    assert back.train.equals(ds.train) and back.test.equals(ds.test)
    assert back.fresh.equals(ds.fresh) and back.fresh.num_rows == ds.spec.test.n_fresh
    meta = pq.read_schema(tmp_path / "d" / "train.parquet").metadata
    assert meta[b"divsweep.content_hash"].decode() == ds.content_hash
    assert json.loads(meta[b"divsweep.spec"]) == spec.model_dump(mode="json")
    assert (back.encoded("train").tokens == ds.encoded("train").tokens).all()
    assert not list((tmp_path / "d").glob("*.tmp"))


def test_same_spec_gives_byte_identical_parquet(tmp_path: Path) -> None:
    spec = small_spec()
    generate(spec).save(tmp_path / "a")
    generate(spec).save(tmp_path / "b")
    generate(spec.with_updates(seed=9)).save(tmp_path / "c")
    for name in ("train.parquet", "test.parquet"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a != (tmp_path / "c" / name).read_bytes()


def test_other_spec_is_rejected(tmp_path: Path) -> None:
    spec = small_spec()
    generate(spec).save(tmp_path)
    with pytest.raises(DatasetMismatchError, match="expected"):
        load_dataset(tmp_path, expect=spec.with_updates(noop_fraction=0.5))


def test_other_generator_version_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = small_spec()
    generate(spec).save(tmp_path)
    monkeypatch.setattr(data_io, "GENERATOR_VERSION", "999")
    with pytest.raises(DatasetMismatchError, match="version"):
        load_dataset(tmp_path, expect=spec)


def test_mixed_files_and_incomplete_dirs_are_rejected(tmp_path: Path) -> None:
    spec = small_spec()
    generate(spec).save(tmp_path / "a")
    generate(spec.with_updates(seed=2)).save(tmp_path / "b")
    (tmp_path / "a" / "test.parquet").write_bytes((tmp_path / "b" / "test.parquet").read_bytes())
    with pytest.raises(DatasetMismatchError, match="another dataset"):
        load_dataset(tmp_path / "a")
    (tmp_path / "b" / "manifest.json").unlink()
    with pytest.raises(DatasetMismatchError, match="manifest"):
        load_dataset(tmp_path / "b")


def test_cached_generate_reuses_directory(tmp_path: Path) -> None:
    spec = small_spec()
    first = cached_generate(spec, tmp_path)
    target = tmp_path / spec.content_hash
    assert (target / "manifest.json").exists()
    stamp = (target / "train.parquet").stat().st_mtime_ns
    again = cached_generate(spec, tmp_path)
    assert again.train.equals(first.train)
    assert (target / "train.parquet").stat().st_mtime_ns == stamp  # not rewritten


def _worker(cache: str) -> str:
    ds = cached_generate(small_spec(n_instructions=50, examples_per_instruction=40), cache)
    return ds.content_hash


def test_cached_generate_is_race_safe(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        hashes = pool.map(_worker, [str(tmp_path)] * 3)
    assert len(set(hashes)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [hashes[0]]  # no leftover *.tmp-* dirs
    load_dataset(tmp_path / hashes[0])
