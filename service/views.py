"""The API's view of an experiment: registry row + trial counts + Ray's state -> `ExperimentOut`.

Every route that shows an experiment (status, list, cancel, the event stream's last event, the
HTML page) builds it here, so one function decides what "pending" counts and when ``waiting``
is set. Example::

    out = experiment_out(exp, svc, settings, state)      # routes call it after svc.refresh
    out.progress.pending, out.waiting                    # trials not yet started, Ray's reason
"""

from __future__ import annotations

from datetime import UTC, datetime

from service.experiments import ExperimentService, objective_of
from service.jobs import JobState
from service.registry import Experiment
from service.schemas import DemandOut, ExperimentOut, Links, Progress, WaitingOut
from service.settings import Settings
from sweeps.specs.lifecycle import TrialState


def experiment_out(
    exp: Experiment,
    svc: ExperimentService,
    settings: Settings,
    state: JobState | None = None,
    with_progress: bool = True,
) -> ExperimentOut:
    """The experiment as the API returns it; ``with_progress=False`` reads the registry only
    (list pages)."""
    progress = waiting = None
    if with_progress:
        progress = _progress(exp, svc)
        waiting = _waiting(svc, exp, progress)
    return ExperimentOut(
        id=exp.id,
        name=exp.name,
        status=exp.status,
        submitter=exp.submitter,
        spec_hash=exp.spec_hash,
        ray_job_id=exp.ray_job_id,
        ray_status=state.value if state else None,
        error=exp.error,
        created_at=exp.created_at,
        updated_at=exp.updated_at,
        progress=progress,
        waiting=waiting,
        external=exp.external,
        links=links_for(exp, settings.public_url, svc.runner.dashboard_url),
    )


def _progress(exp: Experiment, svc: ExperimentService) -> Progress:
    tc = svc.progress(exp)
    counts = {TrialState(k): v for k, v in tc.counts.items()}
    started = sum(v for k, v in counts.items() if k != TrialState.PENDING)
    # Trials not yet in the store are pending too; none are once the experiment ended.
    waiting = counts.get(TrialState.PENDING, 0)
    pending = 0 if exp.is_terminal else max(waiting, exp.n_trials - started)
    metric, _ = objective_of(exp.spec_json)
    return Progress(
        n_trials=exp.n_trials,
        pending=pending,
        running=counts.get(TrialState.RUNNING, 0),
        complete=counts.get(TrialState.COMPLETE, 0),
        failed=counts.get(TrialState.FAILED, 0),
        pruned=counts.get(TrialState.PRUNED, 0),
        cancelled=counts.get(TrialState.CANCELLED, 0),
        results=tc.results,
        metric=metric,
        best=tc.best,
        best_trial=tc.best_trial,
    )


def _waiting(svc: ExperimentService, exp: Experiment, progress: Progress) -> WaitingOut | None:
    w = svc.waiting(exp, running=progress.running, pending=progress.pending)
    if w is None:
        return None
    return WaitingOut(
        since=datetime.fromtimestamp(w.since, UTC),
        seconds=round(w.seconds, 1),
        request=w.request,
        infeasible=w.infeasible,
        demands=[DemandOut(**d) for d in w.demands],
        detail=w.detail,
    )


def links_for(exp: Experiment, public_url: str | None, dashboard_url: str | None) -> Links:
    """URLs the API hands out: relative to the service root unless ``public_url`` is set."""
    base = (public_url or "").rstrip("/")
    root = f"{base}/v1/experiments/{exp.id}"
    dash = None
    if dashboard_url:
        job = exp.ray_job_id or ""
        dash = f"{dashboard_url.rstrip('/')}/#/jobs/{job}" if job else dashboard_url
    return Links(
        status=root,
        results=f"{root}/results",
        events=f"{root}/events",
        summary=f"{root}/summary",
        plot=f"{root}/plot.png",
        page=f"{base}/experiments/{exp.id}",
        dashboard=dash,
    )
