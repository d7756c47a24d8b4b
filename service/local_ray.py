"""Start and stop a private local Ray head (GCS, dashboard, Jobs API) bound to loopback.

``divsweep serve`` uses this when no ``RAY_ADDRESS`` is given, and the test suite uses it to get
a real cluster that accepts ``ray job submit``. Every port is chosen free at start so that several
heads (parallel test sessions, a developer's own cluster) never collide, and the head runs in its
own process group so that stopping it never touches another Ray cluster on the machine (unlike
``ray stop``, which kills every Ray process of the user).

If the process that started a head dies without stopping it (SIGKILL, OOM), the head and its
running sweeps live on. ``divsweep serve`` records its head with `LocalRayHead.save` and, when it
starts again, `LocalRayHead.attach` re-adopts that head instead of starting a second one, so the
experiments in the registry keep their Ray jobs.

Example::

    head = LocalRayHead.start(num_cpus=2)
    head.dashboard_url      # 'http://127.0.0.1:52811' -> the Jobs API and the dashboard
    head.address            # '127.0.0.1:41233'        -> RAY_ADDRESS for drivers
    head.stop()
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from service.ray_http import answers, live_nodes

log = logging.getLogger(__name__)


class LocalRayError(RuntimeError):
    """The local Ray head could not be started."""


class LocalRayHeadExited(LocalRayError):
    """``ray start`` exited before the head was ready."""


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live (not zombie) member.

    An adopted head's processes are not our children; once killed they may stay zombies until
    whatever reaps orphans gets to them (in a container, possibly never), and ``killpg(pgid, 0)``
    still succeeds on zombies. So on Linux, read the states from /proc.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ..."; comm may contain spaces, so split after ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def ensure_token(path: str | Path) -> str:
    """The token in ``path``, created first (random, 256 bits, mode 600) if there is none.

    The file is created with ``O_EXCL`` and owner-only permissions in one call, so there is no
    moment when another user could read it; an existing file readable by others is refused.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise LocalRayError(
                f"{path} is open to other users (mode {oct(mode)}); chmod 600 "
                "it, or delete it to get a new token"
            )
        return path.read_text().strip()
    import secrets

    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def ray_env_token() -> str | None:
    """The token a Ray client on this machine would use for a token-mode cluster: Ray's own
    sources in Ray's order (``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names,
    ``~/.ray/auth_token``), or None. `divsweep serve` sends it to a cluster it did not start."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(n: int, avoid: Collection[int] = ()) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now, none of them in ``avoid``.

    All sockets stay bound until every port is chosen: asking one at a time can hand out the
    same port twice (the kernel reuses a port as soon as its socket closes), and a head whose
    dashboard took the port the service was about to bind made `divsweep serve` fail.
    """
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = int(s.getsockname()[1])
            if port not in avoid:
                ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()


@dataclass(frozen=True)
class GcsStore:
    """Where a head's GCS keeps its state for fault tolerance: a Redis ``address``
    (``host:port``) and the ``namespace`` of this cluster in it (Ray's
    ``RAY_external_storage_namespace``; one Redis can serve several clusters)."""

    address: str
    namespace: str = "divsweep"


@dataclass(frozen=True)
class HeadPorts:
    """The seven ports of a head; a head restarted under GCS fault tolerance takes the old
    head's (`of`), so that its worker nodes and clients find it where it was."""

    gcs: int
    dashboard: int
    client: int
    agent: int
    agent_grpc: int
    metrics: int
    runtime_env: int

    @classmethod
    def free(cls, avoid: Collection[int] = ()) -> HeadPorts:
        return cls(*free_ports(7, avoid))

    @classmethod
    def of(cls, head: LocalRayHead) -> HeadPorts:
        """The GCS and dashboard ports of ``head``, the others free now."""
        gcs = int(head.address.rsplit(":", 1)[1])
        dashboard = int(head.dashboard_url.rsplit(":", 1)[1])
        return cls(gcs, dashboard, *free_ports(5, (gcs, dashboard)))


def _head_command(
    ports: HeadPorts, tmp: Path, num_cpus: int, num_gpus: int | None, object_store_mb: int
) -> list[str]:
    """``ray start --head --block`` on loopback with every port fixed."""
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--num-cpus={num_cpus}",
        "--node-ip-address=127.0.0.1",
        f"--port={ports.gcs}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports.dashboard}",
        f"--temp-dir={tmp}",
        f"--object-store-memory={object_store_mb * 1024 * 1024}",
        f"--ray-client-server-port={ports.client}",
        f"--dashboard-agent-listen-port={ports.agent}",
        f"--dashboard-agent-grpc-port={ports.agent_grpc}",
        f"--metrics-export-port={ports.metrics}",
        f"--runtime-env-agent-port={ports.runtime_env}",
    ]
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    return cmd


def _head_env(token_path: str | Path | None, redis: GcsStore | None) -> dict[str, str]:
    """The head's environment: its auth mode fixed either way, and its GCS store."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    # Fix the mode explicitly either way: Ray >= 2.5x turns token auth on for `ray start`
    # whenever ~/.ray/auth_token exists (any local `ray.init()` writes it), so the mode
    # would otherwise depend on what ran on the machine before.
    env.pop("RAY_AUTH_TOKEN", None)
    if token_path is not None:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(Path(token_path).resolve())
    else:
        env["RAY_AUTH_MODE"] = "disabled"
        env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_REDIS_ADDRESS", None)
    if redis is not None:
        env["RAY_REDIS_ADDRESS"] = redis.address
        env["RAY_external_storage_namespace"] = redis.namespace
    return env


@dataclass
class LocalRayHead:
    """A running ``ray start --head --block`` process group."""

    process: subprocess.Popen[bytes] | None  # None for a head adopted with `attach`
    address: str
    dashboard_url: str
    temp_dir: Path
    owns_temp_dir: bool
    pgid: int = 0  # the head's process group (``ray start`` leads it)
    #: The file holding the head's auth token (Ray's token mode), None for a head without one.
    token_path: Path | None = None
    #: Where its GCS keeps its state (GCS fault tolerance), None: in memory only.
    redis: GcsStore | None = None

    def __post_init__(self) -> None:
        if not self.pgid and self.process is not None:
            self.pgid = self.process.pid

    @property
    def token(self) -> str | None:
        """The head's auth token (read from `token_path`), or None."""
        if self.token_path is None:
            return None
        return self.token_path.read_text().strip() or None

    @property
    def headers(self) -> dict[str, str]:
        """What every HTTP call to this head's dashboard and Jobs API must carry."""
        token = self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def alive(self) -> bool:
        """Whether the head's process group still has a process."""
        if self.process is not None:
            return self.process.poll() is None
        return _group_alive(self.pgid)

    def save(self, path: str | Path) -> None:
        """Record this head in ``path`` (JSON) for `attach`."""
        record = {
            "address": self.address,
            "dashboard_url": self.dashboard_url,
            "temp_dir": str(self.temp_dir),
            "owns_temp_dir": self.owns_temp_dir,
            "pgid": self.pgid,
            "token_path": str(self.token_path) if self.token_path else None,
            "redis": [self.redis.address, self.redis.namespace] if self.redis else None,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    @classmethod
    def recorded(cls, path: str | Path) -> LocalRayHead | None:
        """The head recorded in ``path`` (`save`), alive or not; None without a record."""
        try:
            rec = json.loads(Path(path).read_text())
            token_path = Path(rec["token_path"]) if rec.get("token_path") else None
            redis = GcsStore(*rec["redis"]) if rec.get("redis") else None
            return cls(
                None,
                rec["address"],
                rec["dashboard_url"],
                Path(rec["temp_dir"]),
                bool(rec["owns_temp_dir"]),
                int(rec["pgid"]),
                token_path,
                redis,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def attach(cls, path: str | Path) -> LocalRayHead | None:
        """The head recorded in ``path`` if it still runs and answers, else None.

        A record of a head that is gone is deleted, so the caller starts a fresh one.
        """
        path = Path(path)
        head = cls.recorded(path)
        if head is None:
            return None
        if head.pgid > 0 and head.alive() and head.jobs_api_ready():
            log.info("re-attached to the local Ray head at %s", head.address)
            return head
        log.info("the Ray head recorded in %s is gone; starting a new one", path)
        path.unlink(missing_ok=True)
        return None

    @classmethod
    def start(
        cls,
        num_cpus: int = 2,
        num_gpus: int | None = None,
        object_store_mb: int = 512,
        temp_dir: str | Path | None = None,
        timeout_s: float = 90.0,
        token_path: str | Path | None = None,
        avoid_ports: Collection[int] = (),
        redis: GcsStore | None = None,
        ports: HeadPorts | None = None,
        attempts: int = 2,
    ) -> LocalRayHead:
        """Start a head on loopback and wait until it is `ready`; up to ``attempts`` times when
        ``ray start`` exits early (Ray's raylet gives its dashboard agent a fixed 15 s to start
        and exits when a loaded machine misses it, ray-project/ray#65983).

        With ``token_path`` (a file holding a token, see `ensure_token`) the head runs in Ray's
        token authentication mode: its GCS, dashboard and Jobs API refuse every client that does
        not present the token, so another local user cannot submit jobs to it (ShadowRay,
        CVE-2023-48022). Its workers and job drivers inherit the mode and the token's path.
        ``avoid_ports`` are ports the head must leave alone (the service's own). With ``redis``
        the GCS keeps its state there (Ray's GCS fault tolerance); a head started again with the
        same Redis and namespace, on the same ``ports`` (`HeadPorts.of` the old one), recovers
        the cluster: worker nodes, their actors and job drivers reconnect to it.
        """
        # Unix socket paths are limited to ~107 bytes, so the temp dir must be short.
        owns = temp_dir is None
        tmp = Path(temp_dir) if temp_dir else Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        tmp.mkdir(parents=True, exist_ok=True)
        ports = ports or HeadPorts.free(avoid_ports)
        for attempt in range(1, attempts + 1):
            head = cls._launch(
                ports, tmp, owns, num_cpus, num_gpus, object_store_mb, token_path, redis
            )
            try:
                head._wait_ready(timeout_s)
                return head
            except LocalRayHeadExited:
                if attempt == attempts:
                    raise
                log.warning("ray start exited early (see %s); starting it again", tmp / "head.log")
        raise AssertionError("unreachable")

    @classmethod
    def _launch(
        cls,
        ports: HeadPorts,
        tmp: Path,
        owns: bool,
        num_cpus: int,
        num_gpus: int | None,
        object_store_mb: int,
        token_path: str | Path | None,
        redis: GcsStore | None = None,
    ) -> LocalRayHead:
        """``ray start --head --block`` in a session of its own; not yet ready."""
        cmd = _head_command(ports, tmp, num_cpus, num_gpus, object_store_mb)
        logf = open(tmp / "head.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            cmd,
            env=_head_env(token_path, redis),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(
            proc,
            f"127.0.0.1:{ports.gcs}",
            f"http://127.0.0.1:{ports.dashboard}",
            tmp,
            owns,
            token_path=Path(token_path).resolve() if token_path is not None else None,
            redis=redis,
        )

    def _wait_ready(self, timeout_s: float) -> None:
        """Return once the head is `ready`; stop it and raise `LocalRayError` if it exits or
        takes longer than ``timeout_s``."""
        assert self.process is not None  # only a head this process started
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop(keep_temp_dir=True)
                raise LocalRayHeadExited(
                    f"ray start exited with code {code}; see {self.temp_dir / 'head.log'}"
                )
            if self.ready():
                log.info("local Ray head up at %s (dashboard %s)", self.address, self.dashboard_url)
                return
            time.sleep(0.5)
        self.stop()
        raise LocalRayError(f"Ray head did not answer within {timeout_s:.0f}s")

    def jobs_api_ready(self) -> bool:
        """True once the dashboard's Jobs API answers."""
        return answers(f"{self.dashboard_url}/api/jobs/", self.headers)

    def ready(self) -> bool:
        """True once the Jobs API answers and Ray lists the head as a live node: a service
        asking for the nodes earlier would find none, and could check no submission."""
        return self.jobs_api_ready() and live_nodes(self.dashboard_url, self.headers) is not None

    def stop(self, grace_s: float = 10.0, keep_temp_dir: bool = False) -> None:
        """Stop every process of this head (and nothing else), its jobs' drivers included."""
        if self.alive():
            self._stop_jobs(grace_s)
        if self.alive():
            try:
                os.killpg(self.pgid, signal.SIGTERM)
                self._wait_gone(grace_s)
            except ProcessLookupError:
                pass
        # `ray start --block` may ignore SIGTERM, and workers started by the raylet live in the
        # same process group: SIGKILL whatever is left.
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.process is not None:
            self.process.wait()
        else:
            self._wait_gone(grace_s)
        if self.owns_temp_dir and not keep_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _wait_gone(self, timeout_s: float) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            return
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _stop_jobs(self, timeout_s: float) -> None:
        """Ask the Jobs API to stop every unfinished job.

        A job's driver runs in its own process session, so killing the head's process group
        would leave it orphaned (and a sweep driver without its cluster waits forever).
        """
        try:
            from ray.job_submission import JobSubmissionClient

            client = JobSubmissionClient(self.dashboard_url, headers=self.headers)
            running = [j for j in client.list_jobs() if not j.status.is_terminal()]
            for job in running:
                if job.submission_id:
                    client.stop_job(job.submission_id)
            deadline = time.monotonic() + timeout_s
            for job in running:
                while job.submission_id and time.monotonic() < deadline:
                    if client.get_job_status(job.submission_id).is_terminal():
                        break
                    time.sleep(0.2)
        except Exception as exc:  # noqa: BLE001 - best effort on the way down
            log.warning("could not stop the jobs of the Ray head: %s", exc)
