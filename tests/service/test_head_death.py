"""The whole local Ray head dies mid-sweep, and the experiment still completes (issue 13).

`divsweep serve` runs as a user runs it. Once one trial of a 4-trial sweep is complete and
another is running, the test kills the service (SIGKILL) and *every* process of its Ray head:
the head's process group (GCS, raylet, dashboard, trial workers) and the sweep driver, which Ray
starts in a session of its own. Then it starts `divsweep serve` again on the same state
directory: the recorded head is gone, so a fresh one starts; the service finds the experiment's
job unknown to it, sees in the results store that the sweep had not ended, and submits it again
under the same id. The sweep driver restores Tune's saved state from the store. Checked: the
experiment ends `complete`, every trial complete, the trial that had finished before the kill
stored nothing afterwards (it was not trained again), and no report is stored twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from uvicorn_proc import stop_group, wait_final, wait_healthy

from service.local_ray import free_port
from sweeps.store import TrialRecord, open_store

pytestmark = pytest.mark.slow

OVERRIDES = {
    # four trials, one at a time, each long enough to be caught mid-run
    "axes": [{"field": "data.n_instructions", "values": [4, 8, 16, 40]}],
    "max_concurrent": 1,
    "train": {"epochs": 8, "eval_per_epoch": True},
}


def _serve(state: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DIVSWEEP_", "RAY_AUTH", "RAY_ADDRESS"))
    }
    env |= {"DIVSWEEP_STATE_DIR": str(state)}
    log = open(state / "serve.log", "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("divsweep")),
            "serve",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_head(state: Path, exp_id: str) -> int:
    """SIGKILL every process of the recorded head, and the experiment's sweep driver; returns
    how many driver processes were killed."""
    pgid = json.loads((state / "ray-head.json").read_text())["pgid"]
    os.killpg(pgid, signal.SIGKILL)
    drivers = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sweeps.run" in cmd and exp_id.encode() in cmd:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:  # it died with the head's group
                continue
            drivers += 1
    return drivers


def test_head_death_mid_sweep_is_survived(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = lambda: (state / "serve.log").read_text(errors="replace")[-4000:]  # noqa: E731
    first = _serve(state, port)
    second = None
    try:
        wait_healthy(first, url, 180, log)
        auth = {"Authorization": f"Bearer {(state / 'token').read_text().strip()}"}
        r = httpx.post(
            f"{url}/v1/experiments",
            headers=auth,
            timeout=60,
            json={"preset": "smoke", "overrides": OVERRIDES},
        )
        assert r.status_code == 202, r.text
        exp_id = r.json()["id"]
        store = open_store(str(state / "results"))
        deadline = time.monotonic() + 300
        done: list[str] = []
        started: list[TrialRecord] = []
        while time.monotonic() < deadline:
            trials = store.get_trials(exp_id) if store.has_experiment(exp_id) else []
            done = [t.trial_id for t in trials if t.state == "complete"]
            started = [t for t in trials if t.state in ("complete", "running")]
            if done and any(t.state == "running" for t in trials):
                break
            time.sleep(0.2)
        assert done, "no trial completed in time\n" + log()
        assert any(t.state == "running" for t in started), "no trial running at the kill"
        first.kill()  # the service dies with its head: nothing of it runs on the way out
        first.wait()
        drivers = _kill_head(state, exp_id)
        killed_at = time.time()
        assert drivers >= 1, "the sweep driver was not found, so not killed"
        before = [m for m in store.get_metrics(exp_id)]

        second = _serve(state, port)  # same state dir: the dead head is not re-adopted
        wait_healthy(second, url, 180, log)
        body = wait_final(url, exp_id, 420)
        assert body["status"] == "complete", (body, log())
    finally:
        for p in (first, second):
            if p is not None:
                stop_group(p)
    trials = store.get_trials(exp_id)
    assert len(trials) == 4 and {t.state for t in trials} == {"complete"}
    metrics = store.get_metrics(exp_id)
    # No report stored twice: one row per (trial, evaluation step).
    keys = Counter((m.trial_id, m.metrics.get("step")) for m in metrics)
    twice = [k for k, n in keys.items() if n > 1]
    assert not twice, (
        twice,
        [(m.trial_id, m.time - killed_at, m.metrics) for m in metrics if m.trial_id == twice[0][0]],
        log(),
    )
    # The trials complete before the kill stored nothing after it: they were not run again.
    for trial_id in done:
        assert all(m.time < killed_at for m in metrics if m.trial_id == trial_id)
        assert [m.metrics for m in metrics if m.trial_id == trial_id] == [
            m.metrics for m in before if m.trial_id == trial_id
        ]
    # ... and kept their trial rows: a complete trial trained again (from scratch, its reports
    # dropped as repeats by the store callback) would have a new start time.
    after = {t.trial_id: t for t in trials}
    for t in started:
        if t.trial_id in done:
            assert after[t.trial_id].started_at == t.started_at, (t, after[t.trial_id])
    resumed = min(m.time for m in metrics if m.time > killed_at)
    print(f"\nresubmit path: first report stored {resumed - killed_at:.1f} s after the kill")
