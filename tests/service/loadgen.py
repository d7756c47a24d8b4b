"""Load generator for the divsweep service on loopback (shared by the load test and the bench).

Two halves:

**Server side** (runs inside the uvicorn subprocess): ``app_from_env()`` builds the real app
(real SQLite registry, real :class:`service.results.StoreResults` over a real ``ParquetStore``)
with one collaborator replaced: the Ray job runner. Ray itself is too heavy to run dozens of
sweeps at once on a 2-core machine (a head costs ~1 GB and seconds per job, a trial loads torch),
so :class:`SimulatedRunner` stands in for it. On ``submit`` it starts a *writer* that behaves like
a sweep driver's ``sweeps.callback.StoreCallback``: it opens the same store URI, creates the
experiment, marks it running, writes pending/running/complete trial rows and a KNOWN number of
metric rows (one ``append_metrics`` per report, paced over ``write_s`` seconds), then marks the
experiment complete and exits. By default the writer is a separate process (``python loadgen.py
write JOB.json``, importing only ``sweeps.store``), as a Ray job driver is; ``writer="thread"``
runs it on a thread of the server process instead. ``status`` reports RUNNING while the writer
runs, then SUCCEEDED (or FAILED on a non-zero exit), so the service's own refresh logic moves the
registry from pending to running to complete.

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

Command line (used by the server's process-mode runner; ``benchmarks/bench_service.py --load``
is the user-facing entry point)::

    python tests/service/loadgen.py write JOB.json
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from service_fakes import small_spec
from uvicorn_proc import stop_process, uvicorn_command, wait_healthy

from service.local_ray import free_port

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.jobs import JobState

TOKEN = "loadgen-token-0123456789"
SUBMITTER = "loadgen"
AXIS_FIELD = "data.n_instructions"
AXIS_VALUES = (10, 100)

# ------------------------------------------------------------------------------------------------
# What a writer writes (shared by both halves)
# ------------------------------------------------------------------------------------------------


def trial_id(i: int) -> str:
    return f"trial_{i:05d}"


def metric_values(i: int, step: int) -> dict[str, Any]:
    """The metrics trial ``i`` reports at ``step`` (exact binary fractions: JSON/Parquet safe)."""
    return {
        "step": step,
        "test_acc": ((7 * i + 3 * step) % 64) / 64,
        "train_loss": 1.0 / 2 ** min(step, 20) + i / 1024,
    }


def row_position(seq: int, n_trials: int) -> tuple[int, int]:
    """``(trial index, step)`` of the row with ``seq`` (rows are written round-robin)."""
    return (seq - 1) % n_trials, (seq - 1) // n_trials


# ------------------------------------------------------------------------------------------------
# Server side: the simulated cluster
# ------------------------------------------------------------------------------------------------


def write_job(job: dict[str, Any], stop: threading.Event | None = None) -> None:
    """Do what a sweep driver does through ``StoreCallback``, with known rows (see module doc)."""
    from sweeps.store import TrialRecord, open_store

    store = open_store(job["store_uri"])
    eid = job["experiment_id"]
    store.create_experiment(
        eid, name=job["name"], spec_json=job["spec_json"], spec_hash=job["spec_hash"], exist_ok=True
    )
    store.set_experiment_status(eid, "running")
    trials = [
        TrialRecord(
            eid,
            t["trial_id"],
            trial_key=t["trial_key"],
            params_json=t["params_json"],
            data_hash=t["data_hash"],
            state="pending",
        )
        for t in job["trials"]
    ]
    store.put_trials(trials)
    n_trials, reports = len(trials), int(job["reports"])
    n_rows = n_trials * reports
    interval = float(job["write_s"]) / max(n_rows, 1)
    started: dict[int, float] = {}
    t0 = time.monotonic()
    for seq in range(1, n_rows + 1):
        if stop is not None and stop.is_set():
            return
        i, step = row_position(seq, n_trials)
        if step == 0:
            started[i] = time.time()
            store.put_trial(replace(trials[i], state="running", started_at=started[i]))
        rec = store.append_metrics(eid, trials[i].trial_id, metric_values(i, step))
        if rec.seq != seq:
            raise RuntimeError(f"{eid}: append_metrics gave seq {rec.seq}, expected {seq}")
        if step == reports - 1:
            store.put_trial(
                replace(trials[i], state="complete", started_at=started[i], ended_at=time.time())
            )
        delay = t0 + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    store.set_experiment_status(eid, "complete")


@dataclass
class _Job:
    proc: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False


class SimulatedRunner:
    """A :class:`service.jobs.JobRunner` that replaces Ray with a local writer per experiment.

    Ray is replaced because a real sweep per submission cannot run dozens of times on a
    2-core machine within a test; the store traffic it produces (the part the service reads)
    is reproduced exactly: a separate writer appends trials and metric rows to the same
    ParquetStore while the service serves them.
    """

    dashboard_url: str | None = None

    def __init__(
        self, store_uri: str, jobs_dir: Path, write_s: float = 4.0, writer: str = "process"
    ) -> None:
        if writer not in ("process", "thread"):
            raise ValueError(f"writer={writer!r} must be 'process' or 'thread'")
        self.store_uri = store_uri
        self.jobs_dir = jobs_dir
        self.write_s = write_s
        self.writer = writer
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def _job_file(self, exp_id: str, spec_json: str) -> dict[str, Any]:
        from sweeps.spec import ExperimentSpec

        spec = ExperimentSpec.model_validate_json(spec_json)
        return {
            "store_uri": self.store_uri,
            "experiment_id": exp_id,
            "name": spec.name,
            "spec_json": spec_json,
            "spec_hash": spec.spec_hash,
            "reports": spec.train.epochs,
            "write_s": self.write_s,
            "trials": [
                {
                    "trial_id": trial_id(i),
                    "trial_key": p.trial_key,
                    "params_json": json.dumps(p.params, sort_keys=True),
                    "data_hash": p.data.content_hash,
                }
                for i, p in enumerate(spec.trials())
            ],
        }

    def submit(self, exp_id: str, spec_json: str) -> str:
        from service.jobs import job_id_for

        job_id = job_id_for(exp_id)  # the id Ray would get, so refresh/reconcile find it
        spec = self._job_file(exp_id, spec_json)
        job = _Job()
        if self.writer == "thread":

            def run() -> None:
                try:
                    write_job(spec, job.stop)
                except BaseException as e:  # reported as FAILED by status()
                    job.error = e
                    raise

            job.thread = threading.Thread(target=run, name=f"writer-{exp_id}", daemon=True)
            job.thread.start()
        else:
            workdir = self.jobs_dir / exp_id
            workdir.mkdir(parents=True, exist_ok=True)
            path = workdir / "job.json"
            path.write_text(json.dumps(spec))
            with open(workdir / "writer.log", "wb") as log:
                job.proc = subprocess.Popen(
                    [sys.executable, __file__, "write", str(path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        with self._lock:
            self._jobs[job_id] = job
        return job_id

    def status(self, job_id: str) -> JobState:
        from service.jobs import JobState

        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return JobState.MISSING
        if job.stopped:
            return JobState.STOPPED
        if job.thread is not None:
            if job.thread.is_alive():
                return JobState.RUNNING
            return JobState.FAILED if job.error else JobState.SUCCEEDED
        assert job.proc is not None
        rc = job.proc.poll()
        if rc is None:
            return JobState.RUNNING
        return JobState.SUCCEEDED if rc == 0 else JobState.FAILED

    def stop(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return
        job.stopped = True
        job.stop.set()
        if job.proc is not None and job.proc.poll() is None:
            job.proc.terminate()
            job.proc.wait(timeout=10)

    def ping(self) -> bool:
        return True

    def nodes(self) -> list[dict[str, float]] | None:
        # a node large enough for any submission the load generator makes
        return [{"CPU": 64.0, "memory": float(256 * 2**30)}]

    def cluster_status(self) -> dict[str, Any] | None:
        return None  # no Ray: a stalled experiment says the cluster status is unavailable

    def close(self) -> None:
        """Stop writers still running (the server is shutting down)."""
        with self._lock:
            jobs = list(self._jobs)
        for job_id in jobs:
            self.stop(job_id)


def app_from_env() -> FastAPI:
    """``uvicorn --factory loadgen:app_from_env --app-dir tests/service``.

    The real app from ``DIVSWEEP_*`` settings, on :class:`SimulatedRunner` (``LOADGEN_WRITE_S``:
    seconds each writer takes, ``LOADGEN_WRITER``: ``process`` or ``thread``).
    """
    from service.app import create_app
    from service.settings import Settings

    settings = Settings()
    runner = SimulatedRunner(
        settings.store_uri,
        settings.jobs_dir,
        write_s=float(os.environ.get("LOADGEN_WRITE_S", "4")),
        writer=os.environ.get("LOADGEN_WRITER", "process"),
    )
    atexit.register(runner.close)
    return create_app(settings, runner=runner)


# ------------------------------------------------------------------------------------------------
# The server process
# ------------------------------------------------------------------------------------------------


class LoadServer:
    """The real app in a uvicorn subprocess on a free loopback port, state under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        write_s: float = 4.0,
        writer: str = "process",
        max_concurrent: int = 1000,
        sse_poll_s: float = 0.5,
    ) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "DIVSWEEP_STATE_DIR": str(state_dir),
            "DIVSWEEP_TOKENS": json.dumps({SUBMITTER: TOKEN}),
            "DIVSWEEP_MAX_CONCURRENT": str(max_concurrent),
            "DIVSWEEP_SSE_POLL_S": str(sse_poll_s),
            "DIVSWEEP_SSE_KEEPALIVE_S": "2",
            "LOADGEN_WRITE_S": str(write_s),
            "LOADGEN_WRITER": writer,
        }
        self.log_path = state_dir / f"uvicorn-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def start(self, timeout_s: float = 90) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIVSWEEP_")}
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                uvicorn_command(
                    "loadgen:app_from_env",
                    self.port,
                    "--app-dir",
                    str(Path(__file__).parent),
                    "--no-access-log",
                    "--timeout-graceful-shutdown",
                    "5",
                ),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.startup_s = wait_healthy(self.proc, self.url, timeout_s, self.log_text)

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> LoadServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def writer_logs(self) -> dict[str, str]:
        """Non-empty writer logs (process mode): a writer that printed anything failed."""
        out = {}
        for p in sorted((self.state_dir / "jobs").glob("*/writer.log")):
            text = p.read_text(errors="replace").strip()
            if text:
                out[p.parent.name] = text
        return out


# ------------------------------------------------------------------------------------------------
# Client side
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadConfig:
    """Shape and bounds of one load run (every loop stops at ``duration_s`` + ``drain_s``)."""

    duration_s: float = 20.0  # readers run this long (longer only to drain, see drain_s)
    submit_window_s: float = 10.0  # submissions are spread over the first submit_window_s
    drain_s: float = 20.0  # after duration_s, wait at most this long for writers
    submitters: int = 3
    submissions_each: int = 4  # bound on submissions per submitter
    status_readers: int = 8
    results_readers: int = 4
    listers: int = 1
    sse_followers: bool = True  # one per accepted experiment, resuming once half-way
    think_s: float = 0.02  # pause between a reader's requests
    max_requests: int = 20_000  # bound on reader requests in all
    max_concurrent: int = 1000  # the server's quota (a 409 beyond it is counted, not failed)
    write_s: float = 4.0  # how long each simulated sweep writes
    seed: int = 0


@dataclass
class Expected:
    """An accepted submission and what its writer will write."""

    exp_id: str
    name: str
    seeds: tuple[int, ...]
    epochs: int
    accepted_at: float
    first_ok_at: float | None = None  # first 200 from /results (store exists)
    complete_at: float | None = None  # first status answer 'complete' received
    max_rows: tuple[int, float] = (0, 0.0)  # most rows a results read saw, when received
    sse_seqs: list[int] = field(default_factory=list)
    sse_final: str | None = None
    sse_connects: int = 0

    @property
    def n_trials(self) -> int:
        return len(AXIS_VALUES) * len(self.seeds)

    @property
    def n_rows(self) -> int:
        return self.n_trials * self.epochs

    def params(self, i: int) -> tuple[int, int]:
        """(axis value, seed) of trial ``i``: first axis slowest, seeds fastest."""
        return AXIS_VALUES[i // len(self.seeds)], self.seeds[i % len(self.seeds)]


def submission_body(name: str, seeds: tuple[int, ...], epochs: int) -> dict[str, Any]:
    """A small valid grid spec: 2 axis values x ``len(seeds)`` trials, ``epochs`` reports each
    (the unit tests' `service_fakes.small_spec`, whose axis is `AXIS_FIELD` over `AXIS_VALUES`)."""
    spec = small_spec(name, seeds=list(seeds))
    spec["train"] = {**spec["train"], "epochs": epochs}
    assert spec["axes"] == [{"field": AXIS_FIELD, "values": list(AXIS_VALUES)}]
    return spec


@dataclass
class EndpointStats:
    latencies: list[float] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    transport_errors: list[str] = field(default_factory=list)


@dataclass
class LoadReport:
    config: LoadConfig
    stats: dict[str, EndpointStats]
    experiments: dict[str, Expected]
    problems: list[str]
    load_s: float  # first request to last reader request
    total_s: float  # including the final verification
    sse_lag_s: list[float]
    quota_refusals: int = 0
    results_not_yet: int = 0  # 404 from /results before the writer created the experiment
    rows_verified: int = 0
    server_log: str = ""
    startup_s: float = 0.0  # server start to first /healthz answer

    @property
    def n_5xx(self) -> int:
        return sum(n for s in self.stats.values() for c, n in s.codes.items() if c >= 500)

    @property
    def n_transport_errors(self) -> int:
        return sum(len(s.transport_errors) for s in self.stats.values())

    @property
    def n_requests(self) -> int:
        return sum(len(s.latencies) + len(s.transport_errors) for s in self.stats.values())


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def format_report(rep: LoadReport) -> str:
    c = rep.config
    n_rows = sum(e.n_rows for e in rep.experiments.values())
    lines = [
        f"divsweep load test: {len(rep.experiments)} experiments ({n_rows} metric rows) "
        f"submitted by {c.submitters} submitters; {c.status_readers} status readers, "
        f"{c.results_readers} results readers, {c.listers} lister(s), "
        f"{sum(e.sse_connects for e in rep.experiments.values())} SSE connections; server "
        f"start {rep.startup_s:.1f} s, load {rep.load_s:.1f} s, with verification "
        f"{rep.total_s:.1f} s",
        f"{'endpoint':<22} {'n':>6} {'2xx':>6} {'4xx':>5} {'5xx':>4} {'conn err':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>7}",
    ]
    for name, s in rep.stats.items():
        if not s.latencies and not s.transport_errors:
            continue
        ms = [x * 1e3 for x in s.latencies] or [math.nan]
        ok = sum(n for code, n in s.codes.items() if code < 400)
        c4 = sum(n for code, n in s.codes.items() if 400 <= code < 500)
        c5 = sum(n for code, n in s.codes.items() if code >= 500)
        n = len(s.latencies) + len(s.transport_errors)
        lines.append(
            f"{name:<22} {n:>6} {ok:>6} {c4:>5} {c5:>4} {len(s.transport_errors):>8} "
            f"{percentile(ms, 50):>8.1f} {percentile(ms, 95):>8.1f} {percentile(ms, 99):>8.1f} "
            f"{max(ms):>8.1f} {n / max(rep.load_s, 1e-9):>7.1f}"
        )
    if rep.sse_lag_s:
        lag = [x * 1e3 for x in rep.sse_lag_s]
        lines.append(
            f"SSE row lag (row written -> event received): n={len(lag)} p50 "
            f"{percentile(lag, 50):.0f} ms, p95 {percentile(lag, 95):.0f} ms, "
            f"max {max(lag):.0f} ms"
        )
    lines.append(
        f"total {rep.n_requests} requests, {rep.n_requests / max(rep.load_s, 1e-9):.1f} req/s; "
        f"5xx: {rep.n_5xx}; connection errors: {rep.n_transport_errors}; "
        f"quota 409s: {rep.quota_refusals}; results 404 before the writer started: "
        f"{rep.results_not_yet}; rows verified: {rep.rows_verified}; problems: {len(rep.problems)}"
    )
    lines.extend(f"  PROBLEM: {p}" for p in rep.problems[:20])
    return "\n".join(lines)


class _Load:
    """One run's shared state; the role coroutines are methods."""

    def __init__(self, base_url: str, cfg: LoadConfig) -> None:
        self.base = base_url
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.stats: dict[str, EndpointStats] = {
            k: EndpointStats()
            for k in (
                "POST submit",
                "POST submit (retry)",
                "GET status",
                "GET results",
                "GET list",
                "GET events (connect)",
                "GET status (final)",
                "GET results (final)",
                "GET list (final)",
            )
        }
        self.exps: dict[str, Expected] = {}
        self.problems: list[str] = []
        self.sse_lag: list[float] = []
        self.quota_refusals = 0
        self.results_not_yet = 0
        self.requests = 0
        self.stop = asyncio.Event()
        self.followers: list[asyncio.Task[None]] = []
        self.t0 = time.monotonic()
        self.last_request = self.t0

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)

    async def timed(self, name: str, request: Awaitable[httpx.Response]) -> httpx.Response | None:
        """Await ``request`` (an un-awaited client call: it starts here) and record it."""
        st = self.stats[name]
        t = time.perf_counter()
        try:
            r = await request
        except httpx.TransportError as e:
            st.transport_errors.append(f"{type(e).__name__}: {e}")
            self.problem(f"{name}: connection error {type(e).__name__}: {e}")
            return None
        st.latencies.append(time.perf_counter() - t)
        st.codes[r.status_code] += 1
        if r.status_code >= 500:
            self.problem(f"{name} {r.request.url.path}: {r.status_code} {r.text[:300]}")
        return r

    def pick(self) -> Expected | None:
        """A random experiment, preferring ones still being written."""
        if not self.exps:
            return None
        live = [e for e in self.exps.values() if e.complete_at is None]
        return self.rng.choice(live or list(self.exps.values()))

    def reader_may_go(self) -> bool:
        if self.stop.is_set() or self.requests >= self.cfg.max_requests:
            return False
        self.requests += 1
        return True

    # --- roles ---------------------------------------------------------------------------------
    async def submitter(self, c: httpx.AsyncClient, who: int) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        interval = self.cfg.submit_window_s / max(self.cfg.submissions_each, 1)
        for n in range(self.cfg.submissions_each):
            # Paced to spread the submissions over the window; all of them are made unless the
            # whole run is over (a slow server delays them instead of dropping them).
            await asyncio.sleep(
                max(
                    0.0,
                    self.t0 + n * interval * (0.75 + 0.5 * self.rng.random()) - time.monotonic(),
                )
            )
            if time.monotonic() - self.t0 > self.cfg.duration_s:
                self.problem(f"submitter {who}: submission {n} not made by duration_s")
                return
            seeds = tuple(range(1 + (who + n) % 3))
            epochs = 2 + (3 * who + n) % 5
            name = f"load-{who}-{n}"
            body = json.dumps(submission_body(name, seeds, epochs))
            headers = {
                **auth,
                "Content-Type": "application/json",
                "Idempotency-Key": f"{name}-{self.cfg.seed}",
            }
            r = await self.timed(
                "POST submit", c.post("/v1/experiments", content=body, headers=headers)
            )
            if r is None:
                continue
            if r.status_code == 409 and "max_concurrent" in r.text:
                self.quota_refusals += 1
            elif r.status_code != 202:
                self.problem(f"submit {name}: {r.status_code} {r.text[:300]}")
            else:
                exp_id = r.json()["id"]
                if exp_id in self.exps:
                    self.problem(f"submit {name}: id {exp_id} was already given out")
                exp = Expected(exp_id, name, seeds, epochs, time.monotonic())
                self.exps[exp_id] = exp
                if self.cfg.sse_followers:
                    self.followers.append(asyncio.create_task(self.follower(c, exp)))
                # A client retry with the same key must get the same experiment back.
                again = await self.timed(
                    "POST submit (retry)", c.post("/v1/experiments", content=body, headers=headers)
                )
                if again is not None and (
                    again.status_code != 200
                    or again.json().get("id") != exp_id
                    or again.json().get("created") is not False
                ):
                    self.problem(
                        f"idempotent retry of {name} ({exp_id}): "
                        f"{again.status_code} {again.text[:300]}"
                    )

    async def status_reader(self, c: httpx.AsyncClient) -> None:
        while self.reader_may_go():
            exp = self.pick()
            if exp is None:
                await asyncio.sleep(0.05)
                continue
            r = await self.timed("GET status", c.get(f"/v1/experiments/{exp.exp_id}"))
            self.last_request = time.monotonic()
            if r is not None:
                self.check_status(exp, r)
            await asyncio.sleep(self.cfg.think_s)

    def check_status(self, exp: Expected, r: httpx.Response, final: bool = False) -> None:
        if r.status_code != 200:
            self.problem(f"status of {exp.exp_id}: {r.status_code} {r.text[:300]}")
            return
        body = r.json()
        status, prog = body["status"], body["progress"]
        if body["id"] != exp.exp_id or status not in ("pending", "running", "complete"):
            self.problem(
                f"status of {exp.exp_id}: id {body['id']}, status {status!r} "
                f"error {body.get('error')!r}"
            )
            return
        if prog["n_trials"] != exp.n_trials or prog["results"] > exp.n_rows:
            self.problem(
                f"status of {exp.exp_id}: n_trials {prog['n_trials']} (want "
                f"{exp.n_trials}), results {prog['results']} (of {exp.n_rows})"
            )
        if status == "complete":
            if (prog["results"], prog["complete"], prog["pending"]) != (
                exp.n_rows,
                exp.n_trials,
                0,
            ):
                self.problem(
                    f"{exp.exp_id} complete but progress {prog} (want "
                    f"{exp.n_rows} results, {exp.n_trials} complete trials)"
                )
            if exp.complete_at is None:
                exp.complete_at = time.monotonic()
        elif final:
            self.problem(f"{exp.exp_id} still {status} at the end ({prog})")

    async def results_reader(self, c: httpx.AsyncClient) -> None:
        while self.reader_may_go():
            exp = self.pick()
            if exp is None:
                await asyncio.sleep(0.05)
                continue
            sent = time.monotonic()
            r = await self.timed("GET results", c.get(f"/v1/experiments/{exp.exp_id}/results"))
            self.last_request = time.monotonic()
            if r is not None:
                self.check_results(exp, r, sent)
            await asyncio.sleep(self.cfg.think_s)

    def check_results(
        self, exp: Expected, r: httpx.Response, sent: float, final: bool = False
    ) -> int:
        """Check one JSON results answer against what the writer writes; returns its rows."""
        received = time.monotonic()
        if (
            r.status_code == 404
            and not final
            and (exp.first_ok_at is None or exp.first_ok_at > sent)
        ):
            self.results_not_yet += 1  # the writer has not created the experiment yet
            return 0
        if r.status_code != 200:
            self.problem(f"results of {exp.exp_id}: {r.status_code} {r.text[:300]}")
            return 0
        if exp.first_ok_at is None or exp.first_ok_at > received:
            exp.first_ok_at = received
        rows = r.json()["rows"]
        n = len(rows)
        seqs = [row["seq"] for row in rows]
        if seqs != list(range(1, n + 1)):
            dup = [s for s, k in Counter(seqs).items() if k > 1]
            self.problem(
                f"results of {exp.exp_id}: seqs not 1..{n} (duplicates {dup[:5]}, "
                f"first {seqs[:10]})"
            )
            return 0
        if n > exp.n_rows:
            self.problem(f"results of {exp.exp_id}: {n} rows, only {exp.n_rows} written")
        must = (
            exp.n_rows
            if (final or (exp.complete_at is not None and exp.complete_at < sent))
            else (exp.max_rows[0] if exp.max_rows[1] < sent else 0)
        )
        if n < must:
            self.problem(
                f"results of {exp.exp_id}: {n} rows, an earlier answer (or the final "
                f"status) showed {must}: rows lost"
            )
        if n > exp.max_rows[0]:
            exp.max_rows = (n, received)
        for row in rows:
            i, step = row_position(row["seq"], exp.n_trials)
            want = metric_values(i, step)
            axis, seed = exp.params(i)
            # .get: a missing column is a finding to report, not a crash of the checker
            got = (
                row.get("trial_id"),
                row.get("step"),
                row.get("test_acc"),
                row.get("train_loss"),
                row.get(AXIS_FIELD),
                row.get("seed"),
                row.get("experiment_id"),
            )
            if got != (
                trial_id(i),
                want["step"],
                want["test_acc"],
                want["train_loss"],
                axis,
                seed,
                exp.exp_id,
            ):
                self.problem(
                    f"results of {exp.exp_id} seq {row['seq']}: got {got}, want "
                    f"{(trial_id(i), *want.values(), axis, seed)}"
                )
                return 0
        return n

    async def lister(self, c: httpx.AsyncClient) -> None:
        while self.reader_may_go():
            known = len(self.exps)
            r = await self.timed("GET list", c.get("/v1/experiments?limit=50"))
            self.last_request = time.monotonic()
            if r is not None:
                if r.status_code != 200:
                    self.problem(f"list: {r.status_code} {r.text[:300]}")
                elif r.json()["total"] < known:
                    self.problem(f"list: total {r.json()['total']} < {known} accepted")
            await asyncio.sleep(max(self.cfg.think_s, 0.25))

    async def follower(self, c: httpx.AsyncClient, exp: Expected) -> None:
        """Follow the event stream; disconnect half-way and resume with Last-Event-ID."""
        deadline = self.t0 + self.cfg.duration_s + self.cfg.drain_s
        resume_at = max(1, exp.n_rows // 2)
        while exp.sse_final is None and time.monotonic() < deadline:
            last = exp.sse_seqs[-1] if exp.sse_seqs else 0
            headers = {"Last-Event-ID": str(last)} if last else {}
            exp.sse_connects += 1
            try:
                resumed = await self._stream(c, exp, headers, resume_at if last == 0 else None)
            except httpx.TransportError as e:
                self.stats["GET events (connect)"].transport_errors.append(str(e))
                self.problem(f"events of {exp.exp_id}: {type(e).__name__}: {e}")
                return
            if not resumed and exp.sse_final is None:
                return

    async def _stream(
        self, c: httpx.AsyncClient, exp: Expected, headers: dict[str, str], leave_after: int | None
    ) -> bool:
        """One connection; True when it left early on purpose (to resume)."""
        t = time.perf_counter()
        st = self.stats["GET events (connect)"]
        async with c.stream(
            "GET",
            f"/v1/experiments/{exp.exp_id}/events",
            headers=headers,
            timeout=httpx.Timeout(60, read=30),
        ) as r:
            st.latencies.append(time.perf_counter() - t)
            st.codes[r.status_code] += 1
            if r.status_code != 200:
                self.problem(f"events of {exp.exp_id}: {r.status_code}")
                return False
            event, data = "", ""
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and data:
                    if event == "result":
                        self.on_event(exp, json.loads(data))
                        if leave_after is not None and len(exp.sse_seqs) >= leave_after:
                            return True
                    elif event == "status":
                        exp.sse_final = json.loads(data)["status"]
                        return False
                    event, data = "", ""
        self.problem(f"events of {exp.exp_id}: stream ended without a status event")
        return False

    def on_event(self, exp: Expected, ev: dict[str, Any]) -> None:
        seq = ev["seq"]
        want_seq = (exp.sse_seqs[-1] if exp.sse_seqs else 0) + 1
        exp.sse_seqs.append(seq)
        self.sse_lag.append(max(0.0, time.time() - ev["time"]))
        if seq != want_seq:
            self.problem(
                f"events of {exp.exp_id}: seq {seq} after {want_seq - 1} (lost or repeated)"
            )
            return
        i, step = row_position(seq, exp.n_trials)
        if (ev["trial_id"], ev["metrics"]) != (trial_id(i), metric_values(i, step)):
            self.problem(f"events of {exp.exp_id} seq {seq}: {ev}")

    # --- after the load ------------------------------------------------------------------------
    async def verify(self, c: httpx.AsyncClient) -> int:
        """Every experiment complete, its rows exactly the written ones, listed exactly once."""
        verified = 0
        for exp in self.exps.values():
            r = await self.timed("GET status (final)", c.get(f"/v1/experiments/{exp.exp_id}"))
            if r is not None:
                self.check_status(exp, r, final=True)
            sent = time.monotonic()
            r = await self.timed(
                "GET results (final)", c.get(f"/v1/experiments/{exp.exp_id}/results")
            )
            if r is not None:
                n = self.check_results(exp, r, sent, final=True)
                if n != exp.n_rows:
                    self.problem(
                        f"results of {exp.exp_id}: {n} rows read back, {exp.n_rows} written"
                    )
                verified += n
            if self.cfg.sse_followers:
                if exp.sse_seqs != list(range(1, exp.n_rows + 1)) or exp.sse_final != "complete":
                    self.problem(
                        f"events of {exp.exp_id}: {len(exp.sse_seqs)} events (want "
                        f"seqs 1..{exp.n_rows} once each), final {exp.sse_final!r}"
                    )
        listed: list[str] = []
        url: str | None = "/v1/experiments?limit=200"
        total = -1
        while url:
            r = await self.timed("GET list (final)", c.get(url))
            if r is None or r.status_code != 200:
                self.problem(f"list {url}: {r.status_code if r else 'no answer'}")
                break
            page = r.json()
            listed += [item["id"] for item in page["items"]]
            total, url = page["total"], page["next"]
        counts = Counter(listed)
        dups = [i for i, n in counts.items() if n > 1]
        missing = set(self.exps) - set(counts)
        extra = set(counts) - set(self.exps)
        if dups or missing or extra or total != len(self.exps):
            self.problem(
                f"registry listing: total {total} for {len(self.exps)} accepted; "
                f"duplicated {dups[:5]}, missing {sorted(missing)[:5]}, "
                f"unknown {sorted(extra)[:5]}"
            )
        return verified


async def run_load(base_url: str, cfg: LoadConfig) -> LoadReport:
    """Drive the service at ``base_url`` with ``cfg``'s clients, then verify everything."""
    load = _Load(base_url, cfg)
    # Idle connections are dropped by the client (2 s) before uvicorn drops them (its keep-alive
    # timeout is 5 s), so a request never races the server closing the connection it reuses.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=128, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60), limits=limits) as c:
        submitters = [asyncio.create_task(load.submitter(c, k)) for k in range(cfg.submitters)]
        readers = (
            [asyncio.create_task(load.status_reader(c)) for _ in range(cfg.status_readers)]
            + [asyncio.create_task(load.results_reader(c)) for _ in range(cfg.results_readers)]
            + [asyncio.create_task(load.lister(c)) for _ in range(cfg.listers)]
        )
        await asyncio.gather(*submitters)
        end = load.t0 + cfg.duration_s
        hard = end + cfg.drain_s
        # Readers run for duration_s, and on (to at most hard) until every writer has finished.
        while time.monotonic() < hard and (
            time.monotonic() < end or any(e.complete_at is None for e in load.exps.values())
        ):
            await asyncio.sleep(0.1)
        load.stop.set()
        await asyncio.gather(*readers)
        load_s = load.last_request - load.t0
        remaining = max(1.0, hard - time.monotonic())
        done, pending = (
            await asyncio.wait(load.followers, timeout=remaining)
            if load.followers
            else (set(), set())
        )
        for task in pending:
            task.cancel()
            load.problem("an event stream did not finish by the deadline")
        for task in done:
            if task.exception() is not None:
                load.problem(f"an SSE follower crashed: {task.exception()!r}")
        verified = await load.verify(c)
    return LoadReport(
        cfg,
        load.stats,
        load.exps,
        load.problems,
        load_s,
        time.monotonic() - load.t0,
        load.sse_lag,
        load.quota_refusals,
        load.results_not_yet,
        verified,
    )


def run_against_new_server(state_dir: Path, cfg: LoadConfig, writer: str = "process") -> LoadReport:
    """Start a :class:`LoadServer`, run the load, stop it; server errors become problems."""
    server = LoadServer(
        state_dir, write_s=cfg.write_s, writer=writer, max_concurrent=cfg.max_concurrent
    )
    server.start()
    try:
        report = asyncio.run(run_load(server.url, cfg))
    finally:
        server.stop()
    report.server_log = server.log_text()
    report.startup_s = server.startup_s
    # The server logs at WARNING: an unhandled error (a 500) or a failed writer thread shows
    # as an "unhandled error in ..." line and a traceback ending in the exception's line.
    for line in report.server_log.splitlines():
        if line.startswith(("unhandled error", "ERROR:", "Exception in thread")) or re.match(
            r"^[A-Za-z_][\w.]*(Error|Exception)\b", line
        ):
            report.problems.append(f"server log: {line[:300]}")
    for exp_id, text in server.writer_logs().items():
        report.problems.append(f"writer of {exp_id} printed: {text[-500:]}")
    return report


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "write":
        write_job(json.loads(Path(argv[1]).read_text()))
        return
    raise SystemExit("usage: python tests/service/loadgen.py write JOB.json")


if __name__ == "__main__":
    main(sys.argv[1:])
