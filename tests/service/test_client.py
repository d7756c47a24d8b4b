"""`service.client.DivsweepClient` and the `divsweep` commands built on it, against the real app
in a real uvicorn process (`loadgen.LoadServer`: real registry and Parquet store; the Ray job
runner replaced by a writer that stores a known set of rows over a known time)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from loadgen.client import submission_body
from loadgen.common import TOKEN, metric_values, row_position
from loadgen.server import LoadServer
from typer.testing import CliRunner

from service import cli
from service.client import DivsweepClient, Event, ServiceError, _sse


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadServer]:
    with LoadServer(
        tmp_path_factory.mktemp("client"), write_s=3.0, writer="thread", sse_poll_s=0.2
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadServer]:
    """Writers take 120 s here: an experiment is surely still running when it is cancelled."""
    with LoadServer(tmp_path_factory.mktemp("slow"), write_s=120.0, writer="thread") as srv:
        yield srv


@pytest.fixture
def client(server: LoadServer) -> Iterator[DivsweepClient]:
    with DivsweepClient(server.url, TOKEN) as c:
        yield c


def test_submit_watch_results_summary(client: DivsweepClient) -> None:
    sub = client.submit(submission_body("client-grid", (0, 1), epochs=3))
    assert sub.created and sub.id.startswith("x")
    events = list(client.watch(sub.id))
    results = [e for e in events if e.kind == "result"]
    assert [e.kind for e in events[-1:]] == ["status"] and events[-1].data["status"] == "complete"
    assert [int(e.id or 0) for e in results] == list(range(1, 13))  # 4 trials x 3 reports
    first = results[0].data
    assert first["metrics"]["test_acc"] == metric_values(*row_position(1, 4))["test_acc"]
    table = client.results(sub.id)
    assert table.num_rows == 12 and {"data.n_instructions", "seed", "test_acc"} <= set(
        table.column_names
    )
    frame = client.results_frame(sub.id)
    assert list(frame["seq"]) == list(range(1, 13))
    summary = client.summary(sub.id)
    assert summary.num_rows == 2 and set(summary.column("n").to_pylist()) == {2}
    assert len(client.charts(sub.id)["curves"]) == 4
    status = client.status(sub.id)
    assert status.status == "complete" and status.progress is not None
    assert status.progress.complete == 4 and status.waiting is None


def test_watch_resumes_from_an_event_id(client: DivsweepClient) -> None:
    sub = client.submit(submission_body("client-resume", (0,), epochs=2))
    client.wait(sub.id, poll_s=0.2, timeout_s=60)
    later = [e for e in client.watch(sub.id, last_event_id="2") if e.kind == "result"]
    assert [e.id for e in later] == ["3", "4"]


def test_idempotency_list_and_cancel(slow_server: LoadServer) -> None:
    client = DivsweepClient(slow_server.url, TOKEN)
    key = "client-key-1"
    body = submission_body("client-slow", (0, 1), epochs=50)
    a = client.submit(body, idempotency_key=key)
    b = client.submit(body, idempotency_key=key)
    assert b.id == a.id and not b.created
    page = client.list(name="client-slow")
    assert page.total == 1 and page.items[0].id == a.id
    assert client.list(status="complete").total == 0
    cancelled = client.cancel(a.id)
    assert cancelled.status == "cancelled" and cancelled.progress is not None
    with pytest.raises(ServiceError) as err:
        client.cancel(a.id)
    assert err.value.status_code == 409 and err.value.error == "conflict"
    client.close()


def test_errors_carry_the_services_json(server: LoadServer, client: DivsweepClient) -> None:
    bad = submission_body("client-bad", (0,), epochs=1)
    bad["data"]["noop_fraction"] = 1.5
    with pytest.raises(ServiceError) as err:
        client.submit(bad)
    assert err.value.status_code == 422
    assert [f["field"] for f in err.value.fields] == ["data.noop_fraction"]
    assert "data.noop_fraction" in str(err.value)
    with pytest.raises(ServiceError) as err:
        client.status("x0000000000000000")
    assert err.value.status_code == 404
    with (
        DivsweepClient(server.url, "wrong-token-123") as intruder,
        pytest.raises(ServiceError) as err,
    ):
        intruder.submit(preset="smoke")
    assert err.value.status_code == 403 and err.value.error == "forbidden"
    with pytest.raises(ValueError, match="exactly one"):
        client.submit(bad, preset="smoke")


def test_spec_file_and_the_event_stream_parser(client: DivsweepClient, tmp_path: Path) -> None:
    f = tmp_path / "spec.yaml"
    f.write_text(json.dumps(submission_body("client-file", (0,), epochs=1)))
    sub = client.submit(f)
    done = client.wait(sub.id, poll_s=0.2, timeout_s=60)
    # what the service made of the file: its name, and the writer's known first row
    assert (done.status, done.name) == ("complete", "client-file")
    first = client.results(sub.id).to_pylist()[0]
    assert first["test_acc"] == metric_values(*row_position(1, 2))["test_acc"]
    # the parser: comments and retry lines skipped, data lines joined, each event's kind reset
    lines = [": keep-alive", "retry: 2000", "", "id: 7", "event: result", 'data: {"seq": 7,']
    lines += ['data:  "trial_id": "t0"}', "", "event: status", 'data: {"status": "complete"}']
    lines += ["", 'data: {"note": 1}', ""]
    assert list(_sse(iter(lines))) == [
        Event("result", "7", {"seq": 7, "trial_id": "t0"}),
        Event("status", None, {"status": "complete"}),
        Event("message", None, {"note": 1}),
    ]


# --- the CLI, which is a thin shell over the client ------------------------------------------
@pytest.fixture
def cli_env(server: LoadServer, monkeypatch: pytest.MonkeyPatch) -> LoadServer:
    monkeypatch.setenv("DIVSWEEP_URL", server.url)
    monkeypatch.setenv("DIVSWEEP_TOKEN", TOKEN)
    return server


def test_cli_submit_wait_status_results_cancel(cli_env: LoadServer, tmp_path: Path) -> None:
    run = CliRunner()
    f = tmp_path / "s.json"
    f.write_text(json.dumps(submission_body("cli-grid", (0,), epochs=2)))
    r = run.invoke(cli.app, ["submit", str(f), "--wait"])
    assert r.exit_code == 0, r.output
    exp_id = r.output.splitlines()[0].strip()
    assert r.output.rstrip().endswith(f"{exp_id}: complete")
    r = run.invoke(cli.app, ["status", exp_id])
    assert r.exit_code == 0 and json.loads(r.output)["progress"]["results"] == 4
    r = run.invoke(cli.app, ["results", exp_id, "--format", "csv"])
    assert r.exit_code == 0 and len(r.output.splitlines()) == 1 + 4
    out = tmp_path / "r.parquet"
    r = run.invoke(cli.app, ["results", exp_id, "--format", "parquet", "--out", str(out)])
    assert r.exit_code == 0 and out.read_bytes()[:4] == b"PAR1"
    r = run.invoke(cli.app, ["cancel", exp_id])
    assert r.exit_code == 1 and "409 conflict" in r.output


def test_load_body_spec_file_and_preset(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps(submission_body("b", (0,), 1)))
    body = cli._load_body(str(f), ["train.epochs=3", "description=hello"])
    assert body["train"] == {"model": "nano", "epochs": 3} and body["description"] == "hello"
    assert cli._load_body("smoke", ["seeds=[0,1]"]) == {
        "preset": "smoke",
        "overrides": {"seeds": [0, 1]},
    }


def test_cli_names_the_field_it_refuses(cli_env: LoadServer, tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    body = submission_body("cli-bad", (0,), epochs=1)
    body["train"]["epochs"] = 0
    f.write_text(json.dumps(body))
    r = CliRunner().invoke(cli.app, ["submit", str(f)])
    assert r.exit_code == 1 and "422" in r.output and "train.epochs" in r.output
    r = CliRunner().invoke(cli.app, ["submit", "no-such-preset"])
    assert r.exit_code == 1 and "404" in r.output and "no-such-preset" in r.output


def test_the_client_submits_a_yaml_file_without_loading_torch(tmp_path: Path) -> None:
    """An HTTP client handed a YAML path parses it and posts it: no torch, no Ray (checked in a
    fresh interpreter, against a transport that answers like the service)."""
    import subprocess
    import sys

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: light\ndata: {n_instructions: 4}\ntrain: {lr: 1e-3}\n")
    script = f"""
import json, sys, httpx
from service.client import DivsweepClient
def answer(request):
    body = json.loads(request.content)
    assert body["train"]["lr"] == 0.001, body  # YAML's 1e-3 read as a number
    links = dict.fromkeys(["status", "results", "events", "summary", "plot", "page"], "/x")
    return httpx.Response(202, json={{"id": "x0123456789abcdef", "status": "pending",
        "created": True, "links": {{**links, "dashboard": None}}}})
with DivsweepClient("http://svc", "t0k3n-0123", transport=httpx.MockTransport(answer)) as c:
    assert c.submit({str(spec)!r}).id == "x0123456789abcdef"
print(json.dumps(sorted(m for m in ("torch", "ray", "transformers") if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
