"""A lab's deployment on one machine: the registry on PostgreSQL, the results on S3.

`divsweep serve` runs as docs/DEPLOY.md configures it (``DIVSWEEP_REGISTRY_URL`` a PostgreSQL
URL, ``DIVSWEEP_STORE_URI`` an ``s3://`` URI), here against the session's throwaway PostgreSQL
and moto S3 servers (`servers`) and its own Ray head. The smoke preset runs to ``complete``: the
sweep driver writes its trials and metric rows to S3 (compacting them there), the service reads
them back from S3 for the results, and its registry row lives in PostgreSQL.

Then a second sweep is started the way the README shows without the service: a Ray job
``python -m sweeps.run smoke.yaml --store <the service's store>``, submitted straight to the
head's Jobs API with the head's token. The service lists it (marked as started outside the
service), and its status, results and charts are served from the store; cancelling it is
refused.
"""

from __future__ import annotations

import io
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from uvicorn_proc import serve, submit_preset, wait_final

from service.registry import Registry
from sweeps.store import ParquetStore, open_store

pytestmark = pytest.mark.slow

#: 2 trials x 4 reports: 8 one-row metric writes, one full class to compact
OVERRIDES = {"train": {"epochs": 4, "eval_per_epoch": True}}
ROOT = Path(__file__).resolve().parents[2]


def _submit_outside_the_service(dashboard_url: str, state: Path, store_uri: str) -> str:
    """``ray job submit -- python -m sweeps.run smoke.yaml --store URI`` through the Jobs API,
    with the head's token (the SDK form of the README's command); returns the job's id."""
    from ray.job_submission import JobSubmissionClient

    token = (state / "ray-token").read_text().strip()
    client = JobSubmissionClient(dashboard_url, headers={"Authorization": f"Bearer {token}"})
    preset = ROOT / "sweeps" / "presets" / "smoke.yaml"
    entry = shlex.join([sys.executable, "-m", "sweeps.run", str(preset), "--store", store_uri])
    job_id: str = client.submit_job(entrypoint=entry)
    return job_id


def _outside_is_shown_read_only(url: str, auth: dict[str, str], job_id: str) -> None:
    deadline, items = time.monotonic() + 240, []
    while time.monotonic() < deadline:
        items = httpx.get(f"{url}/v1/experiments", timeout=30).json()["items"]
        outside = [i for i in items if i["external"]]
        if outside and outside[0]["status"] in ("complete", "failed"):
            break
        time.sleep(2)
    (exp,) = [i for i in items if i["external"]]
    assert exp["name"] == "smoke" and exp["submitter"] == "(outside the service)", (job_id, exp)
    exp_id = exp["id"]  # sweeps.run's own form, e.g. smoke-20260101T120000-1a2b
    status = httpx.get(f"{url}/v1/experiments/{exp_id}", timeout=30).json()
    assert status["status"] == "complete" and status["progress"]["complete"] == 2, status
    rows = httpx.get(f"{url}/v1/experiments/{exp_id}/results", timeout=60).json()["rows"]
    assert {r["trial_id"] for r in rows} and all(r["experiment_id"] == exp_id for r in rows)
    charts = httpx.get(f"{url}/v1/experiments/{exp_id}/charts", timeout=60).json()
    assert charts["experiment_id"] == exp_id and len(charts["trials"]) == 2
    assert "started outside the service" in httpx.get(f"{url}/", timeout=30).text
    refused = httpx.post(f"{url}/v1/experiments/{exp_id}/cancel", headers=auth, timeout=30)
    assert refused.status_code == 409, refused.text


@pytest.mark.timeout(420)
def test_smoke_sweep_on_a_postgres_registry_and_an_s3_store(
    postgres: Any, s3: Any, tmp_path: Path
) -> None:
    registry_url = postgres.new_database()
    store_uri = s3.new_bucket("divsweep")
    env = {"DIVSWEEP_REGISTRY_URL": registry_url, "DIVSWEEP_STORE_URI": store_uri}
    with serve(tmp_path, num_cpus=2, env=env) as svc:
        auth = {"Authorization": f"Bearer {svc.token}"}
        outside = _submit_outside_the_service(svc.dashboard_url, tmp_path, store_uri)
        assert httpx.get(f"{svc.url}/readyz", timeout=30).json()["checks"]["store"] == "ok"
        exp_id = submit_preset(svc.url, svc.token, "smoke", OVERRIDES)
        body: dict[str, Any] = wait_final(svc.url, exp_id, 300)
        assert body["status"] == "complete", body
        assert body["progress"]["complete"] == 2 and body["progress"]["results"] == 8
        table = pq.read_table(
            io.BytesIO(
                httpx.get(
                    f"{svc.url}/v1/experiments/{exp_id}/results?format=parquet", timeout=60
                ).content
            )
        )
        assert table.num_rows == 8 and sorted(table.column("seq").to_pylist()) == list(range(1, 9))
        _outside_is_shown_read_only(svc.url, auth, outside)
    # The registry row is PostgreSQL's; nothing was written where SQLite would have been.
    row = Registry(registry_url).get(exp_id)
    assert (row.name, row.status) == ("smoke", "complete")
    assert not (tmp_path / "registry.db").exists() and not (tmp_path / "results").exists()
    # The rows are S3 objects, the 8 one-row metric writes compacted into fewer objects.
    store = open_store(store_uri)
    assert isinstance(store, ParquetStore) and isinstance(store.fs, pafs.S3FileSystem)
    metric_objects = [
        i.path
        for i in store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))
        if i.type == pafs.FileType.File and f"experiments/{exp_id}/metrics/" in i.path
    ]
    assert 1 <= len(metric_objects) < 8, metric_objects
    assert [m.seq for m in store.get_metrics(exp_id)] == list(range(1, 9))
    assert {t.state for t in store.get_trials(exp_id)} == {"complete"}
    # Tune's own state went beside the store, on S3 as well
    tune = store.fs.get_file_info(pafs.FileSelector(f"{store.root}/tune", allow_not_found=True))
    assert exp_id in [i.base_name for i in tune] and len(tune) == 2  # and the outside sweep's
