"""``divsweep reproduce``: every study of the paper through the service, then docs/RESULTS.md.

For each selected study of `sweeps.reporting.studies.STUDIES`, one after another (so each study's
wall time is its own): resolve its preset (plus the smoke overrides with ``--smoke``) here, exactly
as the service will, skip it with a reason if it cannot run on this machine (a fine-tune whose
checkpoint is missing), submit it over REST, follow its progress until it ends, and record in
the index (``docs/results.json``) which experiment answered it. Then
`sweeps.reporting.results_doc.render` rebuilds the whole document from the index and the stored
results, so a run of some studies
keeps the other studies' sections. Example::

    client = Client("http://127.0.0.1:8000", token="...")
    code = reproduce(client, select("fig2a-mini,noops-mini"), smoke=True,
                     out=Path("/tmp/RESULTS.md"), progress=print)
    # /tmp/RESULTS.md, /tmp/results.json, /tmp/img/results/{fig2a-mini,noops-mini}.png

No printing here: progress lines go to the ``progress`` callback (the CLI prints them).
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pyarrow as pa

from service.client import DivsweepClient, ServiceError
from service.errors import ServiceError as SpecRefused  # the service's own refusal, raised here
from service.presets import find
from service.specs import Quotas, prepare_preset
from sweeps.codeversion import code_version
from sweeps.errors import SweepError
from sweeps.reporting.results_doc import (
    SKIPPED,
    ResultsIndex,
    ResultsSource,
    RunInfo,
    StudyRecord,
    index_path,
    render,
)
from sweeps.reporting.studies import STUDIES, Study, default_studies, smoke_overrides
from sweeps.specs.lifecycle import TERMINAL_STATUSES

log = logging.getLogger(__name__)

#: How long a submission rides out an unreachable service or Ray before giving up.
SUBMIT_RETRY_S = 60.0
#: How long waiting for a study rides out a service that does not answer.
WAIT_GIVE_UP_S = 600.0
Progress = Callable[[str], None]


class ReproduceError(RuntimeError):
    """The service refused or lost a study's experiment (the message says which and why)."""


class Client:
    """What `reproduce` needs from the service (over `service.client.DivsweepClient`); also a
    `ResultsSource` for rendering."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 120.0) -> None:
        self.url = url
        self.api = DivsweepClient(url, token or "", timeout_s=timeout_s)

    def submit(self, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Submit a preset. A dropped connection or a 503 (Ray briefly unreachable, e.g. a head
        still starting) is retried for up to `SUBMIT_RETRY_S` under one Idempotency-Key, so a
        retry never starts the study twice."""
        try:
            out = self.api.submit(preset=preset, overrides=overrides, retry_s=SUBMIT_RETRY_S)
        except ServiceError as e:
            raise ReproduceError(f"submitting {preset}: {e}") from None
        return out.model_dump(mode="json")

    def experiment(self, exp_id: str) -> dict[str, Any] | None:
        """``GET /v1/experiments/{id}`` (None: the service does not know it)."""
        try:
            return self.api.status(exp_id).model_dump(mode="json")
        except ServiceError as e:
            if e.status_code == 404:
                return None
            raise ReproduceError(f"status of {exp_id}: {e}") from None

    def status(self, experiment_id: str) -> str | None:
        exp = self.experiment(experiment_id)
        return None if exp is None else str(exp["status"])

    def results_table(self, experiment_id: str) -> pa.Table:
        try:
            return self.api.results(experiment_id)
        except ServiceError as e:
            raise ReproduceError(f"results of {experiment_id}: {e}") from None


# ---------------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------------


def git_commit(root: Path | None = None) -> str:
    """``4bee72c`` or ``4bee72c-dirty`` (uncommitted changes), ``unknown`` outside git."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def machine_info() -> dict[str, Any]:
    """CPUs (usable by this process), memory, torch's thread count, OS and Python."""
    import torch

    mem_gib: float | str = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": nproc,
        "memory_gib": mem_gib,
        "torch_threads": torch.get_num_threads(),
        "platform": f"{platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}",
    }


# ---------------------------------------------------------------------------------------------
# one study
# ---------------------------------------------------------------------------------------------


def prepare_study(study: Study, smoke: bool, seed_offset: int = 0) -> tuple[dict[str, Any], Any]:
    """The overrides to submit and the spec the service will run from them (validated here
    the way the service validates a preset submission). ``seed_offset`` shifts each of the
    preset's seeds (after the smoke overrides): 3 turns seeds 0, 1, 2 into 3, 4, 5."""
    preset = find(study.preset)
    quotas = Quotas(10**9, 10**12)
    overrides = smoke_overrides(study, preset) if smoke and preset is not None else {}
    prepared = prepare_preset(preset, study.preset, overrides, quotas)
    if seed_offset:
        overrides = overrides | {"seeds": [s + seed_offset for s in prepared.spec.seeds]}
        prepared = prepare_preset(preset, study.preset, overrides, quotas)
    return overrides, prepared


def runnable_problem(spec: Any) -> str | None:
    """Why ``spec`` cannot run on this machine (e.g. a missing checkpoint), or None."""
    # Ray comes with the driver module: only a run on this machine pays for it, not --check.
    from sweeps.running.driver import check_runnable

    try:
        check_runnable(spec)
    except SweepError as e:
        return str(e)
    return None


def run_study(
    client: Client,
    study: Study,
    smoke: bool,
    progress: Progress,
    index: ResultsIndex,
    save: Callable[[], None],
    commit: str,
    local_checks: bool = True,
    poll_s: float = 1.0,
    seed_offset: int = 0,
) -> StudyRecord:
    """Submit one study, wait for it to end, and record it in ``index`` (saved as it goes)."""
    try:
        overrides, prepared = prepare_study(study, smoke, seed_offset)
    except SpecRefused as e:
        rec = StudyRecord(
            study.name,
            SKIPPED,
            smoke=smoke,
            commit=commit,
            error=f"its spec does not validate here: {e}",
        )
        index.studies[study.name] = rec
        save()
        return rec
    problem = runnable_problem(prepared.spec) if local_checks else None
    if problem:
        rec = StudyRecord(
            study.name,
            SKIPPED,
            smoke=smoke,
            commit=commit,
            error=f"it cannot run on this machine: {problem}",
        )
        index.studies[study.name] = rec
        save()
        progress(f"{study.name}: skipped ({problem})")
        return rec
    t0, submitted = time.monotonic(), time.time()
    answer = client.submit(study.preset, overrides)
    exp_id = answer["id"]
    spec = prepared.spec.model_dump(mode="json")
    rec = StudyRecord(
        study.name,
        answer["status"],
        exp_id,
        smoke,
        spec,
        submitted,
        commit=commit,
        seed_offset=seed_offset,
        code_version=code_version(),
    )
    index.studies[study.name] = rec
    save()
    progress(f"{study.name}: experiment {exp_id} submitted ({prepared.n_trials} trials at most)")
    exp = _wait(client, exp_id, study.name, progress, t0, poll_s)
    if exp["spec_hash"] != prepared.spec_hash:
        # The service's preset files differ from this checkout's: the index would lie.
        log.warning(
            "%s: the service ran spec %s, this checkout resolves %s",
            study.name,
            exp["spec_hash"][:12],
            prepared.spec_hash[:12],
        )
        rec.error = (
            "the service's preset differs from this checkout's; the spec recorded "
            "here may not be the one that ran"
        )
    rec.status, rec.wall_s, rec.finished_at = exp["status"], time.monotonic() - t0, time.time()
    rec.error = exp.get("error") or rec.error
    save()
    progress(f"{study.name}: {rec.status} in {rec.wall_s:.1f} s")
    return rec


def _wait(
    client: Client, exp_id: str, name: str, progress: Progress, t0: float, poll_s: float
) -> dict[str, Any]:
    last = ""
    down_since: float | None = None  # when the service stopped answering, if it has
    while True:
        try:
            exp = client.experiment(exp_id)
            down_since = None
        except (httpx.TransportError, ReproduceError) as e:
            # A busy or restarting service: the study keeps running in Ray; ask again.
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since > WAIT_GIVE_UP_S:
                raise ReproduceError(
                    f"{name}: no answer about {exp_id} for "
                    f"{WAIT_GIVE_UP_S:.0f} s ({e}); it may still be running: "
                    "rerun with --render-only later"
                ) from e
            progress(f"{name}: the service did not answer ({e}); asking again")
            time.sleep(max(poll_s, 2.0))
            continue
        if exp is None:
            raise ReproduceError(f"{name}: the service lost experiment {exp_id}")
        p = exp.get("progress") or {}
        done = sum(p.get(k, 0) for k in ("complete", "failed", "pruned", "cancelled"))
        line = (
            f"{name}: {exp['status']}, {done} trials done, {p.get('running', 0)} running, "
            f"best {p.get('metric', '')} {_best(p.get('best'))}"
        )
        if line != last:
            progress(f"{line} ({time.monotonic() - t0:.0f} s)")
            last = line
        if exp["status"] in TERMINAL_STATUSES:
            return exp
        time.sleep(poll_s)


def _best(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else "-"


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def reproduce(
    client: Client,
    studies: Sequence[Study],
    smoke: bool,
    out: Path,
    progress: Progress,
    render_only: bool = False,
    source: ResultsSource | None = None,
    poll_s: float = 1.0,
    local_checks: bool | None = None,
    seed_offset: int = 0,
) -> int:
    """Run ``studies`` (unless ``render_only``) and render ``out``; the exit code: 1 if a study
    of this run failed or was cancelled, else 0 (a skipped study is not a failure).

    ``seed_offset`` shifts every preset's seeds (`prepare_study`), to judge the presets on seeds
    that their calibration never saw; RESULTS.md says so in its header and in each section.

    ``source`` reads the stored results for rendering (default: ``client``). ``local_checks``
    (default: when the service is on this machine) skips studies that cannot run here.
    """
    idx_path = index_path(out)
    index = ResultsIndex.load(idx_path)
    source = source or client
    if render_only:
        _render(index, source, out)
        progress(f"wrote {out} from {idx_path}")
        return 0
    real = [
        s.name
        for s in studies
        if (r := index.studies.get(s.name)) is not None and not r.smoke and r.status != SKIPPED
    ]
    if smoke and real:
        raise ReproduceError(
            f"{idx_path} holds real results of {', '.join(real)}; a smoke run "
            "would replace them: write it elsewhere (--out)"
        )
    if local_checks is None:
        local_checks = urlparse(client.url).hostname in ("127.0.0.1", "localhost", "::1")
    commit = git_commit()
    t0 = time.monotonic()
    index.last_run = RunInfo(
        time.time(),
        commit,
        machine_info(),
        [s.name for s in studies],
        smoke,
        seed_offset=seed_offset,
        code_version=code_version(),
    )

    def save() -> None:
        index.save(idx_path)

    failed = []
    for i, study in enumerate(studies, 1):
        progress(f"[{i}/{len(studies)}] {study.name}")
        rec = run_study(
            client, study, smoke, progress, index, save, commit, local_checks, poll_s, seed_offset
        )
        if rec.status in ("failed", "cancelled"):
            failed.append(study.name)
        if not smoke and i < len(studies):
            _render(index, source, out)  # minutes apart: keep the document current
    index.last_run.finished_at = time.time()
    index.last_run.wall_s = time.monotonic() - t0
    save()
    _render(index, source, out)
    progress(
        f"wrote {out} ({index.last_run.wall_s:.1f} s)"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# is the document current?
# ---------------------------------------------------------------------------------------------


def check(out: Path, studies: Sequence[Study] | None = None) -> list[str]:
    """Why ``out`` (docs/RESULTS.md, read through its index) is not current for this checkout:
    one line per study whose section comes from other code or another spec; empty when every
    section does (``studies``: those of the default run unless named, `default_studies`). A
    section is current when its experiment completed with real (not smoke) settings, at this
    checkout's `code_version` of data/ and trainer/ (what turns a spec into numbers), from
    exactly the spec its preset resolves to now (seed offset included). Example::

        check(Path("docs/RESULTS.md"))
        # ['fig2a-mini: ran at code version 1c2d3e4f5a6b, this checkout is 9f8e7d6c5b4a']
    """
    index = ResultsIndex.load(index_path(out))
    return [f"{name}: {why}" for name, why in stale_sections(index, studies).items()]


def stale_sections(index: ResultsIndex, studies: Sequence[Study] | None = None) -> dict[str, str]:
    """``{study: why its section is not current}`` for ``index`` and this checkout (`check`)."""
    code = code_version()
    stale = {}
    for study in studies if studies is not None else default_studies():
        why = _stale(study, index.studies.get(study.name), code)
        if why:
            stale[study.name] = why
    return stale


def _render(index: ResultsIndex, source: ResultsSource, out: Path) -> None:
    """`render`, each real section from other code or another spec marked as not current."""
    stale = {
        name: why
        # every study with a section, those run only when named (frontier-mini) included
        for name, why in stale_sections(index, list(STUDIES.values())).items()
        if (rec := index.studies.get(name)) is not None and not rec.smoke
    }
    render(index, source, out, stale)


UNKNOWN = "unknown (an older index)"


def _stale(study: Study, rec: StudyRecord | None, code: str) -> str | None:
    if rec is None:
        return "not run"
    if rec.smoke:
        return "ran with smoke settings"
    if rec.status != "complete":
        return f"its experiment is {rec.status}"
    if rec.code_version != code:
        return (
            f"ran at code version {rec.code_version[:12] if rec.code_version else UNKNOWN}, "
            f"this checkout is {code[:12]}"
        )
    try:
        _, prepared = prepare_study(study, smoke=False, seed_offset=rec.seed_offset)
    except Exception as e:  # a preset that no longer validates is stale too; say why
        return f"its preset does not validate here ({e})"
    if _measured(prepared.spec.model_dump(mode="json")) != _measured(rec.spec or {}):
        return "its preset changed since it ran (the recorded spec differs)"
    return None


#: Spec fields that say where and how a study runs, not what it measures (trial keys leave
#: them out too): a change to them leaves a section current.
_NOT_MEASURED = ("resources", "max_concurrent", "retries", "store", "tracking", "data_cache_dir")


def _measured(spec: Any) -> Any:
    """``spec`` without `_NOT_MEASURED` and without unset (None) fields at any depth, so that a
    field added later with an unset default does not make every older section stale."""
    if isinstance(spec, dict):
        return {
            k: _measured(v)
            for k, v in spec.items()
            if v is not None and not (k in _NOT_MEASURED and "data" in spec)
        }
    if isinstance(spec, list):
        return [_measured(v) for v in spec]
    return spec
