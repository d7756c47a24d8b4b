"""The `divsweep` client commands against an in-process app (httpx routed to TestClient)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_fakes import TOKEN, Harness, small_spec
from typer.testing import CliRunner

from service import cli
from service.jobs import JobState


@pytest.fixture
def routed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """Point the CLI's httpx calls at the test app."""
    client = harness.client

    def call(method: str) -> Any:
        def go(url: str, **kw: Any) -> httpx.Response:
            kw.pop("timeout", None)
            return client.request(method, url.removeprefix("http://t"), **kw)
        return go

    monkeypatch.setattr(cli.httpx, "get", call("GET"))
    monkeypatch.setattr(cli.httpx, "post", call("POST"))
    monkeypatch.setenv("DIVSWEEP_URL", "http://t")
    monkeypatch.setenv("DIVSWEEP_TOKEN", TOKEN)
    return harness


def test_load_body_spec_file_and_preset(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps(small_spec()))
    body = cli._load_body(str(f), ["train.epochs=3", "description=hello"])
    assert body["train"] == {"model": "nano", "epochs": 3} and body["description"] == "hello"
    assert cli._load_body("smoke", ["seeds=[0,1]"]) == {"preset": "smoke",
                                                        "overrides": {"seeds": [0, 1]}}


def test_submit_status_results_cancel(routed: Harness, tmp_path: Path) -> None:
    run = CliRunner()
    f = tmp_path / "s.json"
    f.write_text(json.dumps(small_spec()))
    r = run.invoke(cli.app, ["submit", str(f)])
    assert r.exit_code == 0, r.output
    exp_id = r.output.strip()
    routed.results.add(exp_id, "t0", {"test_acc": 0.5})
    r = run.invoke(cli.app, ["status", exp_id])
    assert r.exit_code == 0 and json.loads(r.output)["progress"]["results"] == 1
    r = run.invoke(cli.app, ["results", exp_id, "--format", "csv"])
    assert r.exit_code == 0 and r.output.splitlines()[0].replace('"', "").startswith("seq")
    r = run.invoke(cli.app, ["cancel", exp_id])
    assert r.exit_code == 0 and r.output.strip().endswith("cancelled")
    r = run.invoke(cli.app, ["cancel", exp_id])
    assert r.exit_code == 1 and "error 409" in r.output
    bad = run.invoke(cli.app, ["submit", "no-such-preset"])
    assert bad.exit_code == 1 and "error 404" in bad.output
    assert routed.runner.states[f"divsweep-{exp_id}"] == JobState.STOPPED
