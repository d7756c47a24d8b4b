"""The client half: `run_load` drives a running server with concurrent clients and checks every
answer; `format_report` prints the latencies; `run_against_new_server` starts one first."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from service_fakes import small_spec

if TYPE_CHECKING:
    pass

from loadgen.common import AXIS_FIELD, AXIS_VALUES, TOKEN, metric_values, row_position, trial_id
from loadgen.server import LoadServer

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
