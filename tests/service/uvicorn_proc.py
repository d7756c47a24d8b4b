"""A real uvicorn server process for tests and benchmarks: wait until it serves, stop it.

Both the end-to-end tests and the load generator start the service as its own process (what a
user runs), so that a SIGKILL, a restart or a slow start-up behaves as it would in production.

Example::

    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", ...], env=env)
    seconds = wait_healthy(proc, "http://127.0.0.1:8000", 60, lambda: log.read_text())
    ...
    stop_process(proc)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.local_ray import free_port


def wait_healthy(
    proc: subprocess.Popen[bytes], url: str, timeout_s: float, log_text: Callable[[], str]
) -> float:
    """Seconds until ``url``/healthz answered 200; RuntimeError with the server's log if the
    process exits first or ``timeout_s`` passes (the process is stopped then)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError("the service exited at start-up:\n" + log_text())
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"the service did not answer /healthz in {timeout_s} s:\n" + log_text())


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL after 20 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def uvicorn_command(factory: str, port: int, *extra: str) -> list[str]:
    """``python -m uvicorn --factory FACTORY`` on 127.0.0.1:``port`` with warnings only, plus
    ``extra`` options (``--app-dir``, ``--no-access-log``, ...)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM a process started in a session of its own (`divsweep serve` stops its Ray head
    on the way out), SIGKILL to its whole group after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Served:
    """A running ``divsweep serve`` with its own Ray head (`serve`)."""

    url: str
    state: Path
    token: str  # the service's bearer token (not Ray's)
    dashboard_url: str
    ray_address: str


@contextmanager
def serve(state: Path, num_cpus: int, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``divsweep serve`` as a user runs it: its own process, state directory and Ray head (in
    token mode); stopped with SIGTERM (which stops the head), SIGKILL to the group after 60 s.
    ``env`` adds ``DIVSWEEP_*`` settings."""
    port = free_port()
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DIVSWEEP_", "RAY_AUTH", "RAY_ADDRESS"))
    }
    full |= {"DIVSWEEP_STATE_DIR": str(state), "DIVSWEEP_SSE_POLL_S": "0.3", **(env or {})}
    log = open(state / "serve.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("divsweep")),
            "serve",
            "--port",
            str(port),
            "--num-cpus",
            str(num_cpus),
            "--log-level",
            "warning",
        ],
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, 180, lambda: (state / "serve.log").read_text(errors="replace"))
        head = json.loads((state / "ray-head.json").read_text())
        yield Served(
            url,
            state,
            (state / "token").read_text().strip(),
            head["dashboard_url"],
            head["address"],
        )
    finally:
        stop_group(proc)
        log.close()


def submit_preset(url: str, token: str, preset: str, overrides: dict[str, object]) -> str:
    """``POST /v1/experiments`` of a preset with overrides; the new experiment's id (a 202)."""
    r = httpx.post(
        f"{url}/v1/experiments",
        headers={"Authorization": f"Bearer {token}"},
        json={"preset": preset, "overrides": overrides},
        timeout=120,
    )
    assert r.status_code == 202, r.text
    exp_id: str = r.json()["id"]
    return exp_id


def wait_final(url: str, exp_id: str, timeout_s: float) -> dict[str, object]:
    """The experiment's status once it is complete, failed or cancelled (or at ``timeout_s``)."""
    deadline, body = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/v1/experiments/{exp_id}", timeout=60).json()
        if body["status"] in ("complete", "failed", "cancelled"):
            break
        time.sleep(1)
    return body
