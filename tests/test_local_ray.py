"""The shared Ray head fixture starts a real cluster that runs submitted jobs."""

import time

from ray.job_submission import JobStatus, JobSubmissionClient


def test_head_runs_a_submitted_job(ray_head) -> None:
    client = JobSubmissionClient(ray_head.dashboard_url)
    script = "import ray; ray.init(); print('cpus', ray.cluster_resources()['CPU'])"
    job = client.submit_job(entrypoint=f'python -c "{script}"')
    deadline = time.monotonic() + 120
    while not client.get_job_status(job).is_terminal():
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.5)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED
    assert "cpus 2.0" in client.get_job_logs(job)


def test_a_killed_service_leaves_its_head_running_and_the_next_one_adopts_it(tmp_path) -> None:
    """`divsweep serve` killed with SIGKILL: its Ray head (and sweeps) live on; the restarted
    service re-attaches to that head instead of starting a second one, and a normal stop ends it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    from service.local_ray import LocalRayHead, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"DIVSWEEP_STATE_DIR": str(tmp_path), "DIVSWEEP_TOKENS": json.dumps({"t": "tok-123456"})}
    cmd = [
        str(Path(sys.executable).with_name("divsweep")),
        "serve",
        "--port",
        str(port),
        "--num-cpus",
        "1",
        "--log-level",
        "warning",
    ]
    record = tmp_path / "ray-head.json"

    def start(log_name: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / log_name, "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / log_name).read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError((tmp_path / log_name).read_text())

    first = start("serve-1.log")
    head = json.loads(record.read_text())
    first.send_signal(signal.SIGKILL)
    first.wait()
    adopted = LocalRayHead.attach(record)
    assert adopted is not None and adopted.address == head["address"]  # the head survived
    second = start("serve-2.log")
    try:
        assert json.loads(record.read_text()) == head
        assert "re-attached" in (tmp_path / "serve-2.log").read_text()
    finally:
        second.terminate()
        second.wait(timeout=60)
    assert not record.exists() and not adopted.alive()  # a normal stop ends the head


def test_free_ports_are_distinct_and_avoid_the_given_ones() -> None:
    """One port handed out twice once let a head's dashboard take the service's port."""
    from service.local_ray import free_ports

    taken = free_ports(3)
    ports = free_ports(20, avoid=taken)
    assert len(set(ports)) == 20 and not set(ports) & set(taken)
