"""An experiment that waits for resources says so, from Ray's view (issue 13, item 3).

Three levels: the parser on a cluster status that Ray 2.60 returned (captured from a 1-CPU
head holding one busy task, a 4-CPU task and a queued 2-bundle placement group); the status
API on fakes, with the wait threshold at zero; and a real `divsweep serve` whose CPUs another
Ray driver holds, so the smoke experiment's trials queue in Ray until the holder lets go.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_fakes import Harness
from uvicorn_proc import Served, serve

from service.waiting import Stalls, describe_wait, own_demands, parse_cluster_status

# `data` of GET /api/cluster_status from Ray 2.60 (trimmed of node ids and timings)
RAY_STATUS: dict[str, Any] = {
    "autoscalingStatus": "Cluster status: 0 nodes\n - ResourceUsage: 1.0/1.0 CPU ...",
    "autoscalingError": None,
    "clusterStatus": {
        "loadMetricsReport": {
            "usage": {
                "memory": [0.0, 17387254170.0],
                "node:InternalHead": [0.0, 1.0],
                "objectStoreMemory": [0.0, 7451680358.0],
                "node:192.0.2.2": [0.0, 1.0],
                "CPU": [1.0, 1.0],
            },
            "resourceDemand": [[{"CPU": 1.0}, 1], [{"CPU": 4.0}, 1]],
            "pgDemand": [[{"bundles": [[{"CPU": 1.0}, 2]], "strategy": "PACK"}, 1]],
            "requestDemand": [],
            "nodeTypes": [
                [
                    {
                        "object_store_memory": 7451680358.0,
                        "node:192.0.2.2": 1.0,
                        "memory": 17387254170.0,
                        "node:__internal_head__": 1.0,
                        "CPU": 1.0,
                    },
                    1,
                ]
            ],
        }
    },
}


def test_ray_status_parsed_into_demands_with_infeasibility() -> None:
    view = parse_cluster_status(RAY_STATUS)
    got = [(d.kind, d.resources, d.count, d.infeasible) for d in view.demands]
    assert got == [
        ("task", {"CPU": 1.0}, 1, False),
        ("task", {"CPU": 4.0}, 1, True),
        ("placement_group", {"CPU": 1.0}, 2, False),
    ]
    assert view.usage == {"memory": (0.0, 17387254170.0), "CPU": (1.0, 1.0)}
    # a node type the autoscaler may add makes the 4-CPU request feasible
    grown = parse_cluster_status(RAY_STATUS, node_types=[{"CPU": 8.0}])
    assert not any(d.infeasible for d in grown.demands)


def test_empty_or_odd_status_invents_nothing() -> None:
    assert parse_cluster_status({}).demands == ()
    assert parse_cluster_status({"clusterStatus": None}).demands == ()


def test_own_demands_match_the_trial_shape() -> None:
    view = parse_cluster_status(RAY_STATUS)
    assert [d.count for d in own_demands(view, {"CPU": 1.0})] == [1, 2]
    assert [d.count for d in own_demands(view, {"CPU": 4.0})] == [1]
    assert own_demands(view, {"CPU": 2.0}) == []
    gpu = parse_cluster_status(
        {
            "clusterStatus": {
                "loadMetricsReport": {
                    "pgDemand": [[{"bundles": [[{"CPU": 1.0, "GPU": 0.25}, 1]]}, 3]]
                }
            }
        }
    )
    assert own_demands(gpu, {"CPU": 1.0, "GPU": 1.0}) == []
    assert [d.count for d in own_demands(gpu, {"CPU": 1.0, "GPU": 1.0}, gpu_auto=True)] == [3]


def test_describe_wait_names_the_reason() -> None:
    view = parse_cluster_status(RAY_STATUS)
    queued = describe_wait({"CPU": 1.0}, 301.4, view)
    assert queued.startswith("no trial has run for 301 s: Ray queues 3 requests of {CPU: 1}")
    assert "1 other queued request(s)" in queued and "CPU 1/1" in queued
    assert "cannot place a trial's request {CPU: 4}" in describe_wait({"CPU": 4.0}, 9, view)
    assert "none of this experiment's shape {CPU: 2}" in describe_wait({"CPU": 2.0}, 9, view)
    assert "reports no queued request" in describe_wait({"CPU": 1.0}, 9, parse_cluster_status({}))
    assert "cluster status is unavailable" in describe_wait({"CPU": 1.0}, 9, None)


def test_stalls_start_once_and_reset_when_moving() -> None:
    s = Stalls()
    assert s.observe("x", True, now=10.0) == 10.0
    assert s.observe("x", True, now=50.0) == 10.0
    assert s.observe("x", False, now=60.0) is None
    assert s.observe("x", True, now=70.0) == 70.0


@pytest.fixture
def waiting_harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, max_trials=16, max_examples=100_000, resource_wait_s=0)
    with h.client:
        yield h


def test_status_reports_waiting_with_rays_reason(waiting_harness: Harness) -> None:
    h = waiting_harness
    h.runner.status_data = RAY_STATUS
    exp_id = h.submit().json()["id"]
    body = h.client.get(f"/v1/experiments/{exp_id}").json()
    assert body["status"] == "running" and body["progress"]["running"] == 0
    w = body["waiting"]
    assert w["request"] == {"CPU": 1.0} and w["infeasible"] is False
    assert {
        "kind": "placement_group",
        "resources": {"CPU": 1.0},
        "count": 2,
        "infeasible": False,
    } in w["demands"]
    assert "Ray queues 3 requests of {CPU: 1}" in w["detail"]
    assert "Waiting for resources" in h.client.get(f"/experiments/{exp_id}").text


def test_infeasible_request_is_flagged(waiting_harness: Harness) -> None:
    h = waiting_harness
    # the door saw a 4-CPU node, which has since gone: Ray now holds the request as infeasible
    h.runner.node_list = [{"CPU": 4.0, "memory": 16 * 2**30}]
    from service_fakes import small_spec

    exp_id = h.submit(small_spec(resources={"cpus": 4})).json()["id"]
    h.runner.node_list = [{"CPU": 1.0, "memory": 16 * 2**30}]
    h.runner.status_data = RAY_STATUS
    w = h.client.get(f"/v1/experiments/{exp_id}").json()["waiting"]
    assert w["infeasible"] is True and "cannot place a trial's request {CPU: 4}" in w["detail"]
    page = h.client.get(f"/experiments/{exp_id}").text
    assert "waiting infeasible" in page


def test_no_waiting_while_a_trial_runs_or_after_the_end(waiting_harness: Harness) -> None:
    h = waiting_harness
    exp_id = h.submit().json()["id"]
    h.results.add(exp_id, "t0", {"test_acc": 0.5})  # one running trial
    assert h.client.get(f"/v1/experiments/{exp_id}").json()["waiting"] is None
    h.runner.states["divsweep-" + exp_id] = h.runner.states["divsweep-" + exp_id].SUCCEEDED
    h.results.trials[exp_id]["t0"] = "complete"
    body = h.client.get(f"/v1/experiments/{exp_id}").json()
    assert body["status"] == "complete" and body["waiting"] is None


def test_cluster_status_unavailable_is_said(waiting_harness: Harness) -> None:
    h = waiting_harness
    exp_id = h.submit().json()["id"]
    w = h.client.get(f"/v1/experiments/{exp_id}").json()["waiting"]
    assert "cluster status is unavailable" in w["detail"] and w["demands"] == []


def test_below_the_threshold_nothing_is_reported(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_trials=16, max_examples=100_000, resource_wait_s=3600)
    with h.client:
        h.runner.status_data = RAY_STATUS
        exp_id = h.submit().json()["id"]
        assert h.client.get(f"/v1/experiments/{exp_id}").json()["waiting"] is None


# --------------------------------------------------------------------------------------------
# a real cluster whose CPUs another driver holds
# --------------------------------------------------------------------------------------------
HOLDER = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=2)
class Hold:
    def ping(self):
        return 1

h = Hold.remote()
ray.get(h.ping.remote())
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(
        tmp_path_factory.mktemp("serve"), num_cpus=2, env={"DIVSWEEP_RESOURCE_WAIT_S": "3"}
    ) as s:
        yield s


@pytest.mark.slow
def test_real_cluster_reports_queued_trials_then_runs_them(served: Served) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(served.state / "ray-token")}
    out = served.state / "holder.log"
    with open(out, "wb") as f:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, served.ray_address],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while "held\n" not in out.read_text() and time.monotonic() < deadline:
            assert holder.poll() is None, out.read_text()
            time.sleep(0.5)
        assert "held\n" in out.read_text(), out.read_text()
        auth = {"Authorization": f"Bearer {served.token}"}
        r = httpx.post(
            f"{served.url}/v1/experiments", json={"preset": "smoke"}, headers=auth, timeout=60
        )
        assert r.status_code == 202, r.text
        exp_id = r.json()["id"]
        waiting = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            body = httpx.get(f"{served.url}/v1/experiments/{exp_id}", timeout=30).json()
            w = body["waiting"]
            # Ray's report lags by a few seconds: wait until it lists the trials' groups
            if w and any(d["kind"] == "placement_group" for d in w["demands"]):
                waiting = w
                break
            time.sleep(1)
        log = (served.state / "serve.log").read_text(errors="replace")[-3000:]
        assert waiting is not None, log
        assert waiting["request"] == {"CPU": 1.0} and waiting["infeasible"] is False
        assert waiting["seconds"] >= 3
        assert "placement groups of {CPU: 1}" in waiting["detail"], waiting["detail"]
        assert "CPU 2/2" in waiting["detail"]
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        body = httpx.get(f"{served.url}/v1/experiments/{exp_id}", timeout=30).json()
        if body["status"] in ("complete", "failed", "cancelled"):
            break
        time.sleep(1)
    assert body["status"] == "complete" and body["waiting"] is None
