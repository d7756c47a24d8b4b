"""The results-store contract (see `sweeps.store.base`), run against every implementation."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sweeps.errors import StoreError, UnknownExperimentError
from sweeps.store import (
    TRIAL_STATES,
    MemoryStore,
    ParquetStore,
    ResultsStore,
    TrialRecord,
    open_store,
)
from sweeps.store.base import metrics_to_table
from sweeps.store.parquet import COMPACT_FANIN

Factory = Callable[[], ResultsStore]


@pytest.fixture(
    params=["memory", "parquet-local", "parquet-mockfs", "open_store-path", "parquet-s3"]
)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory: each call opens a new store instance on the same underlying storage.

    ``parquet-s3`` is an ``s3://`` URI on a real S3 server (moto's, `servers.s3_server`), a new
    bucket per test, opened through `open_store` as a deployment's would be.
    """
    kind = request.param
    if kind == "memory":
        name = f"memory://contract-{uuid.uuid4().hex}"
        yield lambda: open_store(name)
    elif kind == "parquet-local":
        yield lambda: ParquetStore(str(tmp_path / "store"))
    elif kind == "parquet-mockfs":
        # A non-local pyarrow filesystem: the code path an s3:// URI takes.
        fs = pafs._MockFileSystem()
        yield lambda: ParquetStore("bucket/results", fs)
    elif kind == "parquet-s3":
        uri = request.getfixturevalue("s3").new_bucket()
        yield lambda: open_store(uri)
    else:
        yield lambda: open_store(str(tmp_path / "via-uri"))


def _new(store: ResultsStore, eid: str = "e1", spec_hash: str = "h1") -> None:
    store.create_experiment(eid, name="demo", spec_json='{"a": 1}', spec_hash=spec_hash)


def _trial(tid: str, state: str, eid: str = "e1") -> TrialRecord:
    return TrialRecord(
        eid,
        tid,
        trial_key=f"key-{tid}",
        params_json=json.dumps({"seed": 0}),
        data_hash="d",
        state=state,
        started_at=time.time(),
    )


def test_create_and_get(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    rec = store.get_experiment("e1")
    assert (rec.experiment_id, rec.name, rec.status) == ("e1", "demo", "pending")
    assert rec.spec_hash == "h1"
    assert rec.spec_json == '{"a": 1}' and rec.created_at > 0 and rec.error is None
    # visible from a second instance on the same storage
    assert make_store().get_experiment("e1").spec_hash == "h1"


def test_create_twice(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    with pytest.raises(StoreError, match="already exists"):
        _new(store)
    again = store.create_experiment(
        "e1", name="demo", spec_json="{}", spec_hash="h1", exist_ok=True
    )
    assert again.status == "pending"
    with pytest.raises(StoreError, match="spec differs"):
        store.create_experiment("e1", name="demo", spec_json="{}", spec_hash="other", exist_ok=True)


def test_unknown_experiment(make_store: Factory) -> None:
    store = make_store()
    for call in (
        store.get_experiment,
        store.get_trials,
        store.get_metrics,
        store.progress,
        store.cancel_experiment,
    ):
        with pytest.raises(UnknownExperimentError, match="no experiment 'nope'"):
            call("nope")
    with pytest.raises(UnknownExperimentError):
        store.append_metrics("nope", "t1", {"a": 1})


def test_bad_ids_rejected(make_store: Factory) -> None:
    store = make_store()
    with pytest.raises(StoreError, match="experiment_id"):
        store.create_experiment("../escape", name="x", spec_json="{}", spec_hash="h")
    _new(store)
    with pytest.raises(StoreError, match="trial_id"):
        store.put_trial(_trial("a/b", "running"))
    with pytest.raises(StoreError, match="state"):
        store.put_trial(_trial("t1", "exploded"))


def test_list_experiments_in_creation_order(make_store: Factory) -> None:
    store = make_store()
    for eid in ("zeta", "alpha", "mid"):
        _new(store, eid)
    assert [e.experiment_id for e in make_store().list_experiments()] == ["zeta", "alpha", "mid"]


def test_status_updates(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    store.set_experiment_status("e1", "running")
    rec = store.set_experiment_status("e1", "failed", error="boom")
    assert make_store().get_experiment("e1").status == "failed"
    assert rec.error == "boom" and rec.updated_at >= rec.created_at
    with pytest.raises(StoreError, match="status"):
        store.set_experiment_status("e1", "exploded")


def test_trial_versions_latest_wins(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    store.put_trial(_trial("t1", "running"))
    store.put_trial(_trial("t2", "running"))
    store.put_trial(TrialRecord("e1", "t1", "key-t1", "{}", "d", "failed", error="ValueError: x"))
    trials = make_store().get_trials("e1")
    assert [(t.trial_id, t.state) for t in trials] == [("t1", "failed"), ("t2", "running")]
    assert trials[0].error == "ValueError: x"
    assert trials[1].params == {"seed": 0}


def test_progress_counts_every_state(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    store.put_trials([_trial(f"t{i}", s) for i, s in enumerate(TRIAL_STATES)])
    store.put_trial(_trial("extra", "complete"))
    counts = make_store().progress("e1")
    assert counts == {**dict.fromkeys(TRIAL_STATES, 1), "complete": 2, "total": 7}


def test_metrics_seq_and_since(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    _new(store, "other")
    recs = [store.append_metrics("e1", "t1", {"step": i, "test_acc": i / 10}) for i in range(5)]
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    # per-experiment numbering
    assert store.append_metrics("other", "t1", {"step": 0}).seq == 1
    batch = store.append_metrics_batch("e1", [("t2", {"step": 9}, 123.0), ("t2", {"x": "s"}, None)])
    assert [b.seq for b in batch] == [6, 7] and batch[0].time == 123.0
    reader = make_store()
    assert [r.seq for r in reader.get_metrics("e1")] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.seq for r in reader.get_metrics("e1", since_seq=4)] == [5, 6, 7]
    assert reader.get_metrics("e1", since_seq=7) == []
    assert reader.get_metrics("e1", since_seq=2)[0].metrics == {"step": 2, "test_acc": 0.2}
    # a new writer instance continues the numbering
    assert make_store().append_metrics("e1", "t3", {"step": 1}).seq == 8


def test_many_small_writes_read_back_whole(make_store: Factory) -> None:
    """70 one-row writes (the Parquet store compacts them on the way: 8 -> 1, 64 -> 1)."""
    store = make_store()
    _new(store)
    for i in range(70):
        store.append_metrics("e1", f"t{i % 3}", {"step": i})
    rows = make_store().get_metrics("e1")
    assert [r.seq for r in rows] == list(range(1, 71))
    assert [r.metrics["step"] for r in rows] == list(range(70))
    assert make_store().metrics_table("e1", since_seq=60).column("step").to_pylist() == list(
        map(float, range(60, 70))
    )


def test_metrics_table_columns(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    store.append_metrics(
        "e1", "t1", {"step": 1, "test_acc": 0.5, "note": "hi", "loss": float("nan")}
    )
    store.append_metrics("e1", "t2", {"step": 2, "test_acc_op": 0.25})
    table = make_store().metrics_table("e1")
    assert table.column_names[:5] == ["experiment_id", "trial_id", "seq", "time", "metrics_json"]
    # NaN is stored as null (valid JSON for every reader), so "loss" never becomes a column
    assert set(table.column_names[5:]) == {"step", "test_acc", "test_acc_op"}
    rows = table.to_pylist()
    assert rows[0]["test_acc"] == 0.5 and rows[1]["test_acc"] is None
    assert json.loads(rows[0]["metrics_json"]) == {
        "step": 1,
        "test_acc": 0.5,
        "note": "hi",
        "loss": None,
    }
    assert make_store().metrics_table("e1", since_seq=1).num_rows == 1


def test_state_token_changes_with_every_write_and_only_then(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    seen = [store.state_token("e1")]
    assert seen[0] is not None and store.state_token("e1") == seen[0]
    writes: list[Callable[[], object]] = [
        lambda: store.set_experiment_status("e1", "running"),
        lambda: store.put_trial(TrialRecord("e1", "t1", state="running")),
        lambda: store.append_metrics("e1", "t1", {"step": 1}),
        *[lambda: store.append_metrics("e1", "t1", {"step": 2})] * (COMPACT_FANIN + 1),
    ]
    for write in writes:
        write()
        token = store.state_token("e1")
        assert token not in seen and make_store().state_token("e1") == token
        seen.append(token)


def test_cancel_experiment(make_store: Factory) -> None:
    store = make_store()
    _new(store)
    store.set_experiment_status("e1", "running")
    store.put_trials(
        [
            _trial("done", "complete"),
            _trial("run", "running"),
            _trial("wait", "pending"),
            _trial("bad", "failed"),
        ]
    )
    store.append_metrics("e1", "run", {"step": 1})
    rec = store.cancel_experiment("e1")
    assert rec.status == "cancelled"
    reader = make_store()
    states = {t.trial_id: t.state for t in reader.get_trials("e1")}
    assert states == {"done": "complete", "run": "cancelled", "wait": "cancelled", "bad": "failed"}
    assert len(reader.get_metrics("e1")) == 1  # no row lost
    # final: a late writer cannot undo it
    store.set_experiment_status("e1", "complete")
    store.put_trial(_trial("run", "complete"))
    reader = make_store()
    assert reader.get_experiment("e1").status == "cancelled"
    assert {t.trial_id: t.state for t in reader.get_trials("e1")}["run"] == "cancelled"


def test_parquet_readers_ignore_tmp_and_files_are_plain_parquet(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path))
    _new(store)
    store.append_metrics("e1", "t1", {"test_acc": 0.5})
    metrics_dir = tmp_path / "experiments" / "e1" / "metrics"
    # a writer that died mid-write leaves only a .tmp file behind
    (metrics_dir / "000000000002-000000000002-dead.parquet.tmp").write_bytes(b"PAR1 partial")
    reader = ParquetStore(str(tmp_path))
    assert [r.seq for r in reader.get_metrics("e1")] == [1]
    files = sorted(p.name for p in metrics_dir.iterdir() if p.suffix == ".parquet")
    assert len(files) == 1
    assert pq.read_table(metrics_dir / files[0]).column("test_acc").to_pylist() == [0.5]


def _append_many(root: str, n: int) -> None:
    store = ParquetStore(root)
    for i in range(n):
        store.append_metrics("e1", "t1", {"step": i})


def test_parquet_reader_in_another_process_never_sees_partial_files(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path))
    _new(store)
    ctx = multiprocessing.get_context("spawn")
    # 150 single-row writes: compaction merges files (8 -> 1, 64 -> 1) while the reader lists,
    # so the reader also meets files deleted between its listing and its read.
    n = 150
    proc = ctx.Process(target=_append_many, args=(str(tmp_path), n))
    proc.start()
    seen = 0
    while proc.is_alive() or seen < n:
        rows = ParquetStore(str(tmp_path)).get_metrics("e1")  # a fresh reader each time
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        seen = len(rows)
        if not proc.is_alive() and seen < n:
            break
    proc.join()
    assert proc.exitcode == 0 and seen == n


def test_s3_store_is_an_s3_filesystem_and_compacts_there(s3: Any) -> None:
    """The ``s3://`` store writes objects to the S3 server (not a local stand-in), and its
    metrics writer compacts them there: 60 one-row writes leave at most 2 * (FANIN - 1)
    objects, and every row reads back once from a new reader."""
    uri = s3.new_bucket()
    store = open_store(uri)
    assert isinstance(store, ParquetStore) and isinstance(store.fs, pafs.S3FileSystem)
    _new(store)
    for i in range(60):
        store.append_metrics("e1", "t1", {"step": i})
    objects = [
        i.path
        for i in store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))
        if i.type == pafs.FileType.File and "/metrics/" in i.path
    ]
    assert 1 <= len(objects) <= 2 * (COMPACT_FANIN - 1), objects
    assert all(p.endswith(".parquet") for p in objects)  # no *.tmp left behind
    assert [r.metrics["step"] for r in open_store(uri).get_metrics("e1")] == list(range(60))


def test_parquet_compaction_bounds_the_files_and_keeps_every_row(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path))
    _new(store)
    sizes = [1] * 100 + [7, 20] * 10 + [1] * 37  # 407 rows in 157 writes
    step = 0
    for k in sizes:
        batch = [("t1", {"step": step + i, "acc": (step + i) / 1000}, None) for i in range(k)]
        store.append_metrics_batch("e1", batch)
        step += k
    metrics_dir = tmp_path / "experiments" / "e1" / "metrics"
    files = sorted(metrics_dir.glob("*.parquet"))
    # at most FANIN - 1 files per size class (1-7, 8-63, 64-511 rows) instead of 157
    assert len(files) <= 3 * (COMPACT_FANIN - 1), [f.name for f in files]
    reader = ParquetStore(str(tmp_path))
    assert [r.seq for r in reader.get_metrics("e1")] == list(range(1, 408))
    assert [r.seq for r in reader.get_metrics("e1", since_seq=300)] == list(range(301, 408))
    assert [r.metrics["step"] for r in reader.get_metrics("e1")] == list(range(407))
    # The directory still reads as one plain dataset, every row once (no leftovers here).
    table = pq.read_table(metrics_dir)
    assert sorted(table.column("seq").to_pylist()) == list(range(1, 408))
    assert table.column("acc").null_count == 0
    assert store.append_metrics("e1", "t1", {"step": 407}).seq == 408


def test_parquet_interrupted_compaction_shows_every_row_once(tmp_path: Path) -> None:
    """A compaction that wrote its merged file but died before deleting the files it replaces
    leaves both; readers count each row once, and the next write removes the leftovers."""
    store = ParquetStore(str(tmp_path))
    _new(store)
    for i in range(5):
        store.append_metrics("e1", "t1", {"step": i})
    metrics_dir = tmp_path / "experiments" / "e1" / "metrics"
    assert len(list(metrics_dir.glob("*.parquet"))) == 5
    merged = metrics_to_table(store.get_metrics("e1"))
    pq.write_table(merged, metrics_dir / "000000000001-000000000005-merged00.parquet")
    reader = ParquetStore(str(tmp_path))
    assert [r.seq for r in reader.get_metrics("e1")] == [1, 2, 3, 4, 5]
    assert [r.seq for r in reader.get_metrics("e1", since_seq=3)] == [4, 5]
    writer = ParquetStore(str(tmp_path))
    assert writer.append_metrics("e1", "t1", {"step": 5}).seq == 6
    names = sorted(p.name for p in metrics_dir.glob("*.parquet"))
    assert names[0] == "000000000001-000000000005-merged00.parquet" and len(names) == 2
    assert [r.seq for r in ParquetStore(str(tmp_path)).get_metrics("e1")] == list(range(1, 7))


def test_memory_uri_shares_instance() -> None:
    a, b = open_store("memory://shared-x"), open_store("memory://shared-x")
    assert a is b and isinstance(a, MemoryStore)
    assert open_store("memory://shared-y") is not a


def test_default_uri_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSWEEP_STORE_URI", str(tmp_path / "envstore"))
    store = open_store()
    assert isinstance(store, ParquetStore) and store.root == str(tmp_path / "envstore")
    _new(store)
    assert os.path.isdir(tmp_path / "envstore" / "experiments" / "e1")
