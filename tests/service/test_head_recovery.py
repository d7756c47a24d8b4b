"""The Ray head dies mid-sweep and comes back under GCS fault tolerance (issue 22).

Ray's own answer to a lost head: the GCS keeps its state in Redis (``RAY_REDIS_ADDRESS``), a
head started again at the same address with the same Redis recovers the cluster, and worker
nodes, their actors and job drivers carry on through the outage. Here on one machine: a head
with no CPUs (cluster.yaml's), one worker node (its own ``ray start`` process group, as another
machine would be), the service with ``DIVSWEEP_DRIVER_CPUS`` so that the sweep's driver runs on
the worker. Once one trial of a 4-trial sweep is complete and another running, every process of
the head is killed (GCS, raylet, dashboard), and a new head starts on the same ports and Redis.

Checked: a trial was running at the kill; the experiment ends ``complete`` without being
resubmitted (the service's job id is unchanged); every trial that had started before the kill
keeps its start time (none was restarted), and no report is stored twice. Printed: seconds from
the kill to the first report stored after it (compare `test_head_death`'s resubmit path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from uvicorn_proc import stop_process, submit_preset, uvicorn_command, wait_final, wait_healthy

from service.local_ray import GcsStore, HeadPorts, LocalRayHead, free_port
from service.ray_http import live_nodes
from sweeps.store import open_store

pytestmark = [
    pytest.mark.slow,
    # Not yet seen to pass: on 2026-12-03 this machine ran at a load of 10-16 and the two runs
    # failed on timing (the restarted head's raylet hit Ray's fixed 15 s wait for its agent,
    # ray-project/ray#65983; then no trial reported within 400 s). Opt in until it has passed.
    pytest.mark.skipif(
        not os.environ.get("DIVSWEEP_GCS_FT_TEST"),
        reason="opt-in (DIVSWEEP_GCS_FT_TEST=1) until it has passed on the CI machine",
    ),
]

TOKEN = "recovery-token-0123"
OVERRIDES = {
    "axes": [{"field": "data.n_instructions", "values": [4, 8, 16, 40]}],
    "max_concurrent": 1,
    "train": {"epochs": 8, "eval_per_epoch": True},
}
#: A loaded 2-core machine starts a head's processes slowly: Ray's defaults (20-30 s for the
#: raylet and agents, 60 s for a worker to wait for the GCS) are raised for the test.
SLOW_MACHINE = {
    "RAY_raylet_start_wait_time_s": "120",
    "RAY_agent_register_timeout_ms": "120000",
    "RAY_gcs_rpc_server_reconnect_timeout_s": "300",
}


@contextmanager
def _worker_node(head: LocalRayHead, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A second Ray node with 2 CPUs, in a session of its own (a separate machine's stand-in),
    listed by the head before this returns."""
    gcs = head.address
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **SLOW_MACHINE}
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        f"--address={gcs}",
        "--block",
        "--num-cpus=2",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={tmp}",
        "--disable-usage-stats",
    ]
    with open(tmp.parent / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not any(n.get("CPU") for n in live_nodes(head.dashboard_url, {}) or []):
            assert proc.poll() is None and time.monotonic() < deadline, "the worker did not join"
            time.sleep(1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _service(state: Path, dashboard_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(
        os.environ,
        DIVSWEEP_STATE_DIR=str(state),
        DIVSWEEP_DASHBOARD_URL=dashboard_url,
        DIVSWEEP_TOKENS=json.dumps({"ops": TOKEN}),
        DIVSWEEP_JOB_PYTHON=sys.executable,
        DIVSWEEP_DRIVER_CPUS="0.01",
    )
    log = open(state / "service.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        uvicorn_command("service.app:app_from_env", port), env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, 120, lambda: (state / "service.log").read_text(errors="replace"))
    return proc, url


def _wait_running_after_complete(store: Any, exp_id: str) -> list[Any]:
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        trials = store.get_trials(exp_id) if store.has_experiment(exp_id) else []
        states = {t.state for t in trials}
        if "complete" in states and "running" in states:
            return list(trials)
        time.sleep(0.2)
    raise AssertionError("no trial completed while another ran")


@pytest.mark.timeout(900)
def test_head_killed_mid_sweep_recovers_from_redis_without_resubmitting(
    redis: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.update(SLOW_MACHINE)  # the heads inherit it
    state = tmp_path / "state"
    state.mkdir()
    short = Path(f"/tmp/ft-{uuid.uuid4().hex[:6]}")  # Unix socket paths must stay short
    gcs_store = GcsStore(redis.address, f"test-{uuid.uuid4().hex[:8]}")
    head = LocalRayHead.start(
        num_cpus=0, temp_dir=short / "h0", redis=gcs_store, timeout_s=240, object_store_mb=256
    )
    service = new_head = None
    try:
        with _worker_node(head, short / "w"):
            service, url = _service(state, head.dashboard_url)
            exp_id = submit_preset(url, TOKEN, "smoke", OVERRIDES)
            store = open_store(str(state / "results"))
            before = _wait_running_after_complete(store, exp_id)
            os.killpg(head.pgid, signal.SIGKILL)  # GCS, raylet, dashboard: the whole head
            killed_at = time.time()
            head.process.wait()  # type: ignore[union-attr]
            new_head = LocalRayHead.start(
                num_cpus=0,
                temp_dir=short / "h1",
                redis=gcs_store,
                ports=HeadPorts.of(head),
                timeout_s=240,
                object_store_mb=256,
                attempts=4,
            )
            back_at = time.time()
            body: dict[str, Any] = wait_final(url, exp_id, 500)
            log = (state / "service.log").read_text(errors="replace")[-3000:]
            assert body["status"] == "complete", (body, log)
            assert "resubmitted" not in (body.get("error") or ""), body
    finally:
        stop_process(service)
        for h in (new_head, head):
            if h is not None:
                h.stop()
        shutil.rmtree(short, ignore_errors=True)
    trials = {t.trial_id: t for t in store.get_trials(exp_id)}
    assert len(trials) == 4 and {t.state for t in trials.values()} == {"complete"}
    running_at_kill = [t for t in before if t.state == "running"]
    assert running_at_kill, "no trial was running when the head was killed"
    for t in before:  # none restarted: the same start time as before the kill
        if t.started_at:
            assert trials[t.trial_id].started_at == t.started_at, (t, trials[t.trial_id])
    metrics = store.get_metrics(exp_id)
    keys = Counter((m.trial_id, m.metrics.get("step")) for m in metrics)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    resumed = min(m.time for m in metrics if m.time > killed_at)
    with capsys.disabled():
        print(
            f"\nGCS fault tolerance: head back {back_at - killed_at:.1f} s after the kill; first "
            f"report stored {resumed - killed_at:.1f} s after the kill"
        )
