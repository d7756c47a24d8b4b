"""Bad input: each gets the right 4xx, a JSON error body, and leaves the registry unchanged."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from service_fakes import AUTH, Harness, small_spec


def _spec_with(path: str, value: Any) -> dict[str, Any]:
    spec = small_spec()
    cur = spec
    *parents, last = path.split(".")
    for p in parents:
        cur = cur[p]
    cur[last] = value
    return spec


BAD_BODIES: list[tuple[str, bytes, int, str | None]] = [
    ("malformed json", b'{"name": "toy", "data": ', 400, None),
    ("not an object", b"[1, 2, 3]", 400, None),
    ("not utf-8", b"\xff\xfe{}", 400, None),
    ("unknown top-level field", json.dumps(small_spec(bogus=1)).encode(), 422, "bogus"),
    ("unknown nested field", json.dumps(_spec_with("data.bogus", 3)).encode(), 422, "data.bogus"),
    (
        "fraction out of range",
        json.dumps(_spec_with("data.noop_fraction", 2.0)).encode(),
        422,
        "data.noop_fraction",
    ),
    (
        "negative size",
        json.dumps(_spec_with("data.n_instructions", -5)).encode(),
        422,
        "data.n_instructions",
    ),
    ("wrong type", json.dumps(_spec_with("train.epochs", "many")).encode(), 422, "train.epochs"),
    ("missing required", json.dumps({"name": "x"}).encode(), 422, "data"),
    ("service-owned field", json.dumps(small_spec(store="/etc")).encode(), 422, "store"),
    ("over trial quota", json.dumps(small_spec(seeds=list(range(40)))).encode(), 413, "n_trials"),
    (
        "absurd example count",
        json.dumps(_spec_with("budget.total_examples", 10**12)).encode(),
        413,
        "data.n_train",
    ),
    ("unknown preset", json.dumps({"preset": "no-such-preset"}).encode(), 404, None),
    ("preset name traversal", json.dumps({"preset": "../../etc/passwd"}).encode(), 422, "preset"),
    ("preset with extra key", json.dumps({"preset": "smoke", "extra": 1}).encode(), 422, "extra"),
]


@pytest.mark.parametrize(
    ("case", "raw", "status", "field"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_submission(
    harness: Harness, case: str, raw: bytes, status: int, field: str | None
) -> None:
    before = harness.registry_rows()
    r = harness.client.post(
        "/v1/experiments", content=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "fields"} and body["detail"]
    if field is not None:
        assert field in [f["field"] for f in body["fields"]], body
    assert harness.registry_rows() == before
    assert harness.runner.submitted == []


def test_huge_grid_is_refused_before_it_is_built(harness: Harness) -> None:
    # 3 axes x 1000 values = 10**9 cells: validating it would never finish.
    axes = [{"field": "train.lr", "values": [1e-3 + i * 1e-6 for i in range(1000)]}] * 3
    t0 = time.monotonic()
    r = harness.submit(small_spec(axes=axes, budget=None))
    assert r.status_code == 413 and r.json()["fields"][0]["field"] == "n_trials"
    assert time.monotonic() - t0 < 5
    assert harness.registry_rows() == 0


def test_body_over_size_limit(harness: Harness) -> None:
    raw = json.dumps(small_spec(description="x" * 2_000_000)).encode()
    r = harness.client.post("/v1/experiments", content=raw, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert harness.registry_rows() == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Basic YWxpY2U6eA=="}, 401),
        ({"Authorization": "Bearer wrong-token-000"}, 403),
        ({"Authorization": "Bearer " + "alice-token-0123"[:-1]}, 403),
    ],
)
def test_auth_on_mutating_routes(harness: Harness, headers: dict[str, str], status: int) -> None:
    r = harness.client.post("/v1/experiments", json=small_spec(), headers=headers)
    assert r.status_code == status
    assert r.json()["error"] in ("unauthorized", "forbidden")
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    ok = harness.submit()
    exp_id = ok.json()["id"]
    r = harness.client.post(f"/v1/experiments/{exp_id}/cancel", headers=headers)
    assert r.status_code == status
    assert harness.registry_rows() == 1
    assert harness.runner.stopped == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/experiments/..%2F..%2Fetc%2Fpasswd",
        "/v1/experiments/../../etc/passwd",
        "/v1/experiments/x0123456789abcdeZ",
        "/v1/experiments/x0123456789abcdef0",
        "/v1/experiments/%2e%2e/results",
        "/v1/experiments/..%2F..%2Fetc/results?format=csv",
        "/v1/experiments/x..%2f..%2f..%2fpasswd/plot.png",
        "/v1/experiments/x0123456789abcdef",
        "/v1/experiments/x0123456789abcdef/events",
    ],
)
def test_bad_or_unknown_ids_are_4xx_json(harness: Harness, path: str) -> None:
    r = harness.client.get(path)
    assert r.status_code in (404, 422), (path, r.status_code)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] in ("not_found", "validation_error")


def test_bad_query_values(harness: Harness) -> None:
    for q in ("limit=0", "limit=100000", "offset=-1", "status=bogus"):
        r = harness.client.get(f"/v1/experiments?{q}")
        assert r.status_code == 422, q
        assert r.json()["fields"][0]["field"].startswith("query.")
    harness.submit()
    exp_id = harness.client.get("/v1/experiments").json()["items"][0]["id"]
    r = harness.client.get(f"/v1/experiments/{exp_id}/results?format=xlsx")
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "query.format"


def test_unknown_route_and_method_are_json(harness: Harness) -> None:
    r = harness.client.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = harness.client.delete("/v1/experiments", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_tracker_not_installed_is_refused_at_the_door(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    before = harness.registry_rows()
    r = harness.submit(small_spec(tracking={"mlflow": True}))
    assert r.status_code == 422, r.text
    assert r.json()["fields"][0]["field"] == "tracking.mlflow"
    assert "divsweep[mlflow]" in r.json()["detail"]
    assert harness.registry_rows() == before and harness.runner.submitted == []
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert harness.submit(small_spec(tracking={"mlflow": True, "project": "p1"})).status_code == 202
    bad = harness.submit(small_spec(tracking={"mlflow": True, "project": "../x"}))
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "tracking.project"
