"""A process killed (SIGKILL) while writing to the Parquet store leaves no partial or duplicated
rows, and the next writer carries on where the store ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sweeps.store import open_store

BATCH = 7  # rows per append_metrics_batch: a batch is stored whole or not at all

WRITER = f"""
import sys
from sweeps.store import TrialRecord, open_store

store = open_store(sys.argv[1])
store.create_experiment("crash", name="crash", spec_json="{{}}", spec_hash="h", exist_ok=True)
start = len(store.get_metrics("crash")) // {BATCH}
for b in range(start, 10**6):
    store.append_metrics_batch("crash", [
        (f"t{{b % 3}}", {{"batch": b, "row": r, "payload": "x" * 200}}, None)
        for r in range({BATCH})
    ])
    store.put_trial(TrialRecord("crash", f"t{{b % 3}}", trial_key=f"k{{b % 3}}",
                                state="running", started_at=float(b)))
"""


def _check(uri: str) -> int:
    """Assert the store is whole; return the number of complete batches."""
    store = open_store(uri)
    rows = store.get_metrics("crash")
    seqs = [m.seq for m in rows]
    assert seqs == list(range(1, len(rows) + 1)), "seqs must be 1..n without gaps or repeats"
    per_batch = Counter(m.metrics["batch"] for m in rows)
    assert set(per_batch.values()) <= {BATCH}, f"partial batch: {per_batch}"
    assert sorted(per_batch) == list(range(len(per_batch))), "batches out of order"
    assert {t.trial_id for t in store.get_trials("crash")} <= {"t0", "t1", "t2"}
    return len(per_batch)


def test_kill_during_writes_leaves_whole_batches_and_the_next_writer_continues(
    tmp_path: Path,
) -> None:
    uri = str(tmp_path / "store")
    batches = 0
    for delay in (1.5, 2.0, 2.5, 3.0):  # 4 kills at different points of the write loop
        proc = subprocess.Popen([sys.executable, "-c", WRITER, uri], start_new_session=True)
        # Kill only once the writer is well into its loop (importing pyarrow takes a moment).
        deadline = time.monotonic() + 60
        store = open_store(uri)
        while time.monotonic() < deadline and proc.poll() is None:
            if store.has_experiment("crash") and len(store.get_metrics("crash")) > batches * BATCH:
                break
            time.sleep(0.05)
        time.sleep(delay - 1.4)
        assert proc.poll() is None, "the writer stopped on its own"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        now = _check(uri)
        assert now > batches, "the writer made no progress before the kill"
        batches = now  # the restarted writer continued after the last whole batch
