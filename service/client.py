"""A Python client of the divsweep service (httpx), for notebooks, scripts and the CLI itself.

Every call returns the service's own response models (`service.schemas`), a pyarrow table, or
a pandas frame; every refusal raises :class:`ServiceError` carrying the service's JSON error
(``error`` code, ``detail``, and the ``fields`` it names). Example::

    from service.client import DivsweepClient

    with DivsweepClient("http://127.0.0.1:8000", token="...") as ds:
        exp = ds.submit(preset="fig2a-mini", overrides={"seeds": [0]})
        for event in ds.watch(exp.id):          # results as they are stored, then the status
            if event.kind == "result":
                print(event.data["trial_id"], event.data["metrics"].get("test_acc_op"))
        ds.status(exp.id).status                # 'complete'
        df = ds.results_frame(exp.id)           # one row per report, parameters and metrics
        ds.summary(exp.id)                      # per grid cell: mean/std over seeds

``url`` defaults to ``DIVSWEEP_URL`` (else ``http://127.0.0.1:8000``) and ``token`` to
``DIVSWEEP_TOKEN``; only submitting and cancelling need the token.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from service.schemas import ExperimentOut, ExperimentPage, SubmitOut
from sweeps.specs.lifecycle import TERMINAL_STATUSES
from sweeps.specs.spec import yaml_load

DEFAULT_URL = "http://127.0.0.1:8000"


class ServiceError(Exception):
    """The service answered with an error (or not at all: ``status_code`` 0).

    ``error`` is the stable code (``bad_request``, ``unauthorized``, ``not_found``, ...),
    ``fields`` the offending fields as the service named them
    (``[{"field": "data.noop_fraction", "message": "...", "type": "..."}]``).
    """

    def __init__(
        self, status_code: int, error: str, detail: str, fields: list[dict[str, Any]] | None = None
    ) -> None:
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.fields = list(fields or [])
        lines = [f"{status_code} {error}: {detail}"]
        lines += [f"  {f.get('field')}: {f.get('message')}" for f in self.fields]
        super().__init__("\n".join(lines))

    @classmethod
    def from_response(cls, r: httpx.Response) -> ServiceError:
        try:
            body = r.json()
            return cls(
                r.status_code,
                str(body.get("error", "error")),
                str(body.get("detail", r.text)),
                body.get("fields"),
            )
        except (ValueError, AttributeError):
            return cls(r.status_code, "error", r.text[:2000])


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of ``/events``: ``result`` (a stored row) or ``status`` (the end)."""

    kind: str
    id: str | None
    data: dict[str, Any] = field(default_factory=dict)


class DivsweepClient:
    """The service's REST API as methods (see the module docstring)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("DIVSWEEP_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("DIVSWEEP_TOKEN")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)

    # --- plumbing -------------------------------------------------------------------------------
    def __enter__(self) -> DivsweepClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _auth(self) -> dict[str, str]:
        if not self.token:
            raise ServiceError(401, "unauthorized", "no token: pass token= or set DIVSWEEP_TOKEN")
        return {"Authorization": f"Bearer {self.token}"}

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self._http.request(method, path, **kw)
        if not r.is_success:
            raise ServiceError.from_response(r)
        return r

    # --- experiments ----------------------------------------------------------------------------
    def submit(
        self,
        spec: Mapping[str, Any] | str | Path | None = None,
        *,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry_s: float = 0.0,
    ) -> SubmitOut:
        """Submit a spec (a mapping, or a ``.yaml``/``.json`` file) or a ``preset`` with
        ``overrides``. With ``retry_s`` > 0 a dropped connection or a 503 (Ray briefly away) is
        retried that long under one Idempotency-Key, so a retry never submits twice."""
        if (spec is None) == (preset is None):
            raise ValueError("pass exactly one of spec and preset")
        if preset is not None:
            body: Any = {"preset": preset, "overrides": dict(overrides or {})}
        elif isinstance(spec, str | Path):
            body = yaml_load(Path(spec).read_text())
        else:
            body = dict(spec or {})
        key = idempotency_key or (f"client-{uuid.uuid4().hex}" if retry_s > 0 else None)
        headers = self._auth() | ({"Idempotency-Key": key} if key else {})
        deadline = time.monotonic() + retry_s
        while True:
            try:
                r = self._http.post("/v1/experiments", json=body, headers=headers)
            except httpx.TransportError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(2.0)
                continue
            if r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            if not r.is_success:
                raise ServiceError.from_response(r)
            return SubmitOut.model_validate(r.json())

    def status(self, exp_id: str) -> ExperimentOut:
        """Status (from Ray), trial counts, best metric so far, and ``waiting`` if stalled."""
        r = self._request("GET", f"/v1/experiments/{exp_id}")
        return ExperimentOut.model_validate(r.json())

    def list(
        self, status: str | None = None, name: str | None = None, limit: int = 50, offset: int = 0
    ) -> ExperimentPage:
        params = {
            k: v
            for k, v in {"status": status, "name": name, "limit": limit, "offset": offset}.items()
            if v is not None
        }
        return ExperimentPage.model_validate(
            self._request("GET", "/v1/experiments", params=params).json()
        )

    def cancel(self, exp_id: str) -> ExperimentOut:
        r = self._request("POST", f"/v1/experiments/{exp_id}/cancel", headers=self._auth())
        return ExperimentOut.model_validate(r.json())

    def wait(
        self, exp_id: str, poll_s: float = 2.0, timeout_s: float | None = None
    ) -> ExperimentOut:
        """Poll until the experiment ends; TimeoutError after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            exp = self.status(exp_id)
            if exp.status in TERMINAL_STATUSES:
                return exp
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{exp_id} is still {exp.status} after {timeout_s} s")
            time.sleep(poll_s)

    def watch(
        self, exp_id: str, last_event_id: str | None = None, give_up_s: float = 60.0
    ) -> Iterator[Event]:
        """Every stored result as an :class:`Event`, then the final ``status`` event.

        A dropped stream (service restart, proxy timeout) resumes from the last event id, so
        no row is seen twice or missed; a service unreachable for ``give_up_s`` raises.
        """
        last = last_event_id
        down_since: float | None = None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/experiments/{exp_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30, read=120),
                ) as r:
                    if not r.is_success:
                        r.read()
                        raise ServiceError.from_response(r)
                    down_since = None
                    for ev in _sse(r.iter_lines()):
                        last = ev.id or last
                        yield ev
                        if ev.kind == "status":
                            return
            except httpx.TransportError:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > give_up_s:
                    raise
                time.sleep(2.0)

    # --- results --------------------------------------------------------------------------------
    def results(self, exp_id: str) -> pa.Table:
        """Every stored report (one row each): ids, state, parameters, metrics."""
        r = self._request(
            "GET", f"/v1/experiments/{exp_id}/results", params={"format": "parquet"}, timeout=300
        )
        return pq.read_table(io.BytesIO(r.content))

    def results_frame(self, exp_id: str) -> Any:
        """:meth:`results` as a pandas DataFrame."""
        return self.results(exp_id).to_pandas()

    def download(self, exp_id: str, fmt: Literal["json", "csv", "parquet"]) -> bytes:
        """The results in a wire format, as the service sends them."""
        return self._request(
            "GET", f"/v1/experiments/{exp_id}/results", params={"format": fmt}, timeout=300
        ).content

    def summary(self, exp_id: str) -> pa.Table:
        """Per grid cell: ``n`` seeds and mean/std of every final metric."""
        rows = self._request("GET", f"/v1/experiments/{exp_id}/summary").json()["rows"]
        return pa.Table.from_pylist(rows)

    def charts(self, exp_id: str) -> dict[str, Any]:
        """What the results page draws (phase diagram, heat map, threshold, curves, trials)."""
        out: dict[str, Any] = self._request("GET", f"/v1/experiments/{exp_id}/charts").json()
        return out


def _sse(lines: Iterator[str]) -> Iterator[Event]:
    """Parse a text/event-stream (comments and keep-alives skipped)."""
    kind, ident = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Event(kind, ident, json.loads("\n".join(data)))
            kind, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
