"""``divsweep reproduce --smoke`` end to end: a real uvicorn service on a real local Ray head runs
every study's smoke settings (service -> Ray job -> Tune -> trainer -> store), and the command
writes RESULTS.md with every section, table, figure and verdict. Then ``--render-only`` redraws
the same document from the store, and a rerun of one study keeps the other sections.

The fine-tune study needs the builtin pretrained model of its smoke settings
(`sweeps.reporting.studies.SMOKE_PRETRAINED_INIT`); where this machine cannot run it, the command
skips it with the reason and so does `test_finetune_smoke_section`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from uvicorn_proc import stop_process, uvicorn_command, wait_healthy

from service.cli import app
from service.local_ray import free_port
from service.reproduce import prepare_study, runnable_problem
from sweeps.reporting.studies import STUDIES, default_studies

pytestmark = pytest.mark.slow

TOKEN = "reproduce-token-abcdef"


def _finetune_problem() -> str | None:
    return runnable_problem(prepare_study(STUDIES["finetune-mini"], smoke=True)[1].spec)


FINETUNE_PROBLEM = _finetune_problem()


@pytest.fixture(scope="module")
def service(ray_head: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service as its own uvicorn process (as in test_service_e2e), its URL."""
    state = tmp_path_factory.mktemp("svc")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        DIVSWEEP_STATE_DIR=str(state),
        DIVSWEEP_DASHBOARD_URL=ray_head.dashboard_url,
        DIVSWEEP_TOKENS=json.dumps({"repro": TOKEN}),
        DIVSWEEP_JOB_PYTHON=sys.executable,
    )
    log_path = state / "uvicorn.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            uvicorn_command("service.app:app_from_env", port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(proc, url, 120, lambda: log_path.read_text(errors="replace"))
        _wait_ready(url, 120)
        yield url
    finally:
        stop_process(proc)


def _wait_ready(url: str, timeout_s: float) -> None:
    """Until /readyz says the Ray Jobs API answers (a loaded machine starts the head slowly)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{url}/readyz", timeout=10).text
        time.sleep(0.5)


def _reproduce(url: str, out: Path, *args: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    result = CliRunner().invoke(
        app,
        ["reproduce", "--out", str(out), "--url", url, "--token", TOKEN, "--poll", "0.3", *args],
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output, time.monotonic() - t0


def _section(doc: str, name: str) -> str:
    return doc.split(f'<a id="{name}"></a>')[1].split("<a id=")[0]


@dataclass(frozen=True)
class SmokeRun:
    """The first smoke reproduce of every study: its document, index and wall time."""

    out: Path
    doc: str
    wall_s: float


@pytest.fixture(scope="module")
def smoke_run(service: str, tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    out = tmp_path_factory.mktemp("docs") / "RESULTS.md"
    code, output, wall = _reproduce(service, out, "--smoke")
    assert code == 0, output
    print(f"smoke reproduce of {len(default_studies())} studies: {wall:.1f} s")
    return SmokeRun(out, out.read_text(), wall)


def test_smoke_reproduce_of_every_study(smoke_run: SmokeRun) -> None:
    doc, out = smoke_run.doc, smoke_run.out
    assert "do not edit by hand" in doc[:200]
    assert re.search(r"\| commit \| `[0-9a-f]{4,}(-dirty)?` \|", doc), doc[:1500]
    assert re.search(r"\| machine \| \d+ CPUs, [\d.]+ GiB memory, torch threads \d+", doc)
    index = json.loads((out.parent / "results.json").read_text())
    for name in (s.name for s in default_studies()):
        sec = _section(doc, name)
        if name == "finetune-mini" and FINETUNE_PROBLEM:
            assert "**Skipped.** it cannot run on this machine" in sec
            continue
        rec = index["studies"][name]
        assert rec["status"] == "complete" and rec["smoke"], (name, rec)
        assert f"Experiment `{rec['experiment_id']}`" in sec and "smoke settings" in sec
        assert re.search(r"wall time \d+(\.\d s| min \d+ s)", sec), sec
        assert re.search(r"^\|.*\|\n\|[-:|]+\|\n\|", sec, re.M), f"{name}: no table\n{sec}"
        assert f"![{name}](img/results/{name}.png)" in sec
        png = out.parent / "img" / "results" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert "**The paper, side by side:**" in sec
        assert re.search(r"^\*\*Verdict: (effect shown|partly|not shown)\.\*\* \S", sec, re.M), sec
        assert f"| [{name}](#{name}) | `{rec['experiment_id']}` | complete (smoke) |" in doc
    # frontier-mini is no part of the default run: its section says how to run it
    assert "frontier-mini" not in index["studies"]
    assert "| [frontier-mini](#frontier-mini) | – | not run (not in the default run) |" in doc
    assert "`divsweep reproduce --studies frontier-mini`" in _section(doc, "frontier-mini")


def _copy(run: SmokeRun, tmp_path: Path) -> Path:
    """The smoke run's document folder copied, so that no test changes another's input."""
    shutil.copytree(run.out.parent, tmp_path / "docs")
    return tmp_path / "docs" / run.out.name


def test_render_only_redraws_the_same_document_from_the_store(
    service: str, smoke_run: SmokeRun, tmp_path: Path
) -> None:
    # Only the index travels: the document and figures must be written anew from the store.
    out = tmp_path / "fresh" / "RESULTS.md"
    out.parent.mkdir()
    shutil.copy(smoke_run.out.parent / "results.json", out.parent / "results.json")
    code, output, _ = _reproduce(service, out, "--render-only")
    assert code == 0, output
    assert out.read_text() == smoke_run.doc
    for name in (s.name for s in default_studies()):
        if name == "finetune-mini" and FINETUNE_PROBLEM:
            continue
        assert (out.parent / "img" / "results" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_check_says_a_smoke_document_is_not_current(smoke_run: SmokeRun) -> None:
    result = CliRunner().invoke(app, ["reproduce", "--check", "--out", str(smoke_run.out)])
    assert result.exit_code == 1, result.output
    assert "stale: fig2a-mini: ran with smoke settings" in result.output
    assert "not current for this checkout" in result.output


def test_rerunning_one_study_keeps_the_other_sections(
    service: str, smoke_run: SmokeRun, tmp_path: Path
) -> None:
    out = _copy(smoke_run, tmp_path)
    before = json.loads((out.parent / "results.json").read_text())["studies"]
    code, output, _ = _reproduce(service, out, "--smoke", "--studies", "noops-mini")
    assert code == 0, output
    doc = out.read_text()
    after = json.loads((out.parent / "results.json").read_text())["studies"]
    assert after["noops-mini"]["experiment_id"] != before["noops-mini"]["experiment_id"]
    sec = _section(doc, "noops-mini")
    assert f"Experiment `{after['noops-mini']['experiment_id']}`" in sec
    # Identical trials are adopted from the store, not trained again.
    n = re.search(r"; (\d+) trials \((\d+) reused from earlier experiments\)", sec)
    assert n is not None and n.group(1) == n.group(2) != "0", sec
    for name in STUDIES:
        if name != "noops-mini":
            assert _section(doc, name) == _section(smoke_run.doc, name), name


def test_frontier_smoke_runs_when_named(service: str, smoke_run: SmokeRun, tmp_path: Path) -> None:
    """`--studies frontier-mini`: one threshold search per budget in one experiment (the real
    trainer, smoke settings), its section with the phase-boundary table, the log-log figure
    and the verdict; the other sections stay as they were."""
    out = _copy(smoke_run, tmp_path)
    code, output, wall = _reproduce(service, out, "--smoke", "--studies", "frontier-mini")
    assert code == 0, output
    print(f"smoke frontier-mini: {wall:.1f} s")
    doc = out.read_text()
    rec = json.loads((out.parent / "results.json").read_text())["studies"]["frontier-mini"]
    assert rec["status"] == "complete" and rec["smoke"], rec
    assert rec["spec"]["search"]["over"]["field"] == "data.n_examples"
    sec = _section(doc, "frontier-mini")
    assert "**The phase boundary**" in sec and "| training examples N | I* (crossing" in sec
    for budget in rec["spec"]["search"]["over"]["values"]:
        assert re.search(rf"^\| {budget:,} \| ", sec, re.M), (budget, sec)
    assert "![frontier-mini-frontier](img/results/frontier-mini-frontier.png)" in sec
    png = out.parent / "img" / "results" / "frontier-mini-frontier.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"^\*\*Verdict: (effect shown|partly|not shown)\.\*\* \S", sec, re.M), sec
    row = f"| [frontier-mini](#frontier-mini) | `{rec['experiment_id']}` | complete (smoke) (not"
    assert row in doc
    for study in default_studies():
        assert _section(doc, study.name) == _section(smoke_run.doc, study.name), study.name


@pytest.mark.skipif(
    FINETUNE_PROBLEM is not None, reason=f"finetune-mini smoke cannot run here: {FINETUNE_PROBLEM}"
)
def test_finetune_smoke_section(smoke_run: SmokeRun) -> None:
    sec = _section(smoke_run.doc, "finetune-mini")
    assert "![finetune-mini](img/results/finetune-mini.png)" in sec
    assert re.search(r"^\*\*Verdict: (effect shown|partly|not shown)\.\*\*", sec, re.M)


def test_seed_offset_runs_other_seeds_and_says_so(
    service: str, smoke_run: SmokeRun, tmp_path: Path
) -> None:
    """``--seed-offset 3`` judges a preset on seeds its calibration never saw: the submitted
    spec's seeds are shifted (nothing is reused: other seeds are other trials), and both the
    header and the study's section say so."""
    out = tmp_path / "offset" / "RESULTS.md"
    code, output, _ = _reproduce(
        service, out, "--smoke", "--studies", "fig2a-mini", "--seed-offset", "3"
    )
    assert code == 0, output
    rec = json.loads((out.parent / "results.json").read_text())["studies"]["fig2a-mini"]
    smoke_seed = prepare_study(STUDIES["fig2a-mini"], smoke=True)[1].spec.seeds
    assert rec["spec"]["seeds"] == [s + 3 for s in smoke_seed] and rec["seed_offset"] == 3
    doc = out.read_text()
    assert "| seeds | the presets' seeds shifted by +3 (`--seed-offset 3`)" in doc
    sec = _section(doc, "fig2a-mini")
    assert f"seeds {', '.join(str(s + 3) for s in smoke_seed)} (the presets' seeds shifted" in sec
    n = re.search(r"; (\d+) trials \((\d+) reused from earlier experiments\)", sec)
    assert n is not None and n.group(2) == "0", sec
