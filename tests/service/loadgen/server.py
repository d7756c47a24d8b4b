"""The server half: the real app with a simulated Ray (`SimulatedRunner`) and the uvicorn
process that serves it (`LoadServer`); ``python -m loadgen.server write JOB.json`` is the
process-mode writer."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvicorn_proc import stop_process, uvicorn_command, wait_healthy

from service.local_ray import free_port

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.jobs import JobState

from loadgen.common import SUBMITTER, TOKEN, metric_values, row_position, trial_id

#: the directory that holds the `loadgen` package (on the path of the processes it starts)
SUPPORT_DIR = Path(__file__).resolve().parents[1]

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
        from sweeps.specs.spec import ExperimentSpec

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

    #: Folders the process-mode writer imports from (this package's parent).
    python_path: tuple[Path, ...] = (SUPPORT_DIR,)

    def job_command(self, job_file: Path) -> list[str]:
        """The process-mode writer of one job (`write_job` on ``job_file``)."""
        return [sys.executable, "-m", "loadgen.server", "write", str(job_file)]

    def submit(self, exp_id: str, spec_json: str) -> str:
        from service.jobs import job_id_for

        job_id = job_id_for(exp_id)  # the id Ray would get, so refresh/reconcile find it
        if log := os.environ.get("LOADGEN_SUBMIT_LOG"):
            # one line per submission, appended by every server process that shares the log
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {exp_id}\n")
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
                    self.job_command(path),
                    env={
                        **os.environ,
                        "PYTHONPATH": os.pathsep.join(
                            [*map(str, self.python_path), os.environ.get("PYTHONPATH", "")]
                        ),
                    },
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
    """``uvicorn --factory loadgen.server:app_from_env --app-dir tests/service``.

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
    """The real app in a uvicorn subprocess on a free loopback port, state under ``state_dir``
    (``factory``: the app factory uvicorn calls, importable from this folder)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        write_s: float = 4.0,
        writer: str = "process",
        max_concurrent: int = 1000,
        sse_poll_s: float = 0.5,
        factory: str = "loadgen.server:app_from_env",
        env: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.factory = factory
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
            **(env or {}),
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
                    self.factory,
                    self.port,
                    "--app-dir",
                    str(SUPPORT_DIR),
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


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "write":
        write_job(json.loads(Path(argv[1]).read_text()))
        return
    raise SystemExit("usage: python -m loadgen.server write JOB.json")


if __name__ == "__main__":
    main(sys.argv[1:])
