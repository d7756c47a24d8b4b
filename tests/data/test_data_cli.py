"""``python -m data`` end to end in a subprocess, on a tiny spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from data import DataSpec, load_dataset

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "data", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_from_yaml_and_flags(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "n_instructions: 12\nexamples_per_instruction: 5\nz_len: [6, 20]\nx_len: [2, 4]\n"
        "y_len: [1, 4]\noccurrences: [1, 2]\ntest:\n  n_test: 30\n  n_instructions: 6\n"
    )
    out = tmp_path / "out"
    proc = run_cli(
        str(spec_file),
        "--noop-fraction",
        "0.2",
        "--seed",
        "7",
        "--set",
        "test.disjoint=x",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    expected = DataSpec(
        n_instructions=12,
        examples_per_instruction=5,
        z_len=(6, 20),
        x_len=(2, 4),
        y_len=(1, 4),
        occurrences=(1, 2),
        noop_fraction=0.2,
        seed=7,
        test={"n_test": 30, "n_instructions": 6, "disjoint": "x"},
    )
    assert report["content_hash"] == expected.content_hash
    assert report["train"]["rows"] == 60 and report["train"]["noop_share"] == 0.2
    assert report["train"]["occurrences"] == {"1": 24, "2": 24}
    assert report["train"]["rule_count_max"] == report["train"]["rule_count_min"] == 5
    assert report["train"]["rule_gini"] == 0.0
    ds = load_dataset(out, expect=expected)
    assert ds.train.num_rows == 60


def test_cli_text_summary_and_power_skew(tmp_path: Path) -> None:
    proc = run_cli(
        "--n-instructions",
        "20",
        "--n-examples",
        "400",
        "--distribution",
        "power",
        "--alpha",
        "0.3",
        "--z-len",
        "6,20",
        "--x-len",
        "2,4",
        "--y-len",
        "1,4",
        "--n-test",
        "20",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    assert "content hash" in proc.stdout and "no-op share  0.0000" in proc.stdout
    gini = float(proc.stdout.split("Gini ")[1].split(")")[0])
    assert gini > 0.3  # alpha=0.3 concentrates examples on the first rules


def test_cli_bad_spec_names_field(tmp_path: Path) -> None:
    proc = run_cli(
        "--n-instructions",
        "5",
        "--examples-per-instruction",
        "2",
        "--noop-fraction",
        "1.5",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 2
    assert "noop_fraction" in proc.stderr and "[0, 1)" in proc.stderr
