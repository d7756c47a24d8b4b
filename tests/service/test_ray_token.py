"""Ray's token authentication on the head `divsweep serve` starts (issue 13, ShadowRay).

`divsweep serve` runs as a user runs it, in its own process with its own state directory; it
starts a private Ray head in token mode. The test then plays another local user who finds the
head's ports: without the token (or with a wrong one) the Jobs API refuses to list or submit
jobs, while the service, which holds the token, still runs the smoke preset to `complete`
(its sweep driver and trials join the token-mode cluster too).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn_proc import wait_healthy

from service.local_ray import LocalRayError, ensure_token, free_port

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Served:
    url: str
    state: Path
    token: str  # the service's bearer token (not Ray's)
    dashboard_url: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DIVSWEEP_", "RAY_AUTH", "RAY_ADDRESS"))}
    env |= {"DIVSWEEP_STATE_DIR": str(state), "DIVSWEEP_SSE_POLL_S": "0.3"}
    log = open(state / "serve.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("divsweep")), "serve", "--port", str(port),
         "--num-cpus", "2",
         "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, 180, lambda: (state / "serve.log").read_text(errors="replace"))
        head = json.loads((state / "ray-head.json").read_text())
        yield Served(url, state, (state / "token").read_text().strip(), head["dashboard_url"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # serve stops its head on the way out
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_the_token_file_is_private(served: Served) -> None:
    path = served.state / "ray-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    record = json.loads((served.state / "ray-head.json").read_text())
    assert record["token_path"] == str(path.resolve())


def test_jobs_api_refuses_clients_without_the_token(served: Served) -> None:
    jobs = f"{served.dashboard_url}/api/jobs/"
    assert httpx.get(jobs, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer " + "0" * 64}
    assert httpx.get(jobs, headers=wrong, timeout=10).status_code == 403
    body = {"entrypoint": "touch /tmp/divsweep-pwned", "submission_id": "intruder"}
    assert httpx.post(jobs, json=body, timeout=10).status_code == 401
    assert httpx.post(jobs, json=body, headers=wrong, timeout=10).status_code == 403
    token = (served.state / "ray-token").read_text().strip()
    ok = httpx.get(jobs, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200
    assert "intruder" not in ok.text


def test_the_service_still_runs_experiments(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    assert httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200
    r = httpx.post(f"{served.url}/v1/experiments", json={"preset": "smoke"}, headers=auth,
                   timeout=60)
    assert r.status_code == 202, r.text
    exp_id = r.json()["id"]
    deadline = time.monotonic() + 240
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{served.url}/v1/experiments/{exp_id}", timeout=30).json()
        if body["status"] in ("complete", "failed", "cancelled"):
            break
        time.sleep(1)
    log = (served.state / "serve.log").read_text(errors="replace")[-3000:]
    assert body["status"] == "complete", log
    progress = body["progress"]
    assert progress["complete"] == progress["n_trials"] == 2 and progress["results"] > 0


def test_ensure_token_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "ray-token"
    token = ensure_token(path)
    assert ensure_token(path) == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(LocalRayError, match="chmod 600"):
        ensure_token(path)
