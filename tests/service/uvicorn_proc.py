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

import subprocess
import time
from collections.abc import Callable

import httpx


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
