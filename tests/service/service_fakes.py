"""Fakes for the service's unit tests: an in-memory Ray and results store, the app on them.

The real spec validation (``sweeps.ExperimentSpec``) is used throughout; only Ray and the
store are replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from fastapi.testclient import TestClient

from service.errors import NotFoundError
from service.jobs import JobState
from service.results import TRIAL_STATES, ResultEvent, TrialCounts
from sweeps.store.base import ExperimentRecord

TOKEN = "alice-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def small_spec(name: str = "toy", **extra: Any) -> dict[str, Any]:
    """A valid four-trial grid spec (the sweeps module's own worked example)."""
    spec: dict[str, Any] = {
        "name": name,
        "data": {
            "n_instructions": 10,
            "examples_per_instruction": 10,
            "z_len": [4, 8],
            "x_len": [2, 3],
            "y_len": [1, 2],
            "test": {"n_test": 100},
        },
        "train": {"model": "nano", "epochs": 1},
        "axes": [{"field": "data.n_instructions", "values": [10, 100]}],
        "budget": {"total_examples": 1000},
        "seeds": [0, 1],
    }
    spec.update(extra)
    return spec


class FakeRunner:
    """A cluster in memory: submitted jobs sit in ``states``; tests move them along."""

    dashboard_url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str]] = []
        self.states: dict[str, JobState] = {}
        self.stopped: list[str] = []
        self.up = True
        # what Ray would list: one CPU node like this machine (tests change it)
        self.node_list: list[dict[str, float]] | None = [{"CPU": 2.0, "memory": 16 * 2**30}]
        # what Ray's /api/cluster_status would say (`service.waiting`); None: unavailable
        self.status_data: dict[str, Any] | None = None

    def submit(self, exp_id: str, spec_json: str) -> str:
        job = "divsweep-" + exp_id
        self.submitted.append((exp_id, spec_json))
        self.states[job] = JobState.RUNNING
        return job

    def status(self, job_id: str) -> JobState:
        return self.states.get(job_id, JobState.MISSING)

    def stop(self, job_id: str) -> None:
        self.stopped.append(job_id)
        self.states[job_id] = JobState.STOPPED

    def ping(self) -> bool:
        return self.up

    def nodes(self) -> list[dict[str, float]] | None:
        return self.node_list

    def cluster_status(self) -> dict[str, Any] | None:
        return self.status_data


class FakeResults:
    """A results store in memory with the same reading semantics as the real one."""

    def __init__(self) -> None:
        self.rows: dict[str, list[ResultEvent]] = {}
        self.trials: dict[str, dict[str, str]] = {}
        self.cancelled: list[str] = []
        self.writable = True
        self.status: dict[str, str] = {}  # the experiment status the sweep driver recorded
        # experiments a sweep started outside the service wrote to the store
        self.outside: dict[str, ExperimentRecord] = {}

    def add(self, exp_id: str, trial_id: str, metrics: dict[str, Any]) -> int:
        rows = self.rows.setdefault(exp_id, [])
        seq = len(rows) + 1
        rows.append(ResultEvent(seq, trial_id, 1000.0 + seq, metrics))
        self.trials.setdefault(exp_id, {})[trial_id] = "running"
        return seq

    def progress(self, exp_id: str, metric: str, mode: str) -> TrialCounts:
        counts = dict.fromkeys(TRIAL_STATES, 0)
        for state in self.trials.get(exp_id, {}).values():
            counts[state] += 1
        vals = [
            (r.metrics[metric], r.trial_id)
            for r in self.rows.get(exp_id, [])
            if metric in r.metrics
        ]
        best = max(vals) if vals else (None, None)
        return TrialCounts(
            counts, len(self.rows.get(exp_id, [])), best[0], best[1], self.status.get(exp_id)
        )

    def events(self, exp_id: str, since_seq: int, limit: int) -> list[ResultEvent]:
        return [r for r in self.rows.get(exp_id, []) if r.seq > since_seq][:limit]

    def table(self, exp_id: str) -> pa.Table:
        if exp_id not in self.rows:
            raise NotFoundError(f"experiment {exp_id!r} has no results yet")
        return pa.Table.from_pylist(
            [{"seq": r.seq, "trial_id": r.trial_id, **r.metrics} for r in self.rows[exp_id]]
        )

    def summary(self, exp_id: str) -> pa.Table:
        return self.table(exp_id).group_by("trial_id").aggregate([("test_acc", "mean")])

    def plot_png(self, exp_id: str) -> bytes:
        self.table(exp_id)
        return b"\x89PNG\r\n\x1a\nfake"

    def charts(self, exp_id: str) -> dict[str, Any]:
        self.table(exp_id)
        return {
            "metric": "test_acc",
            "curves": [
                {
                    "trial_id": t,
                    "step": [r.metrics.get("step") for r in self.rows[exp_id] if r.trial_id == t],
                }
                for t in self.trials[exp_id]
            ],
        }

    def cancel(self, exp_id: str) -> None:
        self.cancelled.append(exp_id)
        for t, state in self.trials.get(exp_id, {}).items():
            if state in ("pending", "running"):
                self.trials[exp_id][t] = "cancelled"

    def check_writable(self) -> None:
        if not self.writable:
            raise OSError("read-only")

    def record(self, exp_id: str) -> ExperimentRecord | None:
        return self.outside.get(exp_id)

    def records(self) -> list[ExperimentRecord]:
        return list(self.outside.values())


class Harness:
    """An app on fakes, plus the handles a test inspects."""

    def __init__(self, state_dir: Path, **settings: Any) -> None:
        from service.app import create_app
        from service.settings import Settings

        tokens = {"alice": TOKEN, "bob": "bob-token-4567"}
        self.settings = Settings(state_dir=state_dir, tokens=tokens, **settings)
        self.runner = FakeRunner()
        self.results = FakeResults()
        self.app = create_app(self.settings, runner=self.runner, results=self.results)
        self.client = TestClient(self.app)

    def registry_rows(self) -> int:
        return int(self.app.state.registry.query(limit=1000)[1])

    def submit(self, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        raw = json.dumps(small_spec() if body is None else body)
        return self.client.post(
            "/v1/experiments",
            content=raw,
            headers={**AUTH, "Content-Type": "application/json", **(headers or {})},
        )
