"""A lab's deployment on one machine: the registry on PostgreSQL, the results on S3.

`divsweep serve` runs as docs/DEPLOY.md configures it (``DIVSWEEP_REGISTRY_URL`` a PostgreSQL
URL, ``DIVSWEEP_STORE_URI`` an ``s3://`` URI), here against the session's throwaway PostgreSQL
and moto S3 servers (`servers`) and its own Ray head. The smoke preset runs to ``complete``: the
sweep driver writes its trials and metric rows to S3 (compacting them there), the service reads
them back from S3 for the results, and its registry row lives in PostgreSQL.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from uvicorn_proc import serve

from service.registry import Registry
from sweeps.store import ParquetStore, open_store

pytestmark = pytest.mark.slow

#: 2 trials x 4 reports: 8 one-row metric writes, one full class to compact
OVERRIDES = {"train": {"epochs": 4, "eval_per_epoch": True}}


@pytest.mark.timeout(420)
def test_smoke_sweep_on_a_postgres_registry_and_an_s3_store(
    postgres: Any, s3: Any, tmp_path: Path
) -> None:
    registry_url = postgres.new_database()
    store_uri = s3.new_bucket("divsweep")
    env = {"DIVSWEEP_REGISTRY_URL": registry_url, "DIVSWEEP_STORE_URI": store_uri}
    with serve(tmp_path, num_cpus=2, env=env) as svc:
        auth = {"Authorization": f"Bearer {svc.token}"}
        assert httpx.get(f"{svc.url}/readyz", timeout=30).json()["checks"]["store"] == "ok"
        r = httpx.post(
            f"{svc.url}/v1/experiments",
            headers=auth,
            json={"preset": "smoke", "overrides": OVERRIDES},
            timeout=120,
        )
        assert r.status_code == 202, r.text
        exp_id = r.json()["id"]
        deadline, body = time.monotonic() + 300, {}
        while time.monotonic() < deadline:
            body = httpx.get(f"{svc.url}/v1/experiments/{exp_id}", timeout=30).json()
            if body["status"] in ("complete", "failed", "cancelled"):
                break
            time.sleep(1)
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
    assert [i.base_name for i in tune] == [exp_id]
