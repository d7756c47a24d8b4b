"""The experiment registry on SQLite (the default) and on a real PostgreSQL server.

The same tests run on both backends (`registry_url`); the PostgreSQL one is a throwaway server
for the session (`servers.postgres_server`, a database per test). The last test runs two real
service processes on one PostgreSQL registry and checks that concurrent retries of one
Idempotency-Key, spread over both, submit one experiment, once.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from loadgen.common import SUBMITTER, TOKEN
from loadgen.server import LoadServer
from service_fakes import small_spec

from service.errors import NotFoundError
from service.registry import IdempotencyClash, Registry, is_valid_id
from sweeps.specs.lifecycle import ExperimentStatus


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    pg = request.getfixturevalue("postgres")
    url: str = pg.new_database()
    return url


def _create(reg: Registry, name: str = "exp", key: str | None = None, who: str = "alice") -> Any:
    return reg.create(
        name=name,
        spec_json="{}",
        spec_hash="h" * 64,
        n_trials=4,
        submitter=who,
        idempotency_key=key,
    )


def test_create_get_and_times_are_utc(registry_url: str) -> None:
    reg = Registry(registry_url)
    exp = _create(reg, "fig2a-mini")
    assert is_valid_id(exp.id) and exp.status == ExperimentStatus.SUBMITTED
    got = reg.get(exp.id)
    assert (got.name, got.submitter, got.n_trials, got.status) == (
        "fig2a-mini",
        "alice",
        4,
        "submitted",
    )
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == UTC.utcoffset(None)
    assert abs((got.created_at - exp.created_at).total_seconds()) < 1e-3
    with pytest.raises(NotFoundError):
        reg.get("x0000000000000000")
    # a second connection (another process would open its own) sees the row
    assert Registry(registry_url).get(exp.id).name == "fig2a-mini"
    reg.close()


def test_query_orders_filters_and_escapes(registry_url: str) -> None:
    reg = Registry(registry_url)
    ids = [_create(reg, name).id for name in ("a_1", "a%2", "b_3", "plain")]
    reg.update(ids[0], status="pending")
    rows, total = reg.query(limit=2, offset=0)
    assert total == 4 and [r.id for r in rows] == ids[::-1][:2]  # newest first
    assert [r.id for r in reg.query(limit=10, offset=2)[0]] == ids[1::-1]
    assert [r.id for r in reg.query(status="pending")[0]] == [ids[0]]
    # `_` and `%` are literal characters in a name filter, not SQL wildcards
    assert [r.name for r in reg.query(name="_")[0]] == ["b_3", "a_1"]
    assert [r.name for r in reg.query(name="a%")[0]] == ["a%2"]
    assert reg.count_active() == 4 and len(reg.active()) == 4
    reg.close()


def test_status_never_moves_backwards_and_terminal_is_final(registry_url: str) -> None:
    reg = Registry(registry_url)
    exp = _create(reg)
    assert reg.update(exp.id, status="running").status == "running"
    assert reg.update(exp.id, status="pending").status == "running"
    assert reg.update(exp.id, status="complete", error=None).status == "complete"
    assert reg.update(exp.id, status="failed", error="late").status == "complete"
    assert reg.count_active() == 0
    with pytest.raises(ValueError, match="status='bogus'"):
        reg.update(_create(reg).id, status="bogus")
    reg.close()


def test_one_idempotency_key_is_one_experiment_under_concurrency(registry_url: str) -> None:
    """Eight registries (eight connection pools, as eight processes would have) race to create
    one (submitter, key): one row, and every loser is handed the winner."""
    regs = [Registry(registry_url) for _ in range(8)]
    barrier = threading.Barrier(len(regs))

    def race(reg: Registry) -> str:
        barrier.wait()
        try:
            return str(_create(reg, key="k1").id)
        except IdempotencyClash as clash:
            return f"clash:{clash.existing.id}"

    with ThreadPoolExecutor(len(regs)) as pool:
        outcomes = list(pool.map(race, regs))
    winners = [o for o in outcomes if not o.startswith("clash:")]
    assert len(winners) == 1, outcomes
    assert {o.removeprefix("clash:") for o in outcomes} == set(winners)
    assert regs[0].query(limit=100)[1] == 1
    # the same key of another submitter is another experiment
    assert _create(regs[0], key="k1", who="bob").id != winners[0]
    assert regs[0].find_idempotent("alice", "k1").id == winners[0]  # type: ignore[union-attr]
    for reg in regs:
        reg.close()


@pytest.mark.timeout(600)
def test_two_service_processes_on_one_postgres_registry_submit_each_key_once(
    postgres: Any, tmp_path: Path
) -> None:
    """Two real service processes share one PostgreSQL registry (and one store); 12 keys are
    each sent 3 times to each process, all at once from 16 threads. Every key gets one
    experiment id, one 202 and one submission to the (simulated) cluster, whichever process
    answered."""
    url = postgres.new_database()
    submits = tmp_path / "submits.log"
    env = {
        "DIVSWEEP_REGISTRY_URL": url,
        "DIVSWEEP_STORE_URI": str(tmp_path / "results"),
        "LOADGEN_SUBMIT_LOG": str(submits),
    }
    servers = [
        LoadServer(tmp_path / f"s{i}", writer="thread", write_s=0.5, env=env) for i in range(2)
    ]
    keys = [f"key-{i}" for i in range(12)]
    calls = [(k, s) for k in keys for s in servers for _ in range(3)]
    random.Random(0).shuffle(calls)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def post(call: tuple[str, LoadServer]) -> tuple[str, int, str]:
        key, server = call
        body = small_spec(name=key)
        r = httpx.post(
            f"{server.url}/v1/experiments",
            json=body,
            headers=headers | {"Idempotency-Key": key},
            timeout=60,
        )
        return key, r.status_code, r.json().get("id", r.text)

    try:
        for s in servers:  # one after the other: each creates the tables if they are missing
            s.start(timeout_s=300)  # importing the app takes ~6 s of CPU; a busy machine is slow
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, calls))
    finally:
        for s in servers:
            s.stop()
    assert all(code in (200, 202) for _, code, _ in answers), answers
    ids: dict[str, set[str]] = {}
    for key, _, exp_id in answers:
        ids.setdefault(key, set()).add(exp_id)
    assert all(len(v) == 1 for v in ids.values()), ids
    assert Counter(key for key, code, _ in answers if code == 202) == Counter(keys)
    lines = submits.read_text().split()
    submitted = Counter(lines[1::2])  # "<pid> <experiment id>" per submission
    assert set(submitted) == {next(iter(v)) for v in ids.values()}
    assert max(submitted.values()) == 1, submitted
    assert len(set(lines[0::2])) == 2, "both processes should have submitted some"
    reg = Registry(url)
    rows, total = reg.query(limit=100)
    assert total == len(keys) and {r.submitter for r in rows} == {SUBMITTER}
    assert sorted(json.loads(r.spec_json)["name"] for r in rows) == sorted(keys)
    reg.close()
