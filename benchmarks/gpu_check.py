"""One prepared command that measures divsweep's GPU path and always comes back with a report.

    python benchmarks/gpu_check.py --out $OUT                          # one H100/H200: <= 8 min
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/r   # the same code, CPU, toy

Made for a device lent for a few minutes, once: every section (`gpu_sections.py`: smoke, fused,
fig2a_slice, train_speed, evaluator, memory, cuda_tests, in that order of value) runs in its own
process, in its own session, with a wall-clock bound. This process imports no torch (it never
holds a CUDA context) and only starts, times and, at the bound, kills (SIGKILL to the section's
whole process group: its member processes and pytest too); a crash, a hang or an out-of-memory
error ends one section. ``--budget-s`` bounds *end* times: a section gets at most what is left
of the budget (less a few seconds for the report) and is skipped, saying so, when that is below
what it needs. Every figure is appended to ``OUT/rows.jsonl`` as it is measured, and
``OUT/report.json`` and ``OUT/report.md`` are rewritten after each section, so a run cut short
still leaves everything it measured.

On a machine without network (the device tool's), pydantic travels as wheels:
``bash scripts/gpu_wheels.sh`` here, then there (README, "GPUs: the check to run")::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --out $OUT

``--inject SECTION=KIND`` (tests only) makes a section fail on purpose (``hang``, ``oom``,
``kill``, ``member-oom``; see `gpu_sections`), to prove the report still comes back.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Seconds kept back from the budget for writing the report after the last section.
REPORT_RESERVE_S = 5.0


@dataclass(frozen=True)
class Section:
    """A section's wall-clock bound and the least time worth starting it with (full mode)."""

    name: str
    bound_s: float
    need_s: float
    quick_bound_s: float


# In order of value: a lease that ends early keeps the figures that matter most.
SECTIONS = [
    Section("smoke", 60, 15, 120),
    Section("fused", 240, 60, 300),
    Section("fig2a_slice", 50, 25, 120),
    Section("train_speed", 100, 40, 120),
    Section("evaluator", 45, 20, 120),
    Section("memory", 40, 20, 120),
    Section("cuda_tests", 120, 40, 150),
]


def section_limit(sec: Section, quick: bool, now: float, deadline: float) -> float | None:
    """The bound a section runs under: its own, cut to what is left of the budget; None when
    what is left is less than it needs (the section is skipped)."""
    left = deadline - now - REPORT_RESERVE_S
    need = sec.need_s / 10 if quick else sec.need_s
    if left < need:
        return None
    return min(sec.quick_bound_s if quick else sec.bound_s, left)


def run_section(
    name: str, limit: float, args: argparse.Namespace, work: Path, inject: str | None
) -> dict[str, Any]:
    """Run one section in its own process group for at most ``limit`` seconds; its status."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("GPU_CHECK_INJECT", None)
    if inject:
        env["GPU_CHECK_INJECT"] = inject
    cmd = [sys.executable, str(HERE / "gpu_sections.py"), name, "--out", str(args.out)]
    cmd += ["--work", str(work), "--device", args.device, "--time-s", f"{limit:.0f}"]
    cmd += ["--quick"] if args.quick else []
    t0 = time.monotonic()
    proc = subprocess.Popen(  # a fixed argument list, no shell
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: one kill reaches its children too
    )
    try:
        output, _ = proc.communicate(timeout=limit)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        output = _drain(proc)
        rc = None
    status = (
        "timeout"
        if rc is None
        else "ok"
        if rc == 0
        else f"crashed (signal {-rc})"
        if rc < 0
        else "failed"
    )
    return {
        "section": name,
        "status": status,
        "seconds": round(time.monotonic() - t0, 1),
        "limit_s": round(limit),
        "returncode": rc,
        "output_tail": (output or "")[-2500:],
    }


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _drain(proc: subprocess.Popen[str]) -> str:
    """What a killed section printed (bounded: a stray process holding the pipe cannot stall)."""
    try:
        output, _ = proc.communicate(timeout=10)
        return output or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        return "[gpu_check: no output collected]"


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill mid-write
            continue
    return rows


def build_report(out: Path, meta: dict[str, Any], statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """report.json's content: the run's settings, each section's status and rows."""
    rows = read_rows(out / "rows.jsonl")
    env = next((r["environment"] for r in rows if "environment" in r), {})
    sections: dict[str, Any] = {}
    for st in statuses:
        mine = [
            {k: v for k, v in r.items() if k != "section"}
            for r in rows
            if r.get("section") == st["section"] and "environment" not in r
        ]
        sections[st["section"]] = {**st, "rows": mine}
    return {**meta, "environment": env, "sections": sections}


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json and report.md, each written whole (tmp file, then rename)."""
    for name, text in (
        ("report.json", json.dumps(report, indent=1, default=str)),
        ("report.md", markdown(report)),
    ):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# divsweep GPU check, {report.get('date', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in report.items() if k not in ("sections", "environment")]
    lines += [f"- {k}: {v}" for k, v in report.get("environment", {}).items()]
    for name, sec in report.get("sections", {}).items():
        lines += ["", f"## {name}: {sec['status']} ({sec.get('seconds', 0)} s)", ""]
        rows = [r for r in sec.get("rows", []) if "output_tail" not in r and "traceback" not in r]
        for r in rows:
            if set(r) <= {"setup"}:
                lines.append(f"- setup: {r['setup']}")
        table = [r for r in rows if "setup" not in r]
        if table:
            cols = list(dict.fromkeys(c for r in table for c in r))
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in table]
        errors = [r for r in sec.get("rows", []) if "traceback" in r or "output_tail" in r]
        tail = errors[-1].get("traceback") or errors[-1].get("output_tail") if errors else None
        if sec["status"] != "ok" and not tail:
            tail = sec.get("output_tail")
        if tail:
            lines += ["", "```", str(tail)[-1500:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory for the report")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="every section at toy size")
    p.add_argument(
        "--budget-s", type=float, help="end of the last section (default 480; quick 600)"
    )
    p.add_argument("--only", nargs="+", choices=[s.name for s in SECTIONS], help="these only")
    p.add_argument("--section-s", action="append", default=[], metavar="NAME=S", help="a bound")
    p.add_argument("--inject", action="append", default=[], metavar="NAME=KIND", help="tests")
    args = p.parse_args(argv)
    budget = args.budget_s or (600.0 if args.quick else 480.0)
    bounds = {k: float(v) for k, v in (a.split("=", 1) for a in args.section_s)}
    inject = dict(a.split("=", 1) for a in args.inject)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.jsonl").write_text("")
    start = time.monotonic()
    deadline = start + budget
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "device_arg": args.device,
        "budget_s": budget,
    }
    statuses: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        for sec in SECTIONS:
            if args.only and sec.name not in args.only:
                continue
            limit = section_limit(sec, args.quick, time.monotonic(), deadline)
            if limit is not None and sec.name in bounds:
                limit = min(limit, bounds[sec.name])
            if limit is None:
                left = round(deadline - time.monotonic())
                st = {"section": sec.name, "status": f"skipped ({left} s of budget left)"}
            else:
                st = run_section(sec.name, limit, args, Path(work), inject.get(sec.name))
            statuses.append(st)
            meta["total_s"] = round(time.monotonic() - start, 1)
            write_report(args.out, build_report(args.out, meta, statuses))
            print(f"{sec.name}: {st['status']} ({st.get('seconds', 0)} s)", flush=True)
    meta["total_s"] = round(time.monotonic() - start, 1)
    write_report(args.out, build_report(args.out, meta, statuses))
    print(f"report: {args.out / 'report.md'} ({meta['total_s']} s)", flush=True)
    return 0 if all(s["status"] == "ok" for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
