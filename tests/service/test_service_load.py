"""Load test on loopback: concurrent readers and submitters against a real uvicorn process.

The real app (SQLite registry, ParquetStore results) runs in a subprocess; Ray is replaced by
``loadgen.SimulatedRunner`` (a real sweep per submission is far too heavy for a 2-core machine),
whose writers write known trials and metric rows into the same store through their own
``ParquetStore`` while the clients read (see ``loadgen``'s docstring). The writers run on threads
of the server process here: a writer process per experiment costs an interpreter start each,
which on 2 cores turns the latency figures into a measure of process start-up (``python
benchmarks/bench_service.py --load`` uses writer processes by default). For about 20 s:
3 submitters (12 experiments in all, each retried once with its Idempotency-Key), 8 status
readers, 4 results readers, a lister and one resuming SSE follower per experiment. Bounded in
time (duration + drain) and in count (submissions, ``max_requests``).

Asserts zero 5xx and zero connection errors, and that every row written is read back exactly
once over results and over SSE (seqs 1..n, no gaps, no duplicates, same values), every accepted
submission is listed exactly once, and prints the latency table.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from loadgen.client import LoadConfig, format_report, run_against_new_server

CONFIG = LoadConfig(
    duration_s=20,
    submit_window_s=10,
    drain_s=15,
    submitters=3,
    submissions_each=4,
    status_readers=8,
    results_readers=4,
    listers=1,
    think_s=0.02,
    max_requests=20_000,
    write_s=4.0,
)


@pytest.mark.timeout(120)
def test_concurrent_readers_and_submitters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    report = run_against_new_server(tmp_path / "state", CONFIG, writer="thread")
    with capsys.disabled():
        print(f"\n{format_report(report)}\n(test wall time {time.monotonic() - t0:.1f} s)")

    assert report.n_5xx == 0, report.problems
    assert report.n_transport_errors == 0, report.problems
    assert report.problems == [], "\n".join(report.problems)
    assert report.quota_refusals == 0  # the server's quota is set above the load
    assert len(report.experiments) == CONFIG.submitters * CONFIG.submissions_each
    assert report.rows_verified == sum(e.n_rows for e in report.experiments.values())
    for name in (
        "POST submit",
        "POST submit (retry)",
        "GET status",
        "GET results",
        "GET list",
        "GET events (connect)",
    ):
        assert report.stats[name].latencies, f"no {name} requests were made"
    # Only the expected 4xx: 404 from /results before a writer created its experiment.
    n_4xx = sum(n for s in report.stats.values() for c, n in s.codes.items() if 400 <= c < 500)
    assert n_4xx == report.results_not_yet
