"""The experiment lifecycle: submit, refresh from Ray, cancel, reconcile on start-up.

Routes stay thin by calling this one object, which ties the registry (what exists), the job
runner (Ray) and the results view (the sweeps store) together. Status follows the Ray job::

    Ray job    PENDING   RUNNING   SUCCEEDED          FAILED   STOPPED     (unknown to Ray)
    registry   pending   running   complete|failed*   failed   cancelled   resubmitted**

    * the sweep driver records ``failed`` in the store when the sweep itself failed.
    ** a job Ray does not know was lost with its cluster (a dead head, a new cluster): if the
       store says the sweep had ended, that is its status; otherwise the experiment is submitted
       again under the same id, and the sweep driver restores Tune's saved state from the store
       (`sweeps.run`), so complete trials are not trained again and no row is stored twice.
       At most `MAX_RESUBMITS` times per service process; then ``failed`` ("job lost").

Example::

    svc = ExperimentService(registry, runner, results, max_concurrent=4)
    exp, created = svc.submit(prepared, submitter="alice", idempotency_key="k1")
    svc.refresh(exp.id).status      # 'running'
    svc.cancel(exp.id).status       # 'cancelled'
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from service.capacity import NodeTypes, Placement, check_feasible, check_spec
from service.errors import BackendError, ConflictError, NotFoundError
from service.jobs import JobRunner, JobState, job_id_for
from service.registry import Experiment, IdempotencyClash, Registry
from service.results import ResultsView, TrialCounts
from service.specs import PreparedSpec
from service.waiting import Stalls, describe_wait, own_demands, parse_cluster_status
from sweeps.specs.lifecycle import TERMINAL_STATUSES, ExperimentStatus
from sweeps.specs.spec import ExperimentSpec
from sweeps.store.base import ExperimentRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """An experiment that has not moved for a while, and Ray's reason
    (`ExperimentService.waiting`)."""

    since: float  # epoch seconds
    seconds: float
    request: dict[str, float]  # one trial's bundle
    infeasible: bool  # Ray holds a demand of this shape that no node (or node type) can hold
    demands: list[dict[str, Any]]
    detail: str


#: How often one service process resubmits an experiment whose Ray job was lost.
MAX_RESUBMITS = 3
#: Seconds before asking Ray for its nodes a second time (a dashboard restarting, a timeout).
NODE_RETRY_S = 0.5

_FROM_RAY = {
    JobState.PENDING: ExperimentStatus.PENDING,
    JobState.RUNNING: ExperimentStatus.RUNNING,
    JobState.SUCCEEDED: ExperimentStatus.COMPLETE,
    JobState.FAILED: ExperimentStatus.FAILED,
    JobState.STOPPED: ExperimentStatus.CANCELLED,
    JobState.MISSING: ExperimentStatus.FAILED,
}


class ExperimentService:
    """Registry + Ray + store, behind the few verbs the routes need."""

    def __init__(
        self,
        registry: Registry,
        runner: JobRunner,
        results: ResultsView,
        max_concurrent: int,
        cancel_wait_s: float = 15.0,
        node_types: NodeTypes | None = None,
        resubmits: dict[str, int] | None = None,
        stalls: Stalls | None = None,
        wait_s: float = 300.0,
    ) -> None:
        self.registry = registry
        self.runner = runner
        self.results = results
        self.max_concurrent = max_concurrent
        self.cancel_wait_s = cancel_wait_s
        #: node types an autoscaling cluster may add (`service.capacity.NodeTypes`)
        self.node_types = node_types if node_types is not None else NodeTypes((), None)
        #: resubmissions of lost jobs by experiment, shared by the app's requests (see `_lost`)
        self._resubmits = resubmits if resubmits is not None else {}
        #: when each experiment last stopped having a running trial, shared like `_resubmits`
        self._stalls = stalls if stalls is not None else Stalls()
        self.wait_s = wait_s

    def check_feasible(self, prepared: PreparedSpec) -> Placement:
        """Refuse (422/413) a spec no node of the cluster can ever run (`service.capacity`);
        say where its trials can run (a live node, or a node type the autoscaler may add).

        The checks that need no node always run. When Ray does not list its nodes, the listing
        is tried once more; if it still fails, the node checks are skipped (the placement says
        so, and the 202 carries it): the service never refuses on a guess.
        """
        check_spec(prepared.spec)
        nodes = self.runner.nodes()
        if nodes is None:
            time.sleep(NODE_RETRY_S)
            nodes = self.runner.nodes()
        if nodes is None:
            log.warning(
                "cannot check %s against the cluster's nodes: Ray did not list them (twice)",
                prepared.name,
            )
            return Placement(
                False,
                (),
                "not checked against the cluster's nodes: Ray did not list them (tried twice); "
                "if no node can run a trial, the experiment waits (see its status)",
            )
        return check_feasible(prepared.spec, prepared.sizes, nodes, self.node_types.get())

    def submit(
        self, prepared: PreparedSpec, submitter: str, idempotency_key: str | None
    ) -> tuple[Experiment, bool]:
        """Record and submit; returns ``(experiment, created)``.

        A repeated Idempotency-Key with the same spec returns the first experiment
        (``created=False``); with another spec it is a 409.
        """
        if idempotency_key is not None:
            earlier = self.registry.find_idempotent(submitter, idempotency_key)
            if earlier is not None:
                return self._same_spec(earlier, prepared), False
        # Count and create under one lock, or concurrent submissions all pass the quota check.
        with self.registry.admission_lock:
            active = self.registry.count_active()
            if active >= self.max_concurrent:
                raise ConflictError(
                    f"{active} experiments are pending or running; the quota is "
                    f"max_concurrent={self.max_concurrent}. Wait for one to finish or cancel one."
                )
            try:
                exp = self.registry.create(
                    name=prepared.name,
                    spec_json=prepared.spec_json,
                    spec_hash=prepared.spec_hash,
                    n_trials=prepared.n_trials,
                    submitter=submitter,
                    idempotency_key=idempotency_key,
                )
            except IdempotencyClash as clash:
                return self._same_spec(clash.existing, prepared), False
        try:
            job_id = self.runner.submit(exp.id, prepared.spec_json)
        except BackendError as e:
            self.registry.update(exp.id, status=ExperimentStatus.FAILED, error=e.message)
            raise
        return (
            self.registry.update(exp.id, status=ExperimentStatus.PENDING, ray_job_id=job_id),
            True,
        )

    @staticmethod
    def _same_spec(earlier: Experiment, prepared: PreparedSpec) -> Experiment:
        if earlier.spec_hash != prepared.spec_hash:
            raise ConflictError(
                f"Idempotency-Key was already used for experiment {earlier.id} with another "
                "spec; use a new key for a new experiment"
            )
        return earlier

    def get(self, exp_id: str) -> Experiment:
        """The experiment the registry knows, or else one the results store holds that was
        started outside the service (``ray job submit ... python -m sweeps.run ... --store``):
        read-only, its status the store's. `NotFoundError` when neither has it."""
        try:
            return self.registry.get(exp_id)
        except NotFoundError:
            rec = self.results.record(exp_id)
            if rec is None:
                raise
            return external_experiment(rec)

    def query(
        self, status: ExperimentStatus | None, name: str | None, limit: int, offset: int
    ) -> tuple[list[Experiment], int]:
        """Newest first, the registry's experiments and those started outside the service
        (filtered alike); returns ``(page, total)``."""
        outside = [
            e
            for e in self.external()
            if (status is None or e.status == status) and (not name or name in e.name)
        ]
        if not outside:
            return self.registry.query(status=status, name=name, limit=limit, offset=offset)
        rows, total = self.registry.query(status=status, name=name, limit=offset + limit)
        merged = sorted([*rows, *outside], key=lambda e: e.created_at, reverse=True)
        return merged[offset : offset + limit], total + len(outside)

    def external(self) -> list[Experiment]:
        """The results store's experiments the registry does not know."""
        try:
            recs = self.results.records()
        except Exception as e:  # the list still shows the registry's experiments
            log.warning("cannot list the results store's experiments: %s", e)
            return []
        if not recs:
            return []
        known = self.registry.known([r.experiment_id for r in recs])
        return [external_experiment(r) for r in recs if r.experiment_id not in known]

    def refresh(self, exp_id: str, startup: bool = False) -> tuple[Experiment, JobState | None]:
        """The experiment with its status brought up to date from Ray (and the Ray state).

        If Ray cannot be reached the stored status is returned unchanged with state None. At
        ``startup`` no other request can be mid-submission, so a job Ray never saw is lost.
        An experiment started outside the service has the store's status.
        """
        exp = self.get(exp_id)
        if exp.is_terminal or exp.external:
            return exp, None
        job_id = exp.ray_job_id or job_id_for(exp.id)
        try:
            state = self.runner.status(job_id)
        except BackendError as e:
            log.warning("cannot refresh %s: %s", exp_id, e.message)
            return exp, None
        in_flight = (
            exp.status == ExperimentStatus.SUBMITTED and exp.ray_job_id is None and not startup
        )
        if state == JobState.MISSING and in_flight:
            return exp, state  # still being submitted by another request
        if state == JobState.MISSING:
            return self._lost(exp)
        status = _FROM_RAY[state]
        error = None
        if state in (JobState.SUCCEEDED, JobState.FAILED):
            store_status = self._store_status(exp)
            if state == JobState.SUCCEEDED and store_status == ExperimentStatus.FAILED:
                status = ExperimentStatus.FAILED
                error = "the sweep recorded a failure; see the store"
            elif state == JobState.FAILED:
                error = "the Ray job failed; see its logs in the Ray dashboard"
        if status != exp.status or error:
            exp = self.registry.update(exp_id, status=status, error=error)
        return exp, state

    def _lost(self, exp: Experiment) -> tuple[Experiment, JobState | None]:
        """Ray does not know the experiment's job: it ended with a cluster that is gone.

        The store, which outlives clusters, decides: a sweep it records as ended keeps that
        status; one it does not is submitted again under the same id (see the module
        docstring), unless it was resubmitted `MAX_RESUBMITS` times already.
        """
        store_status = self._store_status(exp)
        if store_status in TERMINAL_STATUSES:
            error = (
                None
                if store_status == ExperimentStatus.COMPLETE
                else "the sweep recorded it; see the store"
            )
            return self.registry.update(exp.id, status=store_status, error=error), None
        n = self._resubmits.get(exp.id, 0)
        if n >= MAX_RESUBMITS:
            msg = (
                f"the Ray cluster lost this job {n + 1} times (its head died or was replaced); "
                "not resubmitted again"
            )
            failed = self.registry.update(exp.id, status=ExperimentStatus.FAILED, error=msg)
            return failed, JobState.MISSING
        self._resubmits[exp.id] = n + 1
        try:
            job_id = self.runner.submit(exp.id, exp.spec_json)
        except BackendError as e:
            log.warning("cannot resubmit %s: %s", exp.id, e.message)
            return exp, None  # Ray is down right now; ask again on the next refresh
        log.warning(
            "experiment %s: Ray lost its job; resubmitted as %s (%d/%d), restoring from the store",
            exp.id,
            job_id,
            n + 1,
            MAX_RESUBMITS,
        )
        exp = self.registry.update(
            exp.id,
            status=ExperimentStatus.PENDING,
            ray_job_id=job_id,
            error=f"resubmitted after the Ray cluster lost its job "
            f"({n + 1}/{MAX_RESUBMITS}); complete trials are kept",
        )
        return exp, JobState.PENDING

    def _store_status(self, exp: Experiment) -> ExperimentStatus | None:
        try:
            return self.results.progress(exp.id, *objective_of(exp.spec_json)).store_status
        except Exception as e:  # the store is advisory here; Ray's answer stands
            log.warning("store status of %s unavailable: %s", exp.id, e)
            return None

    def cancel(self, exp_id: str) -> Experiment:
        """Stop the Ray job, then mark unfinished trials cancelled; stored rows are kept."""
        exp, _ = self.refresh(exp_id)
        if exp.external:
            raise ConflictError(
                f"experiment {exp_id} was started outside the service and is read-only here; "
                "stop its Ray job with `ray job stop <submission id>`"
            )
        if exp.is_terminal:
            raise ConflictError(f"experiment {exp_id} is already {exp.status}; nothing to cancel")
        job_id = exp.ray_job_id or job_id_for(exp.id)
        self.runner.stop(job_id)
        # Wait for the driver to exit so that it cannot write 'running' after we write
        # 'cancelled' (the store keeps 'cancelled' final anyway; this keeps the log tidy).
        deadline = time.monotonic() + self.cancel_wait_s
        while time.monotonic() < deadline:
            try:
                if self.runner.status(job_id).is_terminal:
                    break
            except BackendError:
                break
            time.sleep(0.2)
        self.results.cancel(exp_id)
        return self.registry.update(exp_id, status=ExperimentStatus.CANCELLED)

    def waiting(
        self, exp: Experiment, running: int, pending: int, now: float | None = None
    ) -> Waiting | None:
        """Why the experiment has not moved for `wait_s` seconds, or None while it moves.

        It waits while Ray has not started its job (``pending``) or while no trial runs and
        some are left. The report is read from Ray (`service.waiting`) only past `wait_s`, so
        a status request of a moving experiment never calls Ray's cluster status.
        """
        if exp.external:
            return None  # no Ray job of the service's to explain
        now = time.time() if now is None else now
        stalled = not exp.is_terminal and (
            exp.status == ExperimentStatus.PENDING
            or (exp.status == ExperimentStatus.RUNNING and running == 0 and pending > 0)
        )
        since = self._stalls.observe(exp.id, stalled, now)
        if since is None:
            return None
        if exp.status == ExperimentStatus.PENDING:  # the registry knows since when, across restarts
            since = min(since, exp.updated_at.timestamp())
        if now - since < self.wait_s:
            return None
        res = spec_of(exp.spec_json).resources
        auto = res.gpu == "auto"
        request = {"CPU": float(res.cpus)}
        if auto or res.gpu:
            # `gpu: auto` asks for a share the driver sizes at run time (`own_demands`)
            request["GPU"] = 1.0 if auto else float(res.gpu)
        raw = self.runner.cluster_status()
        types = self.node_types.get()
        view = None if raw is None else parse_cluster_status(raw, [t.resources for t in types])
        ours = own_demands(view, request, auto) if view else []
        return Waiting(
            since=since,
            seconds=now - since,
            request=request,
            infeasible=any(d.infeasible for d in ours),
            demands=[asdict(d) for d in (view.demands if view else ())],
            detail=describe_wait(request, now - since, view, auto, types),
        )

    def progress(self, exp: Experiment) -> TrialCounts:
        metric, mode = objective_of(exp.spec_json)
        return self.results.progress(exp.id, metric, mode)

    def reconcile(self) -> int:
        """Refresh every non-terminal experiment from Ray; returns how many changed."""
        changed = 0
        for exp in self.registry.active():
            try:
                new, _ = self.refresh(exp.id, startup=True)
            except Exception as e:  # one broken row must not stop start-up
                log.warning("reconcile of %s failed: %s", exp.id, e)
                continue
            if new.status != exp.status:
                log.info("reconciled %s: %s -> %s", exp.id, exp.status, new.status)
                changed += 1
        return changed


#: The submitter shown for experiments started outside the service.
OUTSIDE = "(outside the service)"


def external_experiment(rec: ExperimentRecord) -> Experiment:
    """A results-store record as a read-only `Experiment` (``external=True``)."""
    try:
        n_trials = spec_of(rec.spec_json).n_trials
    except ValueError:  # a spec of another code version: show it, count no trials
        n_trials = 0
    return Experiment(
        id=rec.experiment_id,
        name=rec.name,
        spec_json=rec.spec_json,
        spec_hash=rec.spec_hash,
        n_trials=n_trials,
        ray_job_id=None,
        submitter=OUTSIDE,
        idempotency_key=None,
        status=ExperimentStatus(rec.status),
        error=rec.error,
        created_at=datetime.fromtimestamp(rec.created_at, UTC),
        updated_at=datetime.fromtimestamp(rec.updated_at or rec.created_at, UTC),
        external=True,
    )


@functools.lru_cache(maxsize=1024)
def spec_of(spec_json: str) -> ExperimentSpec:
    """A stored spec, parsed once per spec text: every status request reads its objective, and
    a stalled one its resources. The spec is frozen, so one instance serves every caller."""
    return ExperimentSpec.model_validate_json(spec_json)


def objective_of(spec_json: str) -> tuple[str, str]:
    """The stored spec's `ExperimentSpec.objective`."""
    return spec_of(spec_json).objective
