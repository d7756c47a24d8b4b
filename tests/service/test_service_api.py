"""Routes on fakes: submission, idempotency, quotas, status, cancel, results, SSE, restart."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
from service_fakes import AUTH, Harness, small_spec

from service.jobs import JobState


def _sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        ev: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            ev[k] = v.removeprefix(" ")
        if "data" in ev:
            events.append(ev)
    return events


def test_submit_returns_202_with_links_and_submits_the_spec_as_data(harness: Harness) -> None:
    r = harness.submit()
    assert r.status_code == 202, r.text
    body = r.json()
    exp_id = body["id"]
    assert body["created"] is True and body["status"] == "pending"
    assert body["links"]["status"] == f"/v1/experiments/{exp_id}"
    assert body["links"]["events"].endswith("/events")
    assert body["links"]["dashboard"].startswith("http://127.0.0.1:1")
    [(sub_id, spec_json)] = harness.runner.submitted
    assert sub_id == exp_id and json.loads(spec_json)["name"] == "toy"
    exp = harness.client.get(f"/v1/experiments/{exp_id}").json()
    assert exp["submitter"] == "alice" and exp["ray_job_id"] == f"divsweep-{exp_id}"
    assert exp["progress"]["n_trials"] == 4 and exp["progress"]["pending"] == 4


def test_idempotency_key_returns_the_same_experiment(harness: Harness) -> None:
    first = harness.submit(headers={"Idempotency-Key": "k-1"})
    again = harness.submit(headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    assert len(harness.runner.submitted) == 1
    other = harness.submit(small_spec(name="other"), headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    # Keys are per submitter: bob's k-1 is a new experiment.
    bob = harness.client.post(
        "/v1/experiments",
        json=small_spec(),
        headers={"Authorization": "Bearer bob-token-4567", "Idempotency-Key": "k-1"},
    )
    assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]
    assert harness.registry_rows() == 2


def test_concurrency_quota(harness: Harness) -> None:
    for i in range(3):
        assert harness.submit(small_spec(name=f"e{i}")).status_code == 202
    r = harness.submit(small_spec(name="e3"))
    assert r.status_code == 409 and "max_concurrent=3" in r.json()["detail"]
    assert harness.registry_rows() == 3
    # A finished one frees a slot.
    job = next(iter(harness.runner.states))
    harness.runner.states[job] = JobState.SUCCEEDED
    harness.client.get(f"/v1/experiments/{job.removeprefix('divsweep-')}")
    assert harness.submit(small_spec(name="e4")).status_code == 202


def test_concurrent_submissions_cannot_overrun_the_quota(harness: Harness) -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    registry = harness.app.state.registry
    count_active = registry.count_active
    # Without the admission lock all six requests count 0 active at the barrier and pass; with
    # it the first waits out the barrier's timeout alone and the rest run one by one.
    barrier = threading.Barrier(6, timeout=3)

    def slow_count() -> int:
        n = count_active()
        try:
            barrier.wait()  # every request has counted before any creates (the race window)
        except threading.BrokenBarrierError:
            pass  # serialised by the lock: nobody else can reach the barrier
        time.sleep(0.05)
        return int(n)

    registry.count_active = slow_count
    with ThreadPoolExecutor(6) as pool:
        codes = list(
            pool.map(lambda i: harness.submit(small_spec(name=f"c{i}")).status_code, range(6))
        )
    assert sorted(codes) == [202, 202, 202, 409, 409, 409]  # max_concurrent=3
    assert harness.registry_rows() == 3


def test_status_never_moves_backwards(harness: Harness) -> None:
    exp_id = harness.submit().json()["id"]
    registry = harness.app.state.registry
    assert registry.update(exp_id, status="running").status == "running"
    # a submitting request that records 'pending' after a reader saw 'running'
    assert registry.update(exp_id, status="pending").status == "running"
    assert registry.update(exp_id, status="complete").status == "complete"
    assert registry.update(exp_id, status="running").status == "complete"


def test_list_filters_and_pages(harness: Harness) -> None:
    ids = [harness.submit(small_spec(name=f"alpha-{i}")).json()["id"] for i in range(2)]
    harness.submit(small_spec(name="beta"))
    page = harness.client.get("/v1/experiments?limit=2").json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["next"]
    rest = harness.client.get(page["next"]).json()
    assert len(rest["items"]) == 1 and rest["next"] is None
    named = harness.client.get("/v1/experiments?name=alpha").json()
    assert sorted(i["id"] for i in named["items"]) == sorted(ids)
    harness.client.post(f"/v1/experiments/{ids[0]}/cancel", headers=AUTH)
    cancelled = harness.client.get("/v1/experiments?status=cancelled").json()
    assert [i["id"] for i in cancelled["items"]] == [ids[0]]


def test_status_follows_ray_and_reports_best(harness: Harness) -> None:
    exp_id = harness.submit().json()["id"]
    harness.results.add(exp_id, "t0", {"test_acc": 0.25})
    harness.results.add(exp_id, "t1", {"test_acc": 0.75})
    harness.results.trials[exp_id]["t0"] = "complete"
    exp = harness.client.get(f"/v1/experiments/{exp_id}").json()
    assert exp["status"] == "running" and exp["ray_status"] == "RUNNING"
    p = exp["progress"]
    assert (p["complete"], p["running"], p["pending"]) == (1, 1, 2)
    assert p["best"] == 0.75 and p["best_trial"] == "t1" and p["results"] == 2
    harness.runner.states[f"divsweep-{exp_id}"] = JobState.FAILED
    exp = harness.client.get(f"/v1/experiments/{exp_id}").json()
    assert exp["status"] == "failed" and "Ray job failed" in exp["error"]


def test_cancel_stops_the_job_and_keeps_results(harness: Harness) -> None:
    exp_id = harness.submit().json()["id"]
    harness.results.add(exp_id, "t0", {"test_acc": 0.5})
    r = harness.client.post(f"/v1/experiments/{exp_id}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert harness.runner.stopped == [f"divsweep-{exp_id}"]
    assert harness.results.cancelled == [exp_id]
    assert r.json()["progress"]["cancelled"] == 1 and r.json()["progress"]["results"] == 1
    again = harness.client.post(f"/v1/experiments/{exp_id}/cancel", headers=AUTH)
    assert again.status_code == 409
    rows = harness.client.get(f"/v1/experiments/{exp_id}/results").json()["rows"]
    assert len(rows) == 1


def test_results_in_three_formats(harness: Harness) -> None:
    exp_id = harness.submit().json()["id"]
    for i in range(5):
        harness.results.add(exp_id, f"t{i % 2}", {"test_acc": i / 10})
    js = harness.client.get(f"/v1/experiments/{exp_id}/results?format=json").json()
    assert [r["seq"] for r in js["rows"]] == [1, 2, 3, 4, 5]
    csv = harness.client.get(f"/v1/experiments/{exp_id}/results?format=csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].replace('"', "") == "seq,trial_id,test_acc"
    pq_r = harness.client.get(f"/v1/experiments/{exp_id}/results?format=parquet")
    table = pq.read_table(io.BytesIO(pq_r.content))
    assert table.num_rows == 5 and table.column("test_acc").to_pylist()[-1] == 0.4
    summ = harness.client.get(f"/v1/experiments/{exp_id}/summary").json()["rows"]
    assert {r["trial_id"] for r in summ} == {"t0", "t1"}
    png = harness.client.get(f"/v1/experiments/{exp_id}/plot.png")
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    charts = harness.client.get(f"/v1/experiments/{exp_id}/charts").json()
    assert charts["experiment_id"] == exp_id and len(charts["curves"]) == 2


def test_events_stream_resumes_and_ends_with_status(harness: Harness) -> None:
    exp_id = harness.submit().json()["id"]
    for i in range(4):
        harness.results.add(exp_id, "t0", {"test_acc": i / 4})
    harness.runner.states[f"divsweep-{exp_id}"] = JobState.SUCCEEDED
    r = harness.client.get(f"/v1/experiments/{exp_id}/events")
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _sse(r.text)
    assert [e["id"] for e in events[:-1]] == ["1", "2", "3", "4"]
    assert events[-1]["event"] == "status"
    assert json.loads(events[-1]["data"])["status"] == "complete"
    resumed = _sse(
        harness.client.get(f"/v1/experiments/{exp_id}/events", headers={"Last-Event-ID": "2"}).text
    )
    assert [e.get("id") for e in resumed] == ["3", "4", None]


def test_registry_survives_restart_and_reconciles(tmp_path: Path) -> None:
    h1 = Harness(tmp_path)
    with h1.client:
        done = h1.submit(small_spec(name="done")).json()["id"]
        lost = h1.submit(small_spec(name="lost")).json()["id"]
        ended = h1.submit(small_spec(name="ended")).json()["id"]
        spec_of_lost = dict(h1.runner.submitted)[lost]
    h2 = Harness(tmp_path)
    # The new process's cluster finished one job and never heard of the two others (a new
    # head): the store says one of those had ended, the other had not.
    h2.runner.states[f"divsweep-{done}"] = JobState.SUCCEEDED
    h2.results.status[ended] = "complete"
    with h2.client:
        a = h2.client.get(f"/v1/experiments/{done}").json()
        b = h2.client.get(f"/v1/experiments/{lost}").json()
        c = h2.client.get(f"/v1/experiments/{ended}").json()
        assert (a["name"], a["status"], a["submitter"]) == ("done", "complete", "alice")
        assert c["status"] == "complete" and c["error"] is None
        # The lost one is submitted again, same id and spec (the driver restores from the store)
        assert b["status"] in ("pending", "running") and "resubmitted" in b["error"]
        assert h2.runner.submitted == [(lost, spec_of_lost)]


def test_a_job_lost_again_and_again_ends_failed(tmp_path: Path) -> None:
    from service.experiments import MAX_RESUBMITS

    h = Harness(tmp_path)
    with h.client:
        exp_id = h.submit().json()["id"]
        for _ in range(MAX_RESUBMITS + 1):
            h.runner.states.clear()  # the cluster forgets every job
            body = h.client.get(f"/v1/experiments/{exp_id}").json()
        assert body["status"] == "failed" and "not resubmitted again" in body["error"]
        assert len(h.runner.submitted) == 1 + MAX_RESUBMITS


def test_health_and_readiness(harness: Harness) -> None:
    assert harness.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    assert harness.client.get("/readyz").status_code == 200
    harness.runner.up = False
    r = harness.client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["ray"] == "unreachable"
    harness.runner.up, harness.results.writable = True, False
    r = harness.client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["store"].startswith("not writable")


def test_page_lists_experiments(harness: Harness) -> None:
    exp_id = harness.submit(small_spec(name="page-test")).json()["id"]
    harness.results.add(exp_id, "t0", {"test_acc": 0.5})
    html = harness.client.get("/").text
    assert exp_id in html and "page-test" in html and "<progress" in html
    one = harness.client.get(f"/experiments/{exp_id}").text
    assert "plot.png" in one and "<table id=summary>" in one and "<section id=charts" in one
    for name in ("app.js", "charts.js", "plotly.min.js"):
        js = harness.client.get(f"/static/{name}")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert harness.client.get("/static/../settings.py").status_code == 404
    assert harness.client.get("/static/other.js").status_code == 404


def test_an_experiment_started_outside_the_service_is_shown_read_only(harness: Harness) -> None:
    """A sweep started with ``ray job submit ... sweeps.run --store <the service's store>``
    is in the store but not the registry: listed (newest first, with the service's own), shown
    with its store status, results and charts, marked external, and cannot be cancelled."""
    import time

    from sweeps.store.base import ExperimentRecord

    own = harness.submit(small_spec(name="own")).json()["id"]
    ext_id = "smoke-20260101T120000-1a2b"  # sweeps.run's own id form, not the registry's
    spec_json = json.dumps(small_spec(name="smoke"))
    now = time.time() + 60  # newer than the service's own
    harness.results.outside[ext_id] = ExperimentRecord(
        ext_id, "smoke", spec_json, "h" * 64, "running", now, now
    )
    harness.results.add(ext_id, "t0", {"test_acc": 0.25, "step": 1})
    page = harness.client.get("/v1/experiments").json()
    assert [i["id"] for i in page["items"]] == [ext_id, own] and page["total"] == 2
    assert [i["external"] for i in page["items"]] == [True, False]
    running = harness.client.get("/v1/experiments?status=running").json()
    assert [i["id"] for i in running["items"]] == [ext_id]  # the service's own is pending
    assert [i["id"] for i in harness.client.get("/v1/experiments?offset=1").json()["items"]] == [
        own
    ]
    assert harness.client.get("/v1/experiments?name=own").json()["total"] == 1
    one = harness.client.get(f"/v1/experiments/{ext_id}").json()
    assert (one["status"], one["external"], one["progress"]["results"]) == ("running", True, 1)
    assert one["submitter"] == "(outside the service)" and one["progress"]["n_trials"] == 4
    rows = harness.client.get(f"/v1/experiments/{ext_id}/results").json()["rows"]
    assert rows[0]["test_acc"] == 0.25
    assert harness.client.get(f"/v1/experiments/{ext_id}/charts").status_code == 200
    refused = harness.client.post(f"/v1/experiments/{ext_id}/cancel", headers=AUTH)
    assert refused.status_code == 409 and "ray job stop" in refused.json()["detail"]
    assert "started outside the service" in harness.client.get("/").text
    assert "started outside the service" in harness.client.get(f"/experiments/{ext_id}").text
    assert harness.client.get("/v1/experiments/smoke-unknown-id").status_code == 404
    assert harness.client.get("/v1/experiments/..%2Fetc").status_code in (404, 422)
    assert harness.runner.submitted == [(own, harness.runner.submitted[0][1])]


def test_the_lifecycles_are_served_for_the_page(harness: Harness) -> None:
    """The page's scripts read the states from here (no list of their own)."""
    from sweeps.specs.lifecycle import ExperimentStatus, TrialState

    body = harness.client.get("/v1/lifecycle").json()
    assert body["experiment"]["states"] == [s.value for s in ExperimentStatus]
    assert body["experiment"]["terminal"] == ["complete", "failed", "cancelled"]
    assert body["trial"]["states"] == [s.value for s in TrialState]
    assert body["trial"]["terminal"] == [s.value for s in TrialState if s.is_terminal]
    for name in ("app.js", "charts.js"):
        js = harness.client.get(f"/static/{name}").text
        assert "/v1/lifecycle" in js and '"complete"' not in js
