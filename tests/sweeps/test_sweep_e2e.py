"""End to end: the smoke preset submitted with ``ray job submit`` to a real local Ray head.

While the job runs, a second process polls the Parquet store and notes, for every trial, whether
the experiment was still running when that trial's first metrics became visible. Afterwards the
report CLI renders the table and the phase diagram.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The watcher: a separate process reading the store the way the service does.
WATCH = r"""
import json, sys, time
from sweeps.store import ParquetStore
from sweeps.errors import UnknownExperimentError
root, exp_id, out = sys.argv[1:4]
store = ParquetStore(root)
first_seen, since, status = {}, 0, None
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        rows = store.get_metrics(exp_id, since_seq=since)
        status = store.get_experiment(exp_id).status  # read after the rows
    except UnknownExperimentError:
        time.sleep(0.2)
        continue
    for r in rows:
        first_seen.setdefault(r.trial_id, status)
        since = max(since, r.seq)
    if status in ("complete", "failed", "cancelled"):
        break
    time.sleep(0.2)
json.dump({"first_seen": first_seen, "final": status}, open(out, "w"))
"""


@pytest.mark.slow
def test_smoke_job_streams_results_and_report_renders(ray_head: object, tmp_path: Path) -> None:
    store = tmp_path / "store"
    exp_id = "smoke-e2e"
    seen_file = tmp_path / "seen.json"
    watcher = subprocess.Popen([sys.executable, "-c", WATCH, str(store), exp_id, str(seen_file)])
    dashboard_url = ray_head.dashboard_url  # type: ignore[attr-defined]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    try:
        cmd = [
            ray_bin,
            "job",
            "submit",
            "--address",
            dashboard_url,
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "sweeps.run",
            "sweeps/presets/smoke.yaml",
            "--experiment-id",
            exp_id,
            "--store",
            str(store),
            "--quiet",
        ]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        job = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
        logs = job.stdout + job.stderr
        assert job.returncode == 0, logs[-4000:]
        assert f"experiment {exp_id} done" in logs, logs[-4000:]
        watcher.wait(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0
    seen = json.loads(seen_file.read_text())

    from sweeps import results, summary
    from sweeps.store import open_store

    st = open_store(str(store))
    trials = st.get_trials(exp_id)
    assert len(trials) == 2 and {t.state for t in trials} == {"complete"}
    assert st.get_experiment(exp_id).status == "complete" and seen["final"] == "complete"
    # every trial's metrics were visible to the other process while the sweep was running
    assert set(seen["first_seen"]) == {t.trial_id for t in trials}
    assert set(seen["first_seen"].values()) == {"running"}, seen
    table = results(exp_id, str(store)).to_pandas()
    assert {"test_acc", "train_loss", "data.n_instructions", "seed"} <= set(table.columns)
    assert (table.groupby("trial_id")["seq"].count() == 2).all()  # one report per epoch
    cells = summary(exp_id, str(store)).to_pandas()
    assert sorted(cells["data.n_instructions"]) == [4, 40] and list(cells["n"]) == [1, 1]
    # trials with the same data spec share one generated set; these two differ: two sets
    assert len({t.data_hash for t in trials}) == 2
    # Tune wrote TensorBoard event files beside the store
    assert list((store / "tune" / exp_id).rglob("events.out.tfevents.*"))

    # the working dir was uploaded without the virtualenv (.gitignore is respected)
    unpacked = list(Path(ray_head.temp_dir).rglob("working_dir_files/*/sweeps/run.py"))  # type: ignore[attr-defined]
    assert unpacked, "the job's working dir was not found under the head's temp dir"
    job_dir = unpacked[0].parents[1]
    assert (job_dir / "sweeps" / "presets" / "smoke.yaml").is_file()
    assert not (job_dir / ".venv").exists()

    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeps",
            "report",
            exp_id,
            "--store",
            str(store),
            "--out",
            str(tmp_path / "report"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert "data.n_instructions" in report.stdout and "test_acc_mean" in report.stdout
    png = tmp_path / "report" / f"{exp_id}-phase.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
