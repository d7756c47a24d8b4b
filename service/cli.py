"""``divsweep``: run the service, and talk to it over HTTP.

::

    divsweep serve                         # local Ray head on 127.0.0.1 + the service on :8000
    divsweep plan fig2a                    # trials, tokens, FLOPs, GPU-hours; no service needed
    divsweep submit fig2a-mini --wait      # a preset (or a spec file: divsweep submit my.yaml)
    divsweep status x0123456789abcdef
    divsweep watch x0123456789abcdef       # progress bar fed by the event stream
    divsweep results x0123456789abcdef --format parquet --out results.parquet
    divsweep cancel x0123456789abcdef
    divsweep reproduce --smoke             # every study of the paper -> docs/RESULTS.md

Client commands find the service at ``--url`` (``DIVSWEEP_URL``, default
``http://127.0.0.1:8000``) and authenticate with ``--token`` (``DIVSWEEP_TOKEN``, else the token
file ``divsweep serve`` wrote under the state directory).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from service.client import DivsweepClient, ServiceError
from service.local_ray import GcsStore, HeadPorts, LocalRayHead, ensure_token, ray_env_token
from service.reproduce import Client, ReproduceError
from service.reproduce import check as check_document
from service.reproduce import reproduce as run_reproduce
from service.schemas import ExperimentOut
from service.settings import Settings
from service.specs import deep_merge
from sweeps.errors import SpecError, SweepError
from sweeps.reporting.plan import apply_sets, plan_report
from sweeps.reporting.results_doc import StoreSource
from sweeps.reporting.studies import select
from sweeps.specs.lifecycle import ExperimentStatus
from sweeps.specs.spec import yaml_load
from sweeps.store import open_store

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Run the divsweep service, and talk to it."
)

Url = Annotated[str, typer.Option(envvar="DIVSWEEP_URL", help="service base URL")]
Token = Annotated[str | None, typer.Option(envvar="DIVSWEEP_TOKEN", help="bearer token")]
DEFAULT_URL = "http://127.0.0.1:8000"
# `watch` rides out service restarts, but not a service that is gone for good.
WATCH_GIVE_UP_S = 60.0


def _token_file(settings: Settings) -> Path:
    return settings.state_dir / "token"


def _token(token: str | None) -> str:
    if token:
        return token
    path = _token_file(Settings())
    if path.is_file():
        return path.read_text().strip()
    raise typer.BadParameter(
        f"no token: pass --token, set DIVSWEEP_TOKEN, or run `divsweep serve` (it writes {path})"
    )


def _client(url: str, token: str | None = None) -> DivsweepClient:
    return DivsweepClient(url, token)


@contextmanager
def _errors() -> Iterator[None]:
    """A refusal from the service: its message (and the fields it names) on stderr, exit 1."""
    try:
        yield
    except ServiceError as e:
        typer.echo(f"error {e}", err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as e:
        typer.echo(f"error: the service is unreachable ({e})", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    num_cpus: Annotated[int, typer.Option(help="CPUs of the local Ray head")] = 2,
    redis: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of a Redis for the local head's GCS (Ray's GCS fault tolerance): a "
            "head restarted by the next `divsweep serve` recovers its cluster from it"
        ),
    ] = None,
    log_level: str = "info",
) -> None:
    """Run the service; without RAY_ADDRESS, start a private Ray head on loopback first."""
    # why here: the client commands must not pay for the server (FastAPI, SQLAlchemy, the spec)
    import uvicorn

    from service.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    updates: dict[str, Any] = {}
    if host:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    head_record = settings.state_dir / "ray-head.json"
    head = None
    if not settings.dashboard_url:
        head, cluster = _local_head(settings, port, num_cpus, redis, head_record)
        updates |= cluster
    if head is None and settings.ray_token is None and (token := ray_env_token()):
        updates["ray_token"] = token  # a cluster in Ray's token mode (cluster.yaml sets it up)
    if not settings.tokens:
        updates["tokens"] = _service_tokens(settings)
    settings = settings.model_copy(update=updates)
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler that kills
    # the process before `finally` stops the Ray head. Turn it into SystemExit instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        uvicorn.run(
            create_app(settings), host=settings.host, port=settings.port, log_level=log_level
        )
    finally:
        if head is not None:
            head.stop()
            head_record.unlink(missing_ok=True)


def _local_head(
    settings: Settings, port: int | None, num_cpus: int, redis: str | None, record: Path
) -> tuple[LocalRayHead | None, dict[str, Any]]:
    """The Ray cluster `serve` talks to when no dashboard URL is configured: RAY_ADDRESS's
    Jobs API, else the private head recorded under the state directory (adopted while it
    runs), else a new one. Returns the head (None for RAY_ADDRESS) and the settings to set."""
    ray_address = os.environ.get("RAY_ADDRESS")
    if ray_address and ray_address.startswith("http"):
        return None, {"dashboard_url": ray_address}  # the Jobs API form of RAY_ADDRESS
    if ray_address:
        typer.echo(
            "RAY_ADDRESS names a GCS address; set DIVSWEEP_DASHBOARD_URL to the "
            "cluster's Jobs API (http://HOST:8265) too",
            err=True,
        )
        raise typer.Exit(2)
    # A head left running by a service that was killed still runs its sweeps: adopt it.
    before = LocalRayHead.recorded(record)
    head = LocalRayHead.attach(record)
    if head is not None:
        typer.echo(f"re-attached to the running local Ray head at {head.address}")
    else:
        # one namespace per state directory: several services may share one Redis
        where = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:16]
        store = GcsStore(redis or "", f"divsweep-{where}")
        # Under GCS fault tolerance the new head takes the dead one's address, where its
        # worker nodes and running drivers look for it, and recovers the cluster from Redis.
        same = before is not None and before.redis == store
        # the port the service binds next is not the head's to take
        service_port = port if port is not None else settings.port
        head = LocalRayHead.start(
            num_cpus=num_cpus,
            temp_dir=None,
            token_path=_ray_token_file(settings),
            avoid_ports=(service_port,),
            redis=store if redis else None,
            ports=HeadPorts.of(before) if redis and same and before else None,
        )
        head.save(record)
        typer.echo(f"local Ray head at {head.address}, dashboard {head.dashboard_url}")
    # The head runs on this machine with this interpreter, where divsweep is installed.
    return head, {
        "dashboard_url": head.dashboard_url,
        "ray_address": head.address,
        "job_python": sys.executable,
        "ray_token": head.token,
    }


def _ray_token_file(settings: Settings) -> Path:
    """Ray's token mode: only holders of this owner-only file reach the head."""
    path = settings.state_dir / "ray-token"
    ensure_token(path)
    return path


def _service_tokens(settings: Settings) -> dict[str, str]:
    """The service's own bearer token (not Ray's), made once and kept under the state dir."""
    path = _token_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        token = path.read_text().strip()
    else:
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    typer.echo(f"bearer token in {path}")
    return {os.environ.get("USER", "local") or "local": token}


def _load_body(spec: str, overrides: list[str]) -> dict[str, Any]:
    path = Path(spec)
    try:
        sets = apply_sets({}, overrides)
    except SpecError as e:
        raise typer.BadParameter(str(e)) from None
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        body = yaml_load(path.read_text())
        if not isinstance(body, dict):
            raise typer.BadParameter(f"{spec}: a spec file holds a mapping")
        return deep_merge(body, sets)
    return {"preset": spec, "overrides": sets}


@app.command()
def submit(
    spec: Annotated[str, typer.Argument(help="a spec file (.yaml/.json) or a preset name")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override FIELD.PATH=VALUE")
    ] = None,
    wait: Annotated[bool, typer.Option(help="watch until it ends")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="retry-safe submission key")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Submit an experiment; prints its id (and, with --wait, watches it)."""
    body = _load_body(spec, set_ or [])
    with _errors(), _client(url, _token(token)) as client:
        if "preset" in body:
            out = client.submit(
                preset=body["preset"], overrides=body["overrides"], idempotency_key=idempotency_key
            )
        else:
            out = client.submit(body, idempotency_key=idempotency_key)
    typer.echo(out.id)
    if wait:
        watch(out.id, url=url)


@app.command()
def plan(
    spec: Annotated[str, typer.Argument(help="a spec file (.yaml/.json) or a preset name")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override FIELD.PATH=VALUE")
    ] = None,
    throughput: Annotated[
        float | None,
        typer.Option(help="measured training tokens/s per GPU (default: an H100 at 40% MFU)"),
    ] = None,
    params: Annotated[
        float | None,
        typer.Option(help="model parameters, for a pretrained checkpoint that is not on disk"),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Print what a sweep would cost before submitting it: trials, tokens, FLOPs, GPU-hours.

    Runs here, without the service or Ray (the same as ``python -m sweeps plan``).
    """
    try:
        typer.echo(plan_report(spec, set_ or [], throughput, params, json_))
    except SweepError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def status(exp_id: str, url: Url = DEFAULT_URL) -> None:
    """Print the experiment's status and progress as JSON (and why it waits, if it does)."""
    with _errors(), _client(url) as client:
        exp = client.status(exp_id)
    typer.echo(exp.model_dump_json(indent=2))
    if exp.waiting is not None:
        typer.echo(f"waiting for resources: {exp.waiting.detail}", err=True)


@app.command()
def watch(exp_id: str, url: Url = DEFAULT_URL) -> None:
    """Follow the event stream with a progress bar until the experiment ends."""
    from tqdm import tqdm

    with _errors(), _client(url) as client:
        final = client.status(exp_id)
        bar = tqdm(
            total=final.progress.n_trials if final.progress else 0, unit="trial", desc=exp_id
        )

        def update(exp: ExperimentOut) -> None:
            p = exp.progress
            if p is not None:
                bar.n = p.complete + p.failed + p.pruned + p.cancelled
                best = "-" if p.best is None else f"{p.best:.3f}"
                bar.set_postfix(status=exp.status, results=p.results, best=best)
            bar.refresh()

        update(final)
        last_refresh = 0.0
        try:
            for event in client.watch(exp_id, give_up_s=WATCH_GIVE_UP_S):
                if event.kind == "status":
                    final = ExperimentOut.model_validate(event.data)
                elif time.monotonic() - last_refresh > 0.5:  # a refresh per burst of rows
                    last_refresh = time.monotonic()
                    update(client.status(exp_id))
        except httpx.TransportError as e:
            bar.close()
            typer.echo(
                f"service unreachable for {WATCH_GIVE_UP_S:.0f}s ({e}); giving up "
                f"(the experiment may still be running: divsweep status {exp_id})",
                err=True,
            )
            raise typer.Exit(2) from e
        update(final)
        bar.close()
    typer.echo(f"{exp_id}: {final.status}")
    if final.status == ExperimentStatus.FAILED:
        raise typer.Exit(1)


@app.command()
def results(
    exp_id: str,
    format: Annotated[str, typer.Option(help="json, csv or parquet")] = "csv",
    out: Annotated[Path | None, typer.Option(help="write to this file")] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Download the result rows (stdout for json/csv unless --out)."""
    if format not in ("json", "csv", "parquet"):
        raise typer.BadParameter(f"--format {format!r}: use json, csv or parquet")
    if out is None and format == "parquet":
        typer.echo("parquet is binary: pass --out FILE", err=True)
        raise typer.Exit(2)
    with _errors(), _client(url) as client:
        data = client.download(exp_id, format)  # type: ignore[arg-type]
    if out is not None:
        out.write_bytes(data)
        typer.echo(str(out))
    else:
        sys.stdout.write(data.decode())


@app.command()
def cancel(exp_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Stop a running experiment (stored results are kept)."""
    with _errors(), _client(url, _token(token)) as client:
        exp = client.cancel(exp_id)
    typer.echo(f"{exp_id}: {exp.status}")


@app.command()
def reproduce(
    studies: Annotated[
        str | None,
        typer.Option(
            help="comma-separated studies to run (default: the paper's studies; frontier-mini "
            "runs only when named); the others keep their sections"
        ),
    ] = None,
    smoke: Annotated[
        bool,
        typer.Option(help="seconds-long settings per study (same path; the numbers mean nothing)"),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="the document (default docs/RESULTS.md; with --smoke "
            "<state dir>/smoke/RESULTS.md); its index (results.json) and figures (img/) go "
            "beside it"
        ),
    ] = None,
    render_only: Annotated[
        bool,
        typer.Option("--render-only", help="submit nothing: re-render from the stored experiments"),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="submit nothing: say whether the document is current for this checkout (same "
            "data/ and trainer/ code, same presets); exit 0 if so, 1 if not",
        ),
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            help="read results from this store URI instead of the service (rendering only)"
        ),
    ] = None,
    poll: Annotated[float, typer.Option(help="seconds between status polls")] = 1.0,
    seed_offset: Annotated[
        int,
        typer.Option(
            min=0,
            help="shift every preset's seeds by this much: 3 runs seeds 3, 4, 5 instead of "
            "0, 1, 2, seeds the calibration never used",
        ),
    ] = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Run every study of the paper through the service, one after another, and write
    docs/RESULTS.md (tables, figures, wall times, the paper's numbers, verdicts)."""
    try:
        chosen = select(studies)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if out is None:  # a smoke run never overwrites the real document
        out = Settings().state_dir / "smoke" / "RESULTS.md" if smoke else Path("docs/RESULTS.md")
    if check:
        _check_document(out, chosen if studies else None)
    code = _run_reproduce(chosen, smoke, out, render_only, store, poll, seed_offset, url, token)
    raise typer.Exit(code)


def _check_document(out: Path, chosen: Any) -> NoReturn:
    """``reproduce --check``: print what is stale, exit 0 (current) or 1."""
    stale = check_document(out, chosen)
    for line in stale:
        typer.echo(f"stale: {line}")
    typer.echo(f"{out}: {'not current' if stale else 'current'} for this checkout")
    raise typer.Exit(1 if stale else 0)


def _run_reproduce(
    chosen: Any,
    smoke: bool,
    out: Path,
    render_only: bool,
    store: str | None,
    poll: float,
    seed_offset: int,
    url: str,
    token: str | None,
) -> int:
    """Run (or only render) the chosen studies; the command's exit code."""
    source = None if store is None else StoreSource(open_store(store))
    client = Client(url, None if render_only else _token(token))
    try:
        return run_reproduce(
            client,
            chosen,
            smoke,
            out,
            lambda line: typer.echo(line, err=True),
            render_only=render_only,
            source=source,
            poll_s=poll,
            seed_offset=seed_offset,
        )
    except (ReproduceError, httpx.TransportError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    """Console-script entry point (``divsweep``)."""
    app()
