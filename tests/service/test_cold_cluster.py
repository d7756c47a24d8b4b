"""A cold autoscaling cluster admits a spec and says it waits for the autoscaler (issue 22).

As an operator would try it: a real Ray head started like cluster.yaml's (``--num-cpus 0``: it
schedules no trial) and no worker yet, `divsweep serve` pointed at it with the cluster config
the autoscaler runs with (cluster.yaml itself, as ``ray up`` copies it to the head). The smoke
preset used to get a 422 ("the largest node has 0"); now the 202 says which node types can run
it, and the status explains, from Ray's queued placement groups, that it waits for the
autoscaler to add one. No cloud: nothing adds the node, so the test cancels.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from uvicorn_proc import serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_a_cold_cluster_admits_the_smoke_preset_and_says_it_waits_for_the_autoscaler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "DIVSWEEP_CLUSTER_CONFIG": str(ROOT / "cluster.yaml"),
        "DIVSWEEP_RESOURCE_WAIT_S": "0",  # explain at once, not after 5 minutes
    }
    with serve(tmp_path, num_cpus=0, env=env) as svc:
        auth = {"Authorization": f"Bearer {svc.token}"}
        r = httpx.post(
            f"{svc.url}/v1/experiments", headers=auth, json={"preset": "smoke"}, timeout=120
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["capacity"]["checked"] is True
        assert body["capacity"]["waits_for_autoscaler"] == ["gpu_worker", "h100_worker"]
        exp_id = body["id"]
        deadline, status = time.monotonic() + 180, {}
        while time.monotonic() < deadline:
            status = httpx.get(f"{svc.url}/v1/experiments/{exp_id}", timeout=30).json()
            waiting = status.get("waiting") or {}
            if "placement group" in waiting.get("detail", ""):
                break
            time.sleep(1)
        detail = status["waiting"]["detail"]
        with capsys.disabled():
            print(f"\n202 capacity: {body['capacity']}\nstatus {status['status']}: {detail}")
        assert status["status"] in ("pending", "running") and not status["waiting"]["infeasible"]
        assert "Ray queues 2 placement groups of {CPU: 1}" in detail
        assert (
            "wait for the autoscaler to add a node of type gpu_worker (up to 8) or "
            "h100_worker (up to 4)"
        ) in detail
        cancelled = httpx.post(
            f"{svc.url}/v1/experiments/{exp_id}/cancel", headers=auth, timeout=120
        ).json()
        assert cancelled["status"] == "cancelled"
