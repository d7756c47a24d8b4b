"""Submitting, watching and stopping sweeps as Ray jobs (the Ray Jobs API over HTTP).

The service builds every entry point itself: ``<python> -m sweeps.run spec.json
--experiment-id <id> --store <uri>``, each part produced by the service (an id it generated,
the configured store URI, a fixed file name) and quoted with :func:`shlex.quote`. The spec never
enters the command line: it is written to ``spec.json`` in a per-experiment directory that Ray
ships as the job's ``working_dir``.

Example::

    runner = RayJobRunner(dashboard_url="http://127.0.0.1:8265", jobs_dir=Path("/tmp/jobs"),
                          store_uri="/tmp/results", python="python")
    job_id = runner.submit("x0123456789abcdef", spec_json)   # 'divsweep-x0123456789abcdef'
    runner.status(job_id)                                    # JobState.RUNNING
    runner.stop(job_id)
"""

from __future__ import annotations

import enum
import importlib.util
import logging
import os
import shlex
import shutil
import threading
from pathlib import Path
from typing import Any, Protocol

from service.errors import BackendError
from service.ray_http import answers, get_json, live_nodes

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
JOB_PREFIX = "divsweep-"


class JobState(enum.StrEnum):
    """Ray's job states plus MISSING (the cluster does not know the job, e.g. it restarted)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    MISSING = "MISSING"

    @property
    def is_terminal(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


class JobRunner(Protocol):
    """What the service needs from a cluster; tests use an in-memory fake."""

    @property
    def dashboard_url(self) -> str | None: ...

    def submit(self, exp_id: str, spec_json: str) -> str: ...

    def status(self, job_id: str) -> JobState: ...

    def stop(self, job_id: str) -> None: ...

    def ping(self) -> bool: ...

    def nodes(self) -> list[dict[str, float]] | None:
        """The resources of each live node (Ray's names: CPU, GPU, memory), None if unknown."""
        ...

    def cluster_status(self) -> dict[str, Any] | None:
        """Ray's cluster status (queued demands, usage; `service.waiting`), None if unknown."""
        ...


def job_id_for(exp_id: str) -> str:
    """The Ray submission id of an experiment; deterministic so a crash between submitting and
    recording it can be reconciled."""
    return JOB_PREFIX + exp_id


def build_entrypoint(python: str, exp_id: str, store_uri: str) -> str:
    """The fixed job command.

    ``python -m sweeps.run spec.json --experiment-id x0123456789abcdef --store /s``
    """
    argv = [python, "-m", "sweeps.run", SPEC_FILE, "--experiment-id", exp_id, "--store", store_uri]
    return shlex.join(argv)


def write_job_dir(jobs_dir: Path, exp_id: str, spec_json: str) -> Path:
    """Create ``jobs_dir/<id>/spec.json`` atomically and return the directory."""
    workdir = jobs_dir / exp_id
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / (SPEC_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(spec_json)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, workdir / SPEC_FILE)
    return workdir


def _package_dirs() -> list[str]:
    """Source directories of our packages, for ``runtime_env['py_modules']`` (found, not
    imported: the service does not need the trainer's torch to ship it)."""
    out = []
    for name in ("data", "trainer", "sweeps"):
        found = importlib.util.find_spec(name)
        if found is None or found.origin is None:
            raise BackendError(f"cannot ship package {name!r}: it is not installed here")
        out.append(str(Path(found.origin).parent))
    return out


class RayJobRunner:
    """:class:`JobRunner` over ``ray.job_submission.JobSubmissionClient``.

    The client is created on first use (its constructor contacts the dashboard), so building the
    app never needs a running cluster.
    """

    def __init__(
        self,
        dashboard_url: str,
        jobs_dir: Path,
        store_uri: str,
        python: str = "python",
        ship_packages: bool = False,
        env_vars: dict[str, str] | None = None,
        token: str | None = None,
        driver_cpus: float = 0.0,
    ) -> None:
        self._url = dashboard_url
        #: Ray's token authentication (`service.local_ray`): every call carries the token.
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.jobs_dir = jobs_dir
        self.store_uri = store_uri
        self.python = python
        self.ship_packages = ship_packages
        self.env_vars = dict(env_vars or {})
        #: `Settings.driver_cpus`: above 0 the driver runs on a worker node, not the head
        self.driver_cpus = driver_cpus
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def dashboard_url(self) -> str | None:
        return self._url

    def _jobs(self) -> Any:
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                try:
                    self._client = JobSubmissionClient(self._url, headers=self.headers)
                except Exception as e:  # ConnectionError, RuntimeError: both mean unreachable
                    raise BackendError(f"Ray Jobs API at {self._url} is unreachable: {e}") from e
            return self._client

    def submit(self, exp_id: str, spec_json: str) -> str:
        workdir = write_job_dir(self.jobs_dir, exp_id, spec_json)
        runtime_env: dict[str, Any] = {"working_dir": str(workdir)}
        if self.ship_packages:
            runtime_env["py_modules"] = _package_dirs()
        if self.env_vars:
            runtime_env["env_vars"] = self.env_vars
        entrypoint = build_entrypoint(self.python, exp_id, self.store_uri)
        try:
            job_id: str = self._jobs().submit_job(
                entrypoint=entrypoint,
                submission_id=job_id_for(exp_id),
                runtime_env=runtime_env,
                metadata={"divsweep_experiment": exp_id},
                entrypoint_num_cpus=self.driver_cpus or None,
            )
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"Ray refused job for experiment {exp_id}: {e}") from e
        log.info("submitted %s as Ray job %s", exp_id, job_id)
        return job_id

    def status(self, job_id: str) -> JobState:
        try:
            raw = self._jobs().get_job_status(job_id)
        except BackendError:
            raise
        except RuntimeError as e:
            # The SDK raises RuntimeError('... does not exist') for unknown jobs.
            if "does not exist" in str(e) or "404" in str(e):
                return JobState.MISSING
            raise BackendError(f"Ray job status of {job_id} unavailable: {e}") from e
        except Exception as e:
            raise BackendError(f"Ray job status of {job_id} unavailable: {e}") from e
        return JobState(str(raw.value))

    def stop(self, job_id: str) -> None:
        try:
            self._jobs().stop_job(job_id)
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"could not stop Ray job {job_id}: {e}") from e

    def ping(self) -> bool:
        return answers(f"{self._url}/api/version", self.headers)

    def nodes(self) -> list[dict[str, float]] | None:
        """Live nodes' total resources (`service.ray_http.live_nodes`); None when Ray does not
        list them (the caller then cannot refuse infeasible requests)."""
        return live_nodes(self._url, self.headers)

    def cluster_status(self) -> dict[str, Any] | None:
        """The ``data`` of the dashboard's ``/api/cluster_status`` (`service.waiting` reads it);
        None when it does not answer."""
        body = get_json(f"{self._url}/api/cluster_status", self.headers)
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else None

    def cleanup(self, exp_id: str) -> None:
        """Remove the job's working directory once the experiment is terminal."""
        shutil.rmtree(self.jobs_dir / exp_id, ignore_errors=True)
