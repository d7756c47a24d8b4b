"""End to end: a real uvicorn process, a real local Ray head, the real smoke preset.

One module-scoped service runs the whole story in order (each step needs the previous one):
submit over REST -> SSE events arrive while trials run -> Parquet download read with pyarrow ->
cancel a running experiment -> restart the service and find both experiments intact -> the
results page in headless Chromium.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from browser import Browser, chromium_path, open_browser
from uvicorn_proc import stop_process, uvicorn_command, wait_healthy

from service.local_ray import free_port

pytestmark = pytest.mark.slow

TOKEN = "e2e-token-abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class ServiceProcess:
    """``uvicorn --factory service.app:app_from_env`` in a subprocess, configured by env."""

    def __init__(self, state_dir: Path, dashboard_url: str) -> None:
        self.state_dir = state_dir
        self.dashboard_url = dashboard_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(
            os.environ,
            DIVSWEEP_STATE_DIR=str(self.state_dir),
            DIVSWEEP_DASHBOARD_URL=self.dashboard_url,
            DIVSWEEP_TOKENS=json.dumps({"e2e": TOKEN}),
            DIVSWEEP_JOB_PYTHON=sys.executable,
            DIVSWEEP_SSE_POLL_S="0.3",
        )
        log = open(self.state_dir / f"uvicorn-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            uvicorn_command("service.app:app_from_env", self.port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_healthy(self.proc, self.url, 60, self.log_text)

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, an OOM kill, a pulled plug)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in self.state_dir.glob("uvicorn-*.log")
        )

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=60, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=120, headers=AUTH, **kw)


@pytest.fixture(scope="module")
def service(ray_head: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("svc"), ray_head.dashboard_url)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _events(
    svc: ServiceProcess, exp_id: str, timeout_s: float = 300, last_event_id: int | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs from the SSE stream until it ends (after ``last_event_id``)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with httpx.stream(
        "GET",
        f"{svc.url}/v1/experiments/{exp_id}/events",
        headers=headers,
        timeout=httpx.Timeout(10, read=timeout_s),
    ) as r:
        assert r.status_code == 200
        event = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                yield event, json.loads(line[5:])


STATE: dict[str, Any] = {}


def test_submit_stream_and_download(service: ServiceProcess) -> None:
    r = service.post("/v1/experiments", json={"preset": "smoke"})
    assert r.status_code == 202, r.text
    exp_id = r.json()["id"]
    STATE["done"] = exp_id
    seen: list[dict[str, Any]] = []
    status_at_first_result = None
    final = None
    for event, data in _events(service, exp_id):
        if event == "result":
            if not seen:
                status_at_first_result = service.get(f"/v1/experiments/{exp_id}").json()["status"]
            seen.append(data)
        elif event == "status":
            final = data
    assert final is not None and final["status"] == "complete", (final, service.log_text())
    # Events arrived while the sweep was still running, in seq order.
    assert status_at_first_result in ("pending", "running")
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    assert final["progress"]["complete"] == 2 and final["progress"]["pending"] == 0
    assert final["progress"]["best"] is not None

    pq_bytes = service.get(f"/v1/experiments/{exp_id}/results?format=parquet").content
    table = pq.read_table(io.BytesIO(pq_bytes))
    assert table.num_rows == len(seen)
    assert "test_acc" in table.column_names
    assert set(table.column("trial_id").to_pylist()) == {e["trial_id"] for e in seen}
    summ = service.get(f"/v1/experiments/{exp_id}/summary").json()["rows"]
    assert len(summ) == 2  # two grid cells
    png = service.get(f"/v1/experiments/{exp_id}/plot.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_cancel_running_experiment(
    service: ServiceProcess, ray_head: Any, browser: Browser | None
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    # Long enough (many epochs) that it is still running when cancelled.
    body = {"preset": "smoke", "overrides": {"train": {"epochs": 200}}}
    exp_id = service.post("/v1/experiments", json=body).json()["id"]
    STATE["cancelled"] = exp_id
    for event, _ in _events(service, exp_id):
        assert event == "result", "ended before any result arrived"
        break  # a trial has reported: the sweep is running
    if browser is not None:
        # The results page in a real browser while the sweep runs. The script refreshes a row
        # once on load and again whenever its event stream delivers a new result, so a second
        # refresh with more results than the page was rendered with proves the live path.
        row = browser.html_when(
            f"{service.url}/",
            f'tr[data-id="{exp_id}"]',
            "(el.dataset.initial ??= el.dataset.results) && "
            "Number(el.dataset.refreshed) >= 2 && el.dataset.status === 'running' && "
            "Number(el.dataset.results) > Number(el.dataset.initial)",
            timeout_s=120,
        )
        assert " running, " in row and "trials done" in row, row
    r = service.post(f"/v1/experiments/{exp_id}/cancel")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "cancelled"
    assert out["progress"]["running"] == 0 and out["progress"]["cancelled"] >= 1
    assert out["progress"]["results"] >= 1
    jobs = JobSubmissionClient(ray_head.dashboard_url)
    assert jobs.get_job_status(f"divsweep-{exp_id}") == JobStatus.STOPPED
    rows = service.get(f"/v1/experiments/{exp_id}/results").json()["rows"]
    assert len(rows) >= 1  # what was stored before the cancel is kept
    STATE["cancelled_rows"] = len(rows)
    # The stream of a cancelled experiment replays its rows and ends with the status.
    last = list(_events(service, exp_id, timeout_s=30))[-1]
    assert last[0] == "status" and last[1]["status"] == "cancelled"


def test_restart_keeps_experiments(service: ServiceProcess) -> None:
    assert {"done", "cancelled"} <= STATE.keys(), "needs the two tests above"
    before = {k: service.get(f"/v1/experiments/{STATE[k]}").json() for k in ("done", "cancelled")}
    service.stop()
    service.start()
    for k, old in before.items():
        new = service.get(f"/v1/experiments/{STATE[k]}").json()
        for field in ("id", "name", "status", "spec_hash", "ray_job_id", "submitter", "created_at"):
            assert new[field] == old[field], (k, field)
    rows = service.get(f"/v1/experiments/{STATE['cancelled']}/results").json()["rows"]
    assert len(rows) == STATE["cancelled_rows"]
    listed = service.get("/v1/experiments").json()
    assert listed["total"] == 2


def test_killed_service_restarts_with_registry_rows_and_stream_intact(
    service: ServiceProcess,
) -> None:
    # Several epochs, so that the sweep is still running across the kill and the restart.
    body = {"preset": "smoke", "overrides": {"train": {"epochs": 6}}}
    exp_id = service.post("/v1/experiments", json=body).json()["id"]
    seen: list[dict[str, Any]] = []
    for event, data in _events(service, exp_id):
        if event == "result":
            seen.append(data)
            break
    assert seen, "the stream ended before any result"
    before = service.get(f"/v1/experiments/{exp_id}").json()
    listed = service.get("/v1/experiments").json()["total"]
    service.kill()
    service.start()
    # The registry row is intact and the Ray job was not lost.
    after = service.get(f"/v1/experiments/{exp_id}").json()
    for field in ("id", "name", "spec_hash", "ray_job_id", "submitter", "created_at"):
        assert after[field] == before[field], field
    assert after["status"] in ("pending", "running", "complete"), after
    assert service.get("/v1/experiments").json()["total"] == listed
    # A client that reconnects with Last-Event-ID gets every later row once, then the end.
    final = None
    for event, data in _events(service, exp_id, last_event_id=seen[-1]["seq"]):
        if event == "result":
            seen.append(data)
        elif event == "status":
            final = data
    assert final is not None and final["status"] == "complete", (final, service.log_text())
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    rows = service.get(f"/v1/experiments/{exp_id}/results").json()["rows"]
    assert len(rows) == len(seen) and final["progress"]["complete"] == 2


@pytest.mark.skipif(chromium_path() is None, reason="Debian package `chromium` is not installed")
def test_results_page_in_headless_chromium(
    service: ServiceProcess, browser: Browser | None, tmp_path: Path
) -> None:
    assert "done" in STATE and browser is not None, "needs test_submit_stream_and_download"
    exp_id = STATE["done"]
    row = browser.html_when(
        f"{service.url}/",
        f'tr[data-id="{exp_id}"]',
        "el.dataset.refreshed && el.dataset.status === 'complete'",
    )
    assert "smoke" in row and "2/2 trials done" in row, row
    # The experiment's own page: Plotly's charts drawn from the real sweep's results.
    shot = tmp_path / "smoke-page.png"
    charts = browser.html_when(
        f"{service.url}/experiments/{exp_id}",
        "#charts",
        "Number(el.dataset.points) > 0 && document.querySelectorAll('#trials tbody tr').length"
        " === 2 && document.getElementById('phase').data?.length > 0",
        screenshot=shot,
    )
    assert "state-complete" in charts and shot.stat().st_size > 10_000
    table = browser.html_when(f"{service.url}/experiments/{exp_id}", "#summary", "true")
    assert table.count("<tr>") == 1 + 2  # header + two grid cells


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser | None]:
    """A Chromium for the module, or None when the binary is absent (tests then skip)."""
    if chromium_path() is None:
        yield None
        return
    with open_browser() as b:
        yield b
