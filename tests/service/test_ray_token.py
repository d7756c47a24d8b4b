"""Ray's token authentication on the head `divsweep serve` starts (issue 13, ShadowRay).

`divsweep serve` runs as a user runs it, in its own process with its own state directory; it
starts a private Ray head in token mode. The test then plays another local user who finds the
head's ports: without the token (or with a wrong one) the Jobs API refuses to list or submit
jobs, while the service, which holds the token, still runs the smoke preset to `complete`
(its sweep driver and trials join the token-mode cluster too).
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn_proc import Served, serve

from service.local_ray import LocalRayError, ensure_token

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("serve"), num_cpus=2) as s:
        yield s


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
    r = httpx.post(
        f"{served.url}/v1/experiments", json={"preset": "smoke"}, headers=auth, timeout=60
    )
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
