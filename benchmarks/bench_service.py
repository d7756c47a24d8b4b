"""Latency of the service's read paths under concurrent clients on loopback.

Sets up a real ParquetStore with one experiment of 10**4 result rows (20 trials x 500 reports),
registers it, serves the real app with uvicorn in a subprocess, and fires GET requests from
N concurrent asyncio clients. Prints p50/p99 latency and throughput for

- ``/healthz``                      (the floor: routing + JSON, the baseline for the ratios)
- ``/v1/experiments/{id}``          status: registry + Ray job state + trial counts + best metric
- ``/v1/experiments/{id}/results``  json, csv and parquet of the 10**4 rows

each for a running experiment (rows read from the store on every request) and a finished one
(``done``: the row table is cached after the first read, serialisation remains).

The Ray Jobs API is replaced by a stub that answers RUNNING at once (so the figure is the
service's own cost; a real dashboard adds one loopback HTTP call per status request).

    python benchmarks/bench_service.py [--clients 1 8 32] [--requests 200] [--rows 10000]

``--load`` runs the mixed load test instead (``tests/service/loadgen.py``, the same generator as
``tests/service/test_service_load.py``): submitters, status and results readers, a lister and
resuming SSE followers for ``--duration`` seconds against a fresh server whose Ray is replaced by
simulated sweep writers; every row is verified and the per-endpoint latency table printed::

    python benchmarks/bench_service.py --load [--duration 60] [--status-readers 16]

``--soak`` is the same mixed load for ``--duration`` seconds (default 600) with submissions
spread over the whole run; it samples the server process every 10 s (resident memory, open
file descriptors, threads, from /proc) and prints the first sample after a 30 s warm-up, the
last one and their difference, with the error counts and latency percentiles::

    python benchmarks/bench_service.py --soak [--duration 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

RUNNING_ID = "x00000000000000be"
DONE_ID = "x00000000000000d0"


class StubRunner:
    """Answers like a Ray cluster whose job is running, without a cluster."""

    dashboard_url = None

    def submit(self, exp_id: str, spec_json: str) -> str:
        raise RuntimeError("the benchmark does not submit")

    def status(self, job_id: str):  # noqa: ANN201 - JobState, imported lazily
        from service.jobs import JobState

        return JobState.RUNNING

    def stop(self, job_id: str) -> None:
        pass

    def ping(self) -> bool:
        return True

    def nodes(self) -> list[dict[str, float]] | None:
        return None


def populate(state_dir: Path, rows: int, exp_id: str, status: str) -> None:
    """One experiment with ``rows`` metric rows in the store and the registry."""
    from service.registry import Registry
    from service.settings import Settings
    from sweeps import open_store
    from sweeps.store.base import TrialRecord

    settings = Settings(state_dir=state_dir)
    spec_json = json.dumps({"name": "bench", "metric": "test_acc"})
    store = open_store(settings.store_uri)
    store.create_experiment(exp_id, name="bench", spec_json=spec_json, spec_hash="h")
    n_trials = 20
    store.put_trials([
        TrialRecord(exp_id, f"t{i:02d}", trial_key=f"k{i}",
                    params_json=json.dumps({"data.n_instructions": 10 * (i + 1), "seed": 0}),
                    state="running" if status == "running" else "complete",
                    started_at=time.time())
        for i in range(n_trials)
    ])
    per = rows // n_trials
    for step in range(per):
        store.append_metrics_batch(exp_id, [
            (f"t{i:02d}", {"step": step, "test_acc": (i + step) / (per + n_trials),
                           "train_loss": 1.0 / (step + 1)}, None)
            for i in range(n_trials)
        ])
    if status != "running":
        store.set_experiment_status(exp_id, status)
    reg = Registry(settings.registry_url)
    # The registry assigns ids itself; rewrite the one row to the store's id.
    exp = reg.create(name="bench", spec_json=spec_json, spec_hash="h", n_trials=n_trials,
                     submitter="bench", idempotency_key=None)
    from sqlalchemy import update

    from service.registry import ExperimentRow

    with reg.engine.begin() as c:
        c.execute(update(ExperimentRow).where(ExperimentRow.id == exp.id)
                  .values(id=exp_id, status=status, ray_job_id="divsweep-" + exp_id))
    reg.close()


def serve(state_dir: Path, port: int) -> None:
    """The server process: the real app on the stub runner."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(state_dir=state_dir), runner=StubRunner())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def hammer(url: str, clients: int, requests: int) -> tuple[list[float], float]:
    """Latencies (s) of ``requests`` GETs spread over ``clients`` concurrent connections."""
    lat: list[float] = []
    todo = iter(range(requests))
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
        async def worker() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                r = await c.get(url)
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return lat, wall


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 \
        else values[0]


def load(args: argparse.Namespace) -> int:
    """The mixed load test (see the module docstring); returns the exit status."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "service"))
    from loadgen import LoadConfig, format_report, run_against_new_server

    cfg = LoadConfig(
        duration_s=args.duration, submit_window_s=args.submit_window or args.duration / 2,
        drain_s=args.drain, submitters=args.submitters, submissions_each=args.submissions,
        status_readers=args.status_readers, results_readers=args.results_readers,
        listers=args.listers, sse_followers=not args.no_sse, think_s=args.think,
        max_requests=args.max_requests, max_concurrent=args.max_concurrent,
        write_s=args.write_s, seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="bench-load") as tmp:
        t0 = time.perf_counter()
        report = run_against_new_server(Path(tmp), cfg, writer=args.writer)
        print(format_report(report))
        print(f"(wall time {time.perf_counter() - t0:.1f} s, writers: {args.writer})")
    bad = report.n_5xx or report.n_transport_errors or report.problems
    return 1 if bad else 0


def proc_sample(pid: int) -> dict[str, float]:
    """Resident memory (MiB), open file descriptors and threads of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
            "open_fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
            "threads": int(fields["Threads"])}


def soak(args: argparse.Namespace) -> int:
    """The mixed load for ``--duration`` seconds, the server process sampled as it runs."""
    import threading

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "service"))
    from loadgen import LoadConfig, LoadServer, format_report, run_load

    duration = args.duration if args.duration != 30.0 else 600.0
    cfg = LoadConfig(
        duration_s=duration, submit_window_s=duration * 0.9, drain_s=args.drain,
        submitters=args.submitters, submissions_each=max(args.submissions, int(duration / 20)),
        status_readers=args.status_readers, results_readers=args.results_readers,
        listers=args.listers, sse_followers=not args.no_sse, think_s=max(args.think, 0.05),
        max_requests=10**9, max_concurrent=args.max_concurrent, write_s=args.write_s,
        seed=args.seed,
    )
    samples: list[tuple[float, dict[str, float]]] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="bench-soak") as tmp:
        server = LoadServer(Path(tmp), write_s=cfg.write_s, writer=args.writer,
                            max_concurrent=cfg.max_concurrent)
        server.start()
        assert server.proc is not None
        pid, t0 = server.proc.pid, time.monotonic()

        def sampler() -> None:
            while not stop.wait(10.0):
                samples.append((time.monotonic() - t0, proc_sample(pid)))

        thread = threading.Thread(target=sampler, daemon=True)
        samples.append((0.0, proc_sample(pid)))
        thread.start()
        try:
            report = asyncio.run(run_load(server.url, cfg))
            samples.append((time.monotonic() - t0, proc_sample(pid)))
        finally:
            stop.set()
            server.stop()
    print(format_report(report))
    warm = next((s for s in samples if s[0] >= 30.0), samples[0])
    last = samples[-1]
    print(f"\nserver process over {last[0]:.0f} s ({len(samples)} samples every 10 s):")
    print(f"{'':>22} {'t (s)':>7} {'RSS MiB':>9} {'open fds':>9} {'threads':>8}")
    for name, (t, v) in (("start", samples[0]), ("after 30 s warm-up", warm), ("end", last)):
        print(f"{name:>22} {t:7.0f} {v['rss_mib']:9.1f} {v['open_fds']:9.0f} {v['threads']:8.0f}")
    peak = max(v["rss_mib"] for _, v in samples)
    print(f"{'growth warm-up -> end':>22} {'':>7} {last[1]['rss_mib'] - warm[1]['rss_mib']:+9.1f}"
          f" {last[1]['open_fds'] - warm[1]['open_fds']:+9.0f}"
          f" {last[1]['threads'] - warm[1]['threads']:+8.0f}   (peak RSS {peak:.1f} MiB)")
    bad = report.n_5xx or report.n_transport_errors or report.problems
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=200, help="per endpoint and concurrency")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    lo = ap.add_argument_group("mixed load test (--load)")
    lo.add_argument("--load", action="store_true", help="run the mixed load test instead")
    lo.add_argument("--soak", action="store_true",
                    help="the mixed load for --duration (default 600) s, sampling the server")
    lo.add_argument("--duration", type=float, default=30.0, help="seconds readers run")
    lo.add_argument("--submit-window", type=float, default=0.0,
                    help="seconds submissions are spread over (default duration/2)")
    lo.add_argument("--drain", type=float, default=30.0,
                    help="extra seconds allowed for the last writers to finish")
    lo.add_argument("--submitters", type=int, default=4)
    lo.add_argument("--submissions", type=int, default=5, help="per submitter")
    lo.add_argument("--status-readers", type=int, default=16)
    lo.add_argument("--results-readers", type=int, default=8)
    lo.add_argument("--listers", type=int, default=1)
    lo.add_argument("--no-sse", action="store_true", help="no SSE followers")
    lo.add_argument("--think", type=float, default=0.02, help="seconds between reader requests")
    lo.add_argument("--max-requests", type=int, default=100_000, help="reader requests in all")
    lo.add_argument("--max-concurrent", type=int, default=1000,
                    help="the server's quota (409s beyond it are counted)")
    lo.add_argument("--write-s", type=float, default=4.0, help="seconds each sweep writes")
    lo.add_argument("--writer", choices=["process", "thread"], default="process")
    lo.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    if args.load:
        raise SystemExit(load(args))
    if args.soak:
        raise SystemExit(soak(args))

    from service.local_ray import free_port

    with tempfile.TemporaryDirectory(prefix="bench-svc") as tmp:
        state = Path(tmp)
        t0 = time.perf_counter()
        populate(state, args.rows, RUNNING_ID, "running")
        populate(state, args.rows, DONE_ID, "complete")
        print(f"populated 2 experiments x {args.rows} result rows in "
              f"{time.perf_counter() - t0:.1f} s")
        port = free_port()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(state),
                                 "--port", str(port)])
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            for exp_id in (RUNNING_ID, DONE_ID):
                n = len(httpx.get(f"{base}/v1/experiments/{exp_id}/results").json()["rows"])
                assert n == args.rows // 20 * 20, n
            run, done = f"/v1/experiments/{RUNNING_ID}", f"/v1/experiments/{DONE_ID}"
            endpoints = {
                "healthz": "/healthz",
                "status running": run,
                "status done": done,
                "results json": f"{run}/results?format=json",
                "results csv": f"{run}/results?format=csv",
                "results parquet": f"{run}/results?format=parquet",
                "done json": f"{done}/results?format=json",
                "done parquet": f"{done}/results?format=parquet",
            }
            print(f"{'endpoint':<16} {'clients':>7} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} "
                  f"{'req/s':>8} {'p50/healthz':>11}")
            for clients in args.clients:
                floor = None
                for name, path in endpoints.items():
                    # Results requests are ~100x heavier; fewer of them keep the run short.
                    reqs = args.requests if not name.startswith(("results", "done ")) \
                        else max(clients * 2, args.requests // 5)
                    asyncio.run(hammer(base + path, clients, min(reqs, 2 * clients)))  # warm
                    lat, wall = asyncio.run(hammer(base + path, clients, reqs))
                    p50, p99 = pct(lat, 50) * 1e3, pct(lat, 99) * 1e3
                    floor = floor or p50
                    print(f"{name:<16} {clients:>7} {reqs:>5} {p50:>9.2f} {p99:>9.2f} "
                          f"{reqs / wall:>8.1f} {p50 / floor:>11.1f}")
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
