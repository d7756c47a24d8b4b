"""`benchmarks/gpu_check.py --device cpu --quick`: the GPU check's own code, run on the CPU so
that it cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_cpu_run_writes_every_section(tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick"]
        + ["--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    status = {
        name: report[name]["status"]
        for name in ("cuda_tests", "memory", "train_speed", "evaluator", "fused", "fig2a_slice")
    }
    assert status == {
        "cuda_tests": "skipped",  # no CUDA here: said, not hidden
        "memory": "ok",
        "train_speed": "ok",
        "evaluator": "ok",
        "fused": "ok",
        "fig2a_slice": "ok",
    }
    assert [r["preset"] for r in report["memory"]["presets"]] == ["nano", "tiny", "small", "paper"]
    assert all(r["tokens_per_s"] > 0 for r in report["train_speed"]["rows"])
    assert report["evaluator"]["rows"][0]["predictions_differing"] == 0  # fp32: identical
    assert [r["k"] for r in report["fused"]["rows"]] == [1, 2]
    assert report["fig2a_slice"]["trial_gpu_hours"] > 0
    md = (out / "report.md").read_text()
    assert "## fused: ok" in md and "| k | fused_tokens_per_s |" in md
