"""`run_experiment`: run one `ExperimentSpec` on Ray Tune, streaming into the results store.

Steps, top to bottom in `run_experiment`:

1. open the store, create (or re-attach to) the experiment record; an experiment that is already
   ``complete`` or ``cancelled`` is left alone;
2. run-time checks (a pretrained checkpoint must exist now, not when the preset was loaded; a
   builtin model is built now if this machine has not built it yet);
3. ``ray.init()`` — connects to ``RAY_ADDRESS`` (as under ``ray job submit``) or starts a local
   Ray; an already initialised Ray (tests) is reused;
4. if Tune saved state for this experiment id (its driver died), ``Tuner.restore`` it: finished
   trials stay finished and unfinished ones resume from their last checkpoint;
5. otherwise build a new `Tuner`: trials whose identical twin (same trial key) already has a
   complete result in the store are adopted, not run (`sweeps.running.reuse`); the rest, compatible
   grid trials fused into groups where ``resources.fuse`` allows (`sweeps.running.fusing`), go to
   the trainable wrapped in ``tune.with_resources``, the search (grid, Optuna, threshold), the
   scheduler (FIFO or ASHA), ``FailureConfig(max_failures=retries)``, a persistent
   ``storage_path`` beside the store, `StoreCallback` and `CancelStopper`;
6. ``fit()``, then mark the experiment ``complete`` (or ``failed`` with the error).

Example::

    exp_id = run_experiment(load_preset("smoke"), store_uri="/tmp/results")
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweeps.errors import RunError
from sweeps.running.asha import RecordingASHA
from sweeps.running.callback import KEEP_TUNE_KEYS, CancelStopper, StoreCallback
from sweeps.running.fusing import fuse_groups
from sweeps.running.packing import gpu_share
from sweeps.running.reuse import ReuseIndex, final_metric
from sweeps.running.threshold import ThresholdSearcher
from sweeps.running.trackers import callbacks as tracking_callbacks
from sweeps.running.trainable import FusedTrialFn, TrialFn, fused_result, make_trainable
from sweeps.specs.lifecycle import ExperimentStatus, TrialState
from sweeps.specs.spec import (
    AshaScheduler,
    ExperimentSpec,
    GridSearch,
    OptunaSearch,
    ThresholdSearch,
)
from sweeps.specs.tracking import check_installed
from sweeps.store import (
    ParquetStore,
    ResultsStore,
    TrialRecord,
    default_store_uri,
    join_uri,
    open_store,
)
from trainer.builtin import is_builtin, resolve_init

log = logging.getLogger(__name__)


def new_experiment_id(spec: ExperimentSpec) -> str:
    """``<name>-<UTC time>-<4 hex>``, e.g. ``smoke-20260101T120000-1a2b``."""
    return f"{spec.name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:4]}"


def tune_storage_path(store: ResultsStore, store_uri: str) -> str:
    """Where Tune keeps trial dirs, checkpoints and TensorBoard logs: beside the store."""
    if isinstance(store, ParquetStore):
        if "://" in store_uri:
            return join_uri(store_uri, "tune")  # before an s3:// URI's query
        return f"{store.root}/tune"
    return str(Path.home() / ".cache" / "divsweep" / "tune")


def check_runnable(spec: ExperimentSpec) -> None:
    """Checks that only make sense on the machine that runs the sweep.

    A builtin model (``train.init: "divsweep:tiny-lm"``) is not a path: it is built here, once,
    before any trial starts (minutes on first use, then cached), so that parallel trials on this
    machine find it ready instead of waiting on one another's build.
    """
    check_installed(spec.tracking)
    init = spec.train.init
    if is_builtin(init):
        resolve_init(init)
    elif init != "scratch" and not Path(init).expanduser().is_dir():
        raise RunError(
            f"train.init: checkpoint directory {init!r} does not exist on this machine; set it to "
            "a local Hugging Face causal-LM checkpoint"
        )


def run_experiment(
    spec: ExperimentSpec,
    experiment_id: str | None = None,
    store_uri: str | None = None,
    *,
    trial_fn: TrialFn | None = None,
    fused_fn: FusedTrialFn | None = None,
    cache_dir: str | None = None,
    verbose: int = 1,
) -> str:
    """Run ``spec`` to the end and return its experiment id (see the module docstring).

    ``trial_fn`` replaces the real trainer (tests use fake trainables) and ``fused_fn`` the real
    fused trainer (`sweeps.running.fusing`; with a fake ``trial_fn`` and no ``fused_fn`` nothing is
    fused); ``cache_dir`` overrides ``spec.data_cache_dir``. Individual trial failures do not
    raise: they are ``failed`` rows.
    """
    uri = store_uri or spec.store or default_store_uri()
    store = open_store(uri)
    exp_id = experiment_id or new_experiment_id(spec)
    rec = store.create_experiment(
        exp_id, name=spec.name, spec_json=spec.spec_json, spec_hash=spec.spec_hash, exist_ok=True
    )
    if rec.status in (ExperimentStatus.CANCELLED, ExperimentStatus.COMPLETE):
        log.info("experiment %s is already %s; nothing to run", exp_id, rec.status)
        return exp_id
    try:
        check_runnable(spec)
        _connect_ray()
        store.set_experiment_status(exp_id, ExperimentStatus.RUNNING)
        fns = _TrialFns(trial_fn, fused_fn, cache_dir)
        tuner = restore_tuner(spec, exp_id, store, uri, fns)
        if tuner is None:
            tuner = build_tuner(spec, exp_id, store, uri, fns, verbose=verbose)
        if tuner is not None:
            tuner.fit()
    except BaseException as e:
        store.set_experiment_status(
            exp_id, ExperimentStatus.FAILED, error=f"{type(e).__name__}: {e}"
        )
        raise
    final = store.set_experiment_status(exp_id, ExperimentStatus.COMPLETE)
    log.info("experiment %s finished: %s, trials %s", exp_id, final.status, store.progress(exp_id))
    return exp_id


def _connect_ray() -> None:
    if ray.is_initialized():
        return
    # With no address, ray.init() uses RAY_ADDRESS when set (ray job submit sets it) and
    # otherwise starts a local Ray on this machine.
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)


@dataclass(frozen=True)
class _TrialFns:
    """What runs the trials: the real trainer (all None) or a test's fakes."""

    trial_fn: TrialFn | None = None
    fused_fn: FusedTrialFn | None = None
    cache_dir: str | None = None

    @property
    def can_fuse(self) -> bool:
        return self.trial_fn is None or self.fused_fn is not None


def trial_groups(spec: ExperimentSpec, plans: list[Any], fns: _TrialFns) -> list[list[Any]]:
    """``plans`` as the groups Tune runs: fused groups (`sweeps.running.fusing`) where the spec and
    the trial functions allow, otherwise one plan per group."""
    return fuse_groups(spec, plans) if fns.can_fuse else [[p] for p in plans]


def _trainable(
    spec: ExperimentSpec, fns: _TrialFns, finished: Mapping[str, Mapping[str, Any]] | None = None
) -> Any:
    """The trainable with the spec's resources (``gpu: auto`` measured, see
    `sweeps.running.packing`; a fused trial's share holds its widest group)."""
    members = 1
    if isinstance(spec.search, GridSearch):
        members = max((len(g) for g in trial_groups(spec, spec.trials(), fns)), default=1)
    share = gpu_share(spec, members)
    return tune.with_resources(
        make_trainable(
            spec,
            fns.trial_fn,
            fns.cache_dir,
            gpu_share=share,
            fused_fn=fns.fused_fn,
            finished=finished,
        ),
        spec.resources.as_tune(gpu=share),
    )


def restore_tuner(
    spec: ExperimentSpec,
    experiment_id: str,
    store: ResultsStore,
    store_uri: str,
    fns: _TrialFns = _TrialFns(),
) -> Any | None:
    """The experiment's saved Tune state as a `Tuner`, or None when Tune saved none.

    A driver that died (killed, node lost) leaves Tune's experiment state under the storage
    path; resubmitting the same experiment id lands here. Complete trials are not run again,
    unfinished and errored ones resume from their last checkpoint.
    """
    path = join_uri(tune_storage_path(store, store_uri), experiment_id)
    if not tune.Tuner.can_restore(path):
        return None
    log.info("experiment %s: restoring Tune's saved state from %s", experiment_id, path)
    return tune.Tuner.restore(
        path,
        trainable=_trainable(spec, fns, finished_results(store, experiment_id)),
        resume_unfinished=True,
        resume_errored=True,
    )


def finished_results(store: ResultsStore, experiment_id: str) -> dict[str, dict[str, Any]]:
    """``{tune trial id: its last Tune result}`` for each Tune trial whose store trials are all
    complete (a fused trial's members are ``<tune id>-m<k>``, `member_trial_id`).

    Tune saves its experiment state every few seconds, so a driver killed just after a trial
    ended leaves state that still calls it running; the store, written at the end, knows better.
    """
    by_tune: dict[str, list[TrialRecord]] = {}
    for t in store.get_trials(experiment_id):
        by_tune.setdefault(t.trial_id.split("-m")[0], []).append(t)
    last: dict[str, dict[str, Any]] = {}
    for m in store.get_metrics(experiment_id):
        prev = last.get(m.trial_id)
        if prev is None or m.metrics.get("training_iteration", 0) >= prev.get(
            "training_iteration", 0
        ):
            last[m.trial_id] = dict(m.metrics)
    out: dict[str, dict[str, Any]] = {}
    for tune_id, recs in by_tune.items():
        if not all(r.state == TrialState.COMPLETE and r.trial_id in last for r in recs):
            continue
        ends = [
            {k: v for k, v in last[r.trial_id].items() if k not in KEEP_TUNE_KEYS}
            for r in sorted(recs, key=lambda r: r.trial_id)
        ]
        out[tune_id] = ends[0] if len(recs) == 1 else fused_result(ends)
    return out


def build_tuner(
    spec: ExperimentSpec,
    experiment_id: str,
    store: ResultsStore,
    store_uri: str,
    fns: _TrialFns = _TrialFns(),
    *,
    verbose: int = 1,
) -> Any | None:
    """The configured `ray.tune.Tuner` for ``spec`` (not yet started).

    None when there is nothing to run: every trial of a grid was adopted from stored results.
    """
    index = ReuseIndex(store, experiment_id) if spec.reuse else None
    search = _search(spec, experiment_id, index, fns)
    if index is not None and (index.adopted or index.kept):
        log.info(
            "experiment %s: %d trial(s) reused from other experiments, %d already complete here",
            experiment_id,
            len(index.adopted),
            len(index.kept),
        )
    if search is None:
        log.info("experiment %s: every trial has a stored result; nothing to run", experiment_id)
        return None
    param_space, search_alg, num_samples = search
    scheduler, was_pruned = _scheduler(spec)
    run_config = tune.RunConfig(
        name=experiment_id,
        storage_path=tune_storage_path(store, store_uri),
        failure_config=tune.FailureConfig(max_failures=spec.retries),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=[
            StoreCallback(store, experiment_id, spec, was_pruned),
            *tracking_callbacks(spec.tracking, spec.name, tune_storage_path(store, store_uri)),
        ],
        stop=CancelStopper(store, experiment_id),
        verbose=verbose,
    )
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=spec.max_concurrent,
        # A new actor per trial means a new Python process importing torch (seconds on a busy
        # CPU); trials share resource shapes, so Tune can hand a finished actor the next trial.
        reuse_actors=True,
    )
    return tune.Tuner(
        _trainable(spec, fns),
        param_space=param_space,
        tune_config=tune_config,
        run_config=run_config,
    )


def _search(
    spec: ExperimentSpec, experiment_id: str, index: ReuseIndex | None, fns: _TrialFns
) -> tuple[dict[str, Any], Any, int] | None:
    """``(param_space, search_alg, num_samples)`` for the spec's search; None: nothing to run.

    With a reuse ``index``, grid trials with a stored result are adopted here and left out of
    the grid; the threshold searcher asks the index before each probe. Optuna trials are not
    reused: its sampled points rarely repeat exactly.
    """
    search = spec.search
    if isinstance(search, GridSearch):
        todo = [p for p in spec.trials() if index is None or index.adopt(experiment_id, p) is None]
        if not todo:
            return None
        groups = trial_groups(spec, todo, fns)
        if all(len(g) == 1 for g in groups):
            return {"params": tune.grid_search([p.params for p in todo])}, None, 1
        members = [[p.params for p in g] for g in groups]
        return {"members": tune.grid_search(members)}, None, 1
    if isinstance(search, OptunaSearch):
        # Tune's Optuna searcher imports optuna (~1 s); only Optuna sweeps pay for it
        from ray.tune.search.optuna import OptunaSearch as TuneOptuna

        space = {path: _domain(d) for path, d in search.space.items()}
        space["seed"] = spec.seeds[0]
        searcher = TuneOptuna(
            metric=search.objective.metric, mode=search.objective.mode, sampler=_sampler(search)
        )
        return {"params": space}, searcher, search.n_trials
    if isinstance(search, ThresholdSearch):
        lookup = None
        if index is not None:

            def lookup(params: dict[str, Any]) -> float | None:
                found = index.adopt(experiment_id, spec.plan(params))
                return final_metric(found, search.metric)

        return {}, ThresholdSearcher(search, spec.replicate_seeds, lookup=lookup), spec.n_trials
    raise AssertionError(f"unhandled search {search!r}")  # the discriminated union is closed


def _domain(d: Any) -> Any:
    if d.kind == "choice":
        return tune.choice(list(d.choices))
    if d.kind == "int":
        hi = int(d.high) + 1  # tune's randint excludes the upper bound
        return tune.lograndint(int(d.low), hi) if d.log else tune.randint(int(d.low), hi)
    if d.kind == "loguniform" or d.log:
        return tune.loguniform(d.low, d.high)
    return tune.uniform(d.low, d.high)


def _sampler(search: OptunaSearch) -> Any:
    import optuna  # only Optuna sweeps pay for importing it

    seed = search.sampler_seed
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _scheduler(spec: ExperimentSpec) -> tuple[Any, Any]:
    """``(scheduler or None, was_pruned(trial_id) -> bool)``."""
    sched = spec.scheduler
    if not isinstance(sched, AshaScheduler):
        return None, lambda trial_id: False
    asha = RecordingASHA(
        time_attr=sched.time_attr,
        metric=sched.objective.metric,
        mode=sched.objective.mode,
        max_t=sched.max_t,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
    )
    return asha, asha.stopped.__contains__
