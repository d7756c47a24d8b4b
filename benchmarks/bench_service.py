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

``--load`` runs the mixed load test instead (``tests/service/loadgen/``, the same generator as
``tests/service/test_service_load.py``): submitters, status and results readers, a lister and
resuming SSE followers for ``--duration`` seconds against a fresh server whose Ray is replaced by
simulated sweep writers; every row is verified and the per-endpoint latency table printed::

    python benchmarks/bench_service.py --load [--duration 60] [--status-readers 16]

``--soak`` is the same mixed load for ``--duration`` seconds (default 600) with submissions
spread over the whole run; it samples the server process every 10 s (resident memory, open
file descriptors, threads, from /proc) and prints the first sample after a 30 s warm-up, the
last one and their difference, with the error counts and latency percentiles::

    python benchmarks/bench_service.py --soak [--duration 600]

``--curves`` measures cost against size, each as a ratio to a baseline of the same run (this
machine's absolute times drift): status and results-as-Parquet of a running and a finished
experiment at 10^3, 10^4 and 10^5 rows with ``/healthz`` as the floor, the list page and the
list API with 10, 100 and 1,000 experiments, and the store's one-row ingest with compaction on
and off (medians of ``--repeats``); it prints the ratios against issue 14's targets and, with
``--plot``, draws the curves::

    python benchmarks/bench_service.py --curves --plot docs/img/bench-service.png
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

    def cluster_status(self) -> dict[str, object] | None:
        return None


def populate(state_dir: Path, rows: int, exp_id: str, status: str, name: str = "bench") -> None:
    """One experiment with ``rows`` metric rows in the store and the registry."""
    from service.registry import Registry
    from service.settings import Settings
    from sweeps import open_store
    from sweeps.store.base import TrialRecord

    settings = Settings(state_dir=state_dir)
    from sweeps.specs.presets import load_preset
    from sweeps.specs.spec import ExperimentSpec

    # a real spec (the service reads its objective), named for the benchmark
    smoke = load_preset("smoke").model_dump(mode="json")
    spec_json = ExperimentSpec.model_validate({**smoke, "name": name}).spec_json
    store = open_store(settings.store_uri)
    store.create_experiment(exp_id, name=name, spec_json=spec_json, spec_hash="h")
    n_trials = 20
    store.put_trials(
        [
            TrialRecord(
                exp_id,
                f"t{i:02d}",
                trial_key=f"k{i}",
                params_json=json.dumps({"data.n_instructions": 10 * (i + 1), "seed": 0}),
                state="running" if status == "running" else "complete",
                started_at=time.time(),
            )
            for i in range(n_trials)
        ]
    )
    per = rows // n_trials
    batch = max(1, per // 50)  # steps per write: 50 writes whatever the size
    for start in range(0, per, batch):
        store.append_metrics_batch(
            exp_id,
            [
                (
                    f"t{i:02d}",
                    {
                        "step": step,
                        "test_acc": (i + step) / (per + n_trials),
                        "train_loss": 1.0 / (step + 1),
                    },
                    None,
                )
                for step in range(start, min(per, start + batch))
                for i in range(n_trials)
            ],
        )
    if status != "running":
        store.set_experiment_status(exp_id, status)
    reg = Registry(settings.registry_url)
    # The registry assigns ids itself; rewrite the one row to the store's id.
    exp = reg.create(
        name=name,
        spec_json=spec_json,
        spec_hash="h",
        n_trials=n_trials,
        submitter="bench",
        idempotency_key=None,
    )
    from sqlalchemy import update

    from service.registry import ExperimentRow

    with reg.engine.begin() as c:
        c.execute(
            update(ExperimentRow)
            .where(ExperimentRow.id == exp.id)
            .values(id=exp_id, status=status, ray_job_id="divsweep-" + exp_id)
        )
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
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else values[0]
    )


def _support_on_path() -> None:
    """The load generator is test support (`tests/service/loadgen/`), not part of the product:
    put its directory on the path, as pytest does for the tests."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "service"))


def load(args: argparse.Namespace) -> int:
    """The mixed load test (see the module docstring); returns the exit status."""
    _support_on_path()
    from loadgen.client import LoadConfig, format_report, run_against_new_server

    cfg = LoadConfig(
        duration_s=args.duration,
        submit_window_s=args.submit_window or args.duration / 2,
        drain_s=args.drain,
        submitters=args.submitters,
        submissions_each=args.submissions,
        status_readers=args.status_readers,
        results_readers=args.results_readers,
        listers=args.listers,
        sse_followers=not args.no_sse,
        think_s=args.think,
        max_requests=args.max_requests,
        max_concurrent=args.max_concurrent,
        write_s=args.write_s,
        seed=args.seed,
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
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "open_fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "threads": int(fields["Threads"]),
    }


def soak(args: argparse.Namespace) -> int:
    """The mixed load for ``--duration`` seconds, the server process sampled as it runs."""
    import threading

    _support_on_path()
    from loadgen.client import LoadConfig, format_report, run_load
    from loadgen.server import LoadServer

    duration = args.duration if args.duration != 30.0 else 600.0
    cfg = LoadConfig(
        duration_s=duration,
        submit_window_s=duration * 0.9,
        drain_s=args.drain,
        submitters=args.submitters,
        submissions_each=max(args.submissions, int(duration / 20)),
        status_readers=args.status_readers,
        results_readers=args.results_readers,
        listers=args.listers,
        sse_followers=not args.no_sse,
        think_s=max(args.think, 0.05),
        max_requests=10**9,
        max_concurrent=args.max_concurrent,
        write_s=args.write_s,
        seed=args.seed,
    )
    samples: list[tuple[float, dict[str, float]]] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="bench-soak") as tmp:
        server = LoadServer(
            Path(tmp), write_s=cfg.write_s, writer=args.writer, max_concurrent=cfg.max_concurrent
        )
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
    print(
        f"{'growth warm-up -> end':>22} {'':>7} {last[1]['rss_mib'] - warm[1]['rss_mib']:+9.1f}"
        f" {last[1]['open_fds'] - warm[1]['open_fds']:+9.0f}"
        f" {last[1]['threads'] - warm[1]['threads']:+8.0f}   (peak RSS {peak:.1f} MiB)"
    )
    bad = report.n_5xx or report.n_transport_errors or report.problems
    return 1 if bad else 0


# --------------------------------------------------------------------------------------------
# --curves: cost against size, as ratios to a baseline measured in the same run
# --------------------------------------------------------------------------------------------
TARGETS = {  # issue 14: each ratio and its ceiling (ingest: a floor)
    "status p50 / healthz p50": 1.5,
    "status p99 / healthz p99": 2.0,
    "running parquet p99 / finished p99 (10^4 rows)": 2.0,
    "list page p50, 1,000 / 10 experiments": 5.0,
}


class Server:
    """The real app on the stub runner in a subprocess, for one state directory."""

    def __init__(self, state: Path) -> None:
        from service.local_ray import free_port

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(state), "--port", str(self.port)]
        )

    def __enter__(self) -> Server:
        for _ in range(300):
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)

    def measure(self, path: str, clients: int, n: int) -> tuple[float, float]:
        """(p50, p99) in ms of ``n`` GETs over ``clients`` connections, after a warm-up."""
        asyncio.run(hammer(self.base + path, clients, max(4 * clients, n // 10)))  # warm-up
        lat, _ = asyncio.run(hammer(self.base + path, clients, n))
        return pct(lat, 50) * 1e3, pct(lat, 99) * 1e3


def _exp_id(size: int, kind: str) -> str:
    return f"x{size:014x}{'0a' if kind == 'running' else '0d'}"


def curve_rows(sizes: list[int], clients: int, n: int) -> list[dict[str, float]]:
    """Status and results-as-Parquet latency of a running and a finished experiment of each
    size, with /healthz measured between them as the floor."""
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-curve") as tmp:
        state = Path(tmp)
        t0 = time.perf_counter()
        for size in sizes:
            populate(state, size, _exp_id(size, "running"), "running")
            populate(state, size, _exp_id(size, "done"), "complete")
        print(
            f"populated {2 * len(sizes)} experiments ({', '.join(map(str, sizes))} rows "
            f"each) in {time.perf_counter() - t0:.1f} s"
        )
        with Server(state) as srv:
            for size in sizes:
                run, done = (f"/v1/experiments/{_exp_id(size, k)}" for k in ("running", "done"))
                heavy = max(4 * clients, n // 10 if size <= 10_000 else n // 40)
                row: dict[str, float] = {"rows": size}
                row["healthz_p50"], row["healthz_p99"] = srv.measure("/healthz", clients, n)
                row["status_p50"], row["status_p99"] = srv.measure(run, clients, n)
                row["running_p50"], row["running_p99"] = srv.measure(
                    f"{run}/results?format=parquet", clients, heavy
                )
                row["done_p50"], row["done_p99"] = srv.measure(
                    f"{done}/results?format=parquet", clients, heavy
                )
                out.append(row)
                print(
                    f"  {size:>7} rows: healthz "
                    f"{row['healthz_p50']:6.2f}/{row['healthz_p99']:6.2f}"
                    f"  status {row['status_p50']:6.2f}/{row['status_p99']:6.2f}"
                    f"  parquet running {row['running_p50']:7.1f}/{row['running_p99']:7.1f}"
                    f"  finished {row['done_p50']:7.1f}/{row['done_p99']:7.1f} ms (p50/p99)"
                )
    return out


def curve_list(counts: list[int], clients: int, n: int) -> list[dict[str, float]]:
    """The list page (HTML, 50 a page, progress per row) and the list API, against how many
    experiments the registry holds (each with 20 stored rows)."""
    out = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="bench-list") as tmp:
            state = Path(tmp)
            t0 = time.perf_counter()
            for i in range(count):
                populate(
                    state, 20, f"x{i:016x}", "complete" if i % 2 else "running", name=f"bench-{i}"
                )
            with Server(state) as srv:
                row: dict[str, float] = {"experiments": count}
                row["page_p50"], row["page_p99"] = srv.measure("/", clients, n // 4)
                row["api_p50"], row["api_p99"] = srv.measure(
                    "/v1/experiments?limit=50", clients, n // 4
                )
            out.append(row)
            print(
                f"  {count:>5} experiments (populated in {time.perf_counter() - t0:5.1f} s): "
                f"page {row['page_p50']:7.1f}/{row['page_p99']:7.1f}  "
                f"API {row['api_p50']:6.1f}/{row['api_p99']:6.1f} ms (p50/p99)"
            )
    return out


def curve_ingest(sizes: list[int], repeats: int) -> list[dict[str, float]]:
    """ParquetStore ingest at one row per write (what the Tune callback does), compaction on
    against off (fan-in beyond reach), alternating, median of ``repeats``."""
    import uuid

    import sweeps.store.parquet as parquet
    from sweeps.store import ParquetStore

    metrics = {"step": 1, "test_acc": 0.5, "test_acc_op": 0.4, "train_loss": 1.2, "lr": 1e-3}
    fanin = parquet.COMPACT_FANIN
    out = []
    try:
        for size in sizes:
            rates: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(repeats):
                for mode, value in (("off", 10**9), ("on", fanin)):
                    parquet.COMPACT_FANIN = value
                    with tempfile.TemporaryDirectory(prefix="bench-ingest") as root:
                        store = ParquetStore(root)
                        eid = f"ing-{uuid.uuid4().hex[:6]}"
                        store.create_experiment(eid, name="ingest", spec_json="{}", spec_hash="h")
                        t0 = time.perf_counter()
                        for i in range(size):
                            store.append_metrics(eid, f"t{i % 16}", metrics)
                        rates[mode].append(size / (time.perf_counter() - t0))
                        assert len(ParquetStore(root).get_metrics(eid)) == size
            on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
            out.append({"rows": size, "on": on, "off": off})
            print(
                f"  {size:>7} rows: compaction on {on:6.0f} rows/s, off {off:6.0f} rows/s "
                f"(medians of {repeats}), ratio {on / off:.2f}  "
                f"[on: {', '.join(f'{r:.0f}' for r in rates['on'])}; "
                f"off: {', '.join(f'{r:.0f}' for r in rates['off'])}]"
            )
    finally:
        parquet.COMPACT_FANIN = fanin
    return out


def curves(args: argparse.Namespace) -> int:
    print(f"== cost against size; {args.clients[0]} clients on loopback; all from this run ==")
    print("status and results as Parquet, by experiment size:")
    rows = curve_rows(args.sizes, args.clients[0], args.requests)
    print("list, by number of experiments:")
    lists = curve_list(args.counts, args.clients[0], args.requests)
    print("store ingest, one row per write:")
    ingest = curve_ingest(args.ingest_sizes, args.repeats)
    mid = next((r for r in rows if r["rows"] == 10_000), rows[-1])
    ratios = {
        "status p50 / healthz p50": statistics.median(
            r["status_p50"] / r["healthz_p50"] for r in rows
        ),
        "status p99 / healthz p99": statistics.median(
            r["status_p99"] / r["healthz_p99"] for r in rows
        ),
        "running parquet p99 / finished p99 (10^4 rows)": mid["running_p99"] / mid["done_p99"],
        "list page p50, 1,000 / 10 experiments": lists[-1]["page_p50"] / lists[0]["page_p50"],
    }
    print("\nratios (median over sizes where several; target in brackets):")
    ok = True
    for name, value in ratios.items():
        good = value <= TARGETS[name]
        ok &= good
        print(f"  {name:<48} {value:5.2f}  [<= {TARGETS[name]}]  {'ok' if good else 'MISSED'}")
    api = lists[-1]["api_p50"] / lists[0]["api_p50"]
    print(f"  {'list API p50, 1,000 / 10 experiments':<48} {api:5.2f}  (registry only)")
    for r in ingest:
        good = r["on"] / r["off"] >= 0.8
        ok &= good
        print(
            f"  {'ingest on / off, ' + format(int(r['rows']), ',') + ' rows':<48} "
            f"{r['on'] / r['off']:5.2f}  [>= 0.8]  {'ok' if good else 'MISSED'}"
        )
    if args.plot:
        plot_curves(rows, lists, ingest, args.plot)
        print(f"wrote {args.plot}")
    return 0 if ok else 1


def plot_curves(
    rows: list[dict[str, float]],
    lists: list[dict[str, float]],
    ingest: list[dict[str, float]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    x = [r["rows"] for r in rows]
    for key, label in (("healthz", "/healthz"), ("status", "status (running)")):
        ax[0].plot(x, [r[f"{key}_p50"] for r in rows], "o-", label=f"{label} p50")
        ax[0].plot(x, [r[f"{key}_p99"] for r in rows], "o--", label=f"{label} p99")
    ax[0].set(
        xscale="log",
        xlabel="result rows of the experiment",
        ylabel="ms",
        title="status vs /healthz",
    )
    for key, label in (("running", "running"), ("done", "finished")):
        ax[1].plot(x, [r[f"{key}_p50"] for r in rows], "o-", label=f"{label} p50")
        ax[1].plot(x, [r[f"{key}_p99"] for r in rows], "o--", label=f"{label} p99")
    ax[1].set(
        xscale="log", yscale="log", xlabel="result rows", ylabel="ms", title="results as Parquet"
    )
    xl = [r["experiments"] for r in lists]
    for key, label in (("page", "list page (HTML)"), ("api", "list API")):
        ax[2].plot(xl, [r[f"{key}_p50"] for r in lists], "o-", label=f"{label} p50")
        ax[2].plot(xl, [r[f"{key}_p99"] for r in lists], "o--", label=f"{label} p99")
    ax[2].set(xscale="log", xlabel="experiments in the registry", ylabel="ms", title="list")
    xi = [r["rows"] for r in ingest]
    ax[3].plot(xi, [r["on"] for r in ingest], "o-", label="compaction on")
    ax[3].plot(xi, [r["off"] for r in ingest], "o-", label="compaction off")
    ax[3].set(
        xscale="log", xlabel="rows written (one per write)", ylabel="rows/s", title="store ingest"
    )
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=200, help="per endpoint and concurrency")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    cu = ap.add_argument_group("cost against size (--curves)")
    cu.add_argument(
        "--curves",
        action="store_true",
        help="status, results, list and ingest against size, with the ratios",
    )
    cu.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    cu.add_argument("--counts", type=int, nargs="+", default=[10, 100, 1_000])
    cu.add_argument("--ingest-sizes", type=int, nargs="+", default=[1_000, 10_000])
    cu.add_argument("--repeats", type=int, default=3, help="ingest runs per mode and size")
    cu.add_argument("--plot", type=Path, help="write the curves as a PNG here")
    lo = ap.add_argument_group("mixed load test (--load)")
    lo.add_argument("--load", action="store_true", help="run the mixed load test instead")
    lo.add_argument(
        "--soak",
        action="store_true",
        help="the mixed load for --duration (default 600) s, sampling the server",
    )
    lo.add_argument("--duration", type=float, default=30.0, help="seconds readers run")
    lo.add_argument(
        "--submit-window",
        type=float,
        default=0.0,
        help="seconds submissions are spread over (default duration/2)",
    )
    lo.add_argument(
        "--drain",
        type=float,
        default=30.0,
        help="extra seconds allowed for the last writers to finish",
    )
    lo.add_argument("--submitters", type=int, default=4)
    lo.add_argument("--submissions", type=int, default=5, help="per submitter")
    lo.add_argument("--status-readers", type=int, default=16)
    lo.add_argument("--results-readers", type=int, default=8)
    lo.add_argument("--listers", type=int, default=1)
    lo.add_argument("--no-sse", action="store_true", help="no SSE followers")
    lo.add_argument("--think", type=float, default=0.02, help="seconds between reader requests")
    lo.add_argument("--max-requests", type=int, default=100_000, help="reader requests in all")
    lo.add_argument(
        "--max-concurrent",
        type=int,
        default=1000,
        help="the server's quota (409s beyond it are counted)",
    )
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
    if args.curves:
        if args.clients == [1, 8, 32]:
            args.clients = [8]
        if args.requests == 200:
            args.requests = 2000
        raise SystemExit(curves(args))

    from service.local_ray import free_port

    with tempfile.TemporaryDirectory(prefix="bench-svc") as tmp:
        state = Path(tmp)
        t0 = time.perf_counter()
        populate(state, args.rows, RUNNING_ID, "running")
        populate(state, args.rows, DONE_ID, "complete")
        print(
            f"populated 2 experiments x {args.rows} result rows in {time.perf_counter() - t0:.1f} s"
        )
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(state), "--port", str(port)]
        )
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
            print(
                f"{'endpoint':<16} {'clients':>7} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} "
                f"{'req/s':>8} {'p50/healthz':>11}"
            )
            for clients in args.clients:
                floor = None
                for name, path in endpoints.items():
                    # Results requests are ~100x heavier; fewer of them keep the run short.
                    reqs = (
                        args.requests
                        if not name.startswith(("results", "done "))
                        else max(clients * 2, args.requests // 5)
                    )
                    asyncio.run(hammer(base + path, clients, min(reqs, 2 * clients)))  # warm
                    lat, wall = asyncio.run(hammer(base + path, clients, reqs))
                    p50, p99 = pct(lat, 50) * 1e3, pct(lat, 99) * 1e3
                    floor = floor or p50
                    print(
                        f"{name:<16} {clients:>7} {reqs:>5} {p50:>9.2f} {p99:>9.2f} "
                        f"{reqs / wall:>8.1f} {p50 / floor:>11.1f}"
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
