"""Sweep overheads: Tune per-trial cost vs a plain loop, and the results store's ingest rate.

1. **Tune overhead.** 50 trivial trials (one report each) run through `run_experiment` (Tune,
   the store callback, a Parquet store) on a local Ray with ``--cpus`` CPUs, against the same
   trial function called 50 times in a plain Python loop. Prints seconds per trial for both and
   the overhead per trial.
2. **Store ingest.** ``--rows`` metric rows appended to a `ParquetStore` one report per write
   (what the Tune callback does) and in batches of 100, plus a `MemoryStore`; prints rows/s.
3. **Store reads.** A fresh reader's `get_metrics` of an experiment written one row per write
   (``--read-rows``), with the store's compaction and without it (``COMPACT_FANIN`` set beyond
   reach: one file per write, as before compaction existed); prints files, write and read time.

Usage::

    python benchmarks/bench_sweep.py            # both
    python benchmarks/bench_sweep.py --skip-tune --rows 5000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from typing import Any

from sweeps import spec_from_dict
from sweeps.running.driver import run_experiment
from sweeps.specs.spec import TrialPlan
from sweeps.store import MemoryStore, ParquetStore, ResultsStore

N_TRIALS = 50


def trivial_trial(plan: TrialPlan, report: Any, checkpoint_dir: str, cache_dir: str) -> None:
    """A trial that does almost nothing: one report of a number derived from the params."""
    report({"step": 1, "test_acc": (plan.train.lr * 1000) % 1.0}, None)


def _spec(n: int) -> Any:
    lrs = [1e-4 * (i + 1) for i in range(n)]
    return spec_from_dict(
        {
            "name": "bench",
            "data": {
                "alphabet": "abcdefgh",
                "z_len": [4, 10],
                "x_len": [2, 3],
                "y_len": [1, 3],
                "n_instructions": 10,
                "examples_per_instruction": 10,
                "test": {"n_test": 20},
            },
            "train": {"model": "nano", "epochs": 1, "device": "cpu"},
            "axes": [{"field": "train.lr", "values": lrs}],
        }
    )


def bench_tune(cpus: int, n: int) -> None:
    import ray

    spec = _spec(n)
    plans = spec.trials()
    t0 = time.perf_counter()
    sink: list[Any] = []
    for p in plans:
        trivial_trial(p, lambda m, c: sink.append(m), "", "")
    loop_s = time.perf_counter() - t0

    os.environ.pop("RAY_ADDRESS", None)
    t_init = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t_init
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as root:
        t0 = time.perf_counter()
        exp = run_experiment(
            spec, f"bench-{uuid.uuid4().hex[:6]}", root, trial_fn=trivial_trial, verbose=0
        )
        tune_s = time.perf_counter() - t0
        done = ParquetStore(root).progress(exp)["complete"]
    ray.shutdown()
    print(f"tune: {n} trivial trials ({done} complete) on {cpus} CPUs")
    print(f"  ray.init                 {init_s:8.2f} s (not counted below)")
    print(f"  plain loop               {loop_s:8.4f} s  = {loop_s / n * 1e3:9.3f} ms/trial")
    print(f"  run_experiment (Tune)    {tune_s:8.2f} s  = {tune_s / n * 1e3:9.1f} ms/trial")
    print(
        f"  Tune overhead per trial  {(tune_s - loop_s) / n * 1e3:9.1f} ms "
        f"(x{tune_s / max(loop_s, 1e-9):,.0f} the loop)"
    )


def _ingest(store: ResultsStore, rows: int, batch: int) -> float:
    eid = f"ing-{uuid.uuid4().hex[:6]}"
    store.create_experiment(eid, name="ingest", spec_json="{}", spec_hash="h")
    metrics = {"step": 1, "test_acc": 0.5, "test_acc_op": 0.4, "train_loss": 1.2, "lr": 1e-3}
    t0 = time.perf_counter()
    for start in range(0, rows, batch):
        store.append_metrics_batch(
            eid, [(f"t{i % 16}", metrics, None) for i in range(start, min(rows, start + batch))]
        )
    elapsed = time.perf_counter() - t0
    assert len(store.get_metrics(eid)) == rows
    return rows / elapsed


def bench_store(rows: int) -> None:
    print(f"store ingest: {rows} metric rows")
    with tempfile.TemporaryDirectory(prefix="bench-store-") as root:
        one = _ingest(ParquetStore(root), rows, 1)
        hundred = _ingest(ParquetStore(root), rows * 10, 100)
    mem = _ingest(MemoryStore(), rows * 10, 1)
    print(f"  ParquetStore, 1 row per write (as the Tune callback)  {one:10,.0f} rows/s")
    print(f"  ParquetStore, 100 rows per write                      {hundred:10,.0f} rows/s")
    print(f"  MemoryStore, 1 row per write                          {mem:10,.0f} rows/s")


def bench_reads(rows: int) -> None:
    import sweeps.store.parquet as parquet

    print(f"store reads: {rows} rows written one per write, then read by a fresh reader")
    fanin = parquet.COMPACT_FANIN
    results = {}
    try:
        for label, value in (("no compaction", 10**9), (f"compaction (fan-in {fanin})", fanin)):
            parquet.COMPACT_FANIN = value
            with tempfile.TemporaryDirectory(prefix="bench-read-") as root:
                write_rate = _ingest(ParquetStore(root), rows, 1)
                (eid,) = [e.experiment_id for e in ParquetStore(root).list_experiments()]
                n_files = len(os.listdir(f"{root}/experiments/{eid}/metrics"))
                reads = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    assert len(ParquetStore(root).get_metrics(eid)) == rows
                    reads.append(time.perf_counter() - t0)
            results[label] = min(reads)
            print(
                f"  {label:<24} {n_files:6d} files, writes {write_rate:6,.0f} rows/s, "
                f"fresh read {min(reads) * 1e3:8.1f} ms (best of 3)"
            )
    finally:
        parquet.COMPACT_FANIN = fanin
    base, ours = results.values()
    print(f"  read speed-up: {base / ours:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--trials", type=int, default=N_TRIALS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--read-rows", type=int, default=5000)
    parser.add_argument("--skip-tune", action="store_true")
    args = parser.parse_args()
    bench_store(args.rows)
    bench_reads(args.read_rows)
    if not args.skip_tune:
        bench_tune(args.cpus, args.trials)


if __name__ == "__main__":
    main()
