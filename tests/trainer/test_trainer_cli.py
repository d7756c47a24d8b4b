"""`python -m trainer` end to end, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_trains_from_spec_and_writes_outputs(tmp_path, make_spec):
    spec = make_spec(n_instructions=4, examples_per_instruction=50, test={"n_test": 40})
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    (tmp_path / "train.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "nano",
                "max_steps": 12,
                "batch_size": 16,
                "eval_every": 6,
                "eval_per_epoch": False,
                "eval_train_n": 20,
            }
        )
    )
    out = tmp_path / "run"
    proc = _run(
        "--data",
        str(tmp_path / "data.yaml"),
        "--config",
        str(tmp_path / "train.yaml"),
        "--set",
        "lr=3e-3",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "done: step 12" in proc.stdout
    assert "step 6/12" in proc.stderr  # readable progress logs
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [6, 12]
    assert all("test_acc" in m for m in lines)
    assert Path(lines[-1]["checkpoint"]).is_dir()  # older checkpoints are pruned
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["step"] == 12 and result["checkpoint"] == lines[-1]["checkpoint"]
    assert json.loads((out / "config.json").read_text())["lr"] == 3e-3


def test_cli_reads_a_saved_dataset_dir(tmp_path, small_ds):
    small_ds.save(tmp_path / "ds")
    proc = _run(
        "--data",
        str(tmp_path / "ds"),
        "--set",
        "model=nano",
        "--set",
        "max_steps=2",
        "--set",
        "eval_test_n=5",
        "--set",
        "eval_train_n=0",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1


def test_cli_bad_config_exits_2_naming_the_field(tmp_path, small_ds):
    small_ds.save(tmp_path / "ds")
    proc = _run(
        "--data",
        str(tmp_path / "ds"),
        "--set",
        "model=nano",
        "--set",
        "epochs=1",
        "--set",
        "n_head=3",
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 2
    assert "n_embd: 64 is not divisible by n_head=3" in proc.stderr
