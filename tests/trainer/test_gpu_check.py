"""`benchmarks/gpu_check.py` on the CPU: the GPU check's own orchestration and code at toy size,
so that the one call a lent GPU gets is not their first run anywhere.

The rehearsal runs every section as `gpu_check` runs them on a GPU (one process each, bounded,
the fused section's member processes spawned and released together), and a second run injects
a hang, an out-of-memory error in a member process and a crash by signal, and must still come
back with its report within its budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def _run(tmp_path: Path, *args: str, timeout: float) -> tuple[dict, float, str]:
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick"]
        + ["--out", str(out), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.monotonic() - t0
    report = json.loads((out / "report.json").read_text())
    return report, wall, proc.stdout + proc.stderr


def _rows(report: dict, section: str, **match) -> list[dict]:
    rows = report["sections"][section]["rows"]
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


@pytest.mark.timeout(1200)
def test_quick_cpu_rehearsal_reports_every_section(tmp_path):
    # A generous budget: this shared machine can be slow; the bounds are what is under test
    # in the next test.
    report, wall, log = _run(tmp_path, "--budget-s", "1000", timeout=1100)
    status = {name: sec["status"] for name, sec in report["sections"].items()}
    assert status == {name: "ok" for name in [s.name for s in gpu_check.SECTIONS]}, log[-3000:]
    assert report["total_s"] <= 1000 and report["environment"]["torch"]
    fused = _rows(report, "fused", k=2, run=0)
    assert {r["side"] for r in fused} == {"fused", "processes", "sequential"}
    assert all(r["tokens_per_s"] > 0 for r in fused)  # the member processes came back
    assert _rows(report, "fused", summary=True)[0]["fused_over_processes"] > 0
    assert [r["preset"] for r in _rows(report, "memory")] == ["nano", "tiny", "small", "paper"]
    assert all(r["tokens_per_s"] > 0 for r in _rows(report, "train_speed"))
    assert _rows(report, "evaluator")[0]["predictions_differing"] == 0  # fp32: identical
    assert _rows(report, "fig2a_slice")[0]["trial_gpu_hours"] > 0
    # No CUDA here: the gpu tests skip, and say so (the command line itself was rehearsed).
    assert "skipped" in _rows(report, "cuda_tests")[0]["summary"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## fused: ok" in md and "| shape | k | run | side |" in md
    print(f"rehearsal: {report['total_s']} s (wall {wall:.0f} s)")


@pytest.mark.timeout(600)
def test_a_hang_an_oom_and_a_crash_still_give_the_report_in_time(tmp_path):
    budget = 400
    report, wall, log = _run(
        tmp_path,
        "--budget-s",
        str(budget),
        "--only",
        "smoke",
        "fused",
        "fig2a_slice",
        "memory",
        "--inject",
        "smoke=kill",  # the section's process dies of SIGKILL
        "--inject",
        "fused=member-oom",  # member 1 of the processes run raises torch.OutOfMemoryError
        "--inject",
        "fig2a_slice=hang",  # never returns: killed at its bound
        "--section-s",
        "fig2a_slice=8",
        timeout=budget + 60,
    )
    sec = report["sections"]
    assert sec["smoke"]["status"] == "crashed (signal 9)", log[-3000:]
    # The member's OOM fails the processes measurement, named; the other sides still ran.
    assert sec["fused"]["status"] == "ok", log[-3000:]
    [procs] = _rows(report, "fused", side="processes")
    assert "OutOfMemoryError" in procs["error"] and "tokens_per_s" not in procs
    assert all(r["tokens_per_s"] > 0 for r in _rows(report, "fused", side="fused"))
    assert sec["fig2a_slice"]["status"] == "timeout" and sec["fig2a_slice"]["seconds"] < 8 + 5
    assert sec["memory"]["status"] == "ok"  # after the hang, the next section ran
    assert report["total_s"] <= budget and wall <= budget + 30
    print(f"injected: smoke {sec['smoke']['seconds']} s, fused {sec['fused']['seconds']} s, ")
    print(f"fig2a_slice {sec['fig2a_slice']['seconds']} s, total {report['total_s']} s")


def test_the_budget_bounds_end_times():
    fused = next(s for s in gpu_check.SECTIONS if s.name == "fused")
    reserve = gpu_check.REPORT_RESERVE_S
    # Plenty left: the section's own bound.
    assert gpu_check.section_limit(fused, False, now=0, deadline=1000) == fused.bound_s
    # Less left than its bound: it must end by the deadline (less the report's reserve).
    assert gpu_check.section_limit(fused, False, now=900, deadline=1000) == 100 - reserve
    # Less left than it needs: skipped.
    assert gpu_check.section_limit(fused, False, now=1000 - fused.need_s, deadline=1000) is None
