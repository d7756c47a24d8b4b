"""Load generator for the divsweep service on loopback (shared by the load test and the bench).

Two halves:

**Server side** (runs inside the uvicorn subprocess): ``app_from_env()`` builds the real app
(real SQLite registry, real :class:`service.results.StoreResults` over a real ``ParquetStore``)
with one collaborator replaced: the Ray job runner. Ray itself is too heavy to run dozens of
sweeps at once on a 2-core machine (a head costs ~1 GB and seconds per job, a trial loads torch),
so :class:`SimulatedRunner` stands in for it. On ``submit`` it starts a *writer* that behaves like
a sweep driver's ``sweeps.running.callback.StoreCallback``: it opens the same store URI, creates the
experiment, marks it running, writes pending/running/complete trial rows and a KNOWN number of
metric rows (one ``append_metrics`` per report, paced over ``write_s`` seconds), then marks the
experiment complete and exits. By default the writer is a separate process (``python -m
loadgen.server write JOB.json``, importing only ``sweeps.store``), as a Ray job driver is;
``writer="thread"`` runs it on a thread of the server process instead. ``status`` reports
RUNNING while the writer runs, then SUCCEEDED (or FAILED on a non-zero exit), so the service's
own refresh logic moves the registry from pending to running to complete.

What the writer writes is a pure function of the spec, so a client can check every row it reads:
trial ``i`` (in ``ExperimentSpec.trials()`` order: first axis slowest, seeds fastest) is
``trial_{i:05d}``, each trial reports ``train.epochs`` times, and rows are written round-robin,
so row ``seq = k`` is trial ``(k-1) % n_trials`` at step ``(k-1) // n_trials`` with the metrics
of :func:`metric_values`.

**Client side**: :func:`run_load` drives a running server with asyncio + ``httpx.AsyncClient``
for a bounded time and a bounded number of requests: submitters (each submission retried once
with its ``Idempotency-Key``), status readers, results readers (JSON), a lister, and one
Server-Sent-Events follower per experiment that disconnects half-way and resumes with
``Last-Event-ID``. Every answer is checked while the load runs; afterwards every experiment is
read back and compared row by row with what its writer wrote. :func:`format_report` prints
per-endpoint latency percentiles and throughput.

The halves are modules: `loadgen.common` (what a writer writes, so both sides agree),
`loadgen.server` (the simulated cluster and the server process; its command line is the
process-mode writer, ``python -m loadgen.server write JOB.json``) and `loadgen.client` (the load
and its report). ``benchmarks/bench_service.py --load`` is the user-facing entry point.
"""
