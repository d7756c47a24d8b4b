"""The Tune trainable: Tune's config dict in, typed configs out, the trainer in between.

Tune calls ``trainable(config)`` with ``config = {"params": {"data.n_instructions": 100, ...,
"seed": 0}}``. The first thing it does is rebuild the typed `TrialPlan` (`ExperimentSpec.plan`),
so everything below works with validated objects. A *trial function* then does the work:

- `train_with_trainer` (the default): ``data.cached_generate(plan.data, cache_dir)`` — trials with
  the same data spec share one generated set — then ``trainer.train(plan.train, ds, report=...,
  checkpoint_dir=...)``;
- tests pass their own function with the same signature (a fake trainer with known behaviour).

The ``report`` handed to the trial function adapts the trainer's ``report(metrics, checkpoint)``
to ``tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint))``; a trial that
Tune restarts after a failure gets its latest checkpoint copied into ``checkpoint_dir`` first, and
the trainer resumes from it.

With fusing on (`sweeps.running.fusing`), a grid's configs are ``{"members": [params, ...]}``: a
group of one is an ordinary trial, and a larger group is a *fused* trial whose plans go to a
*fused trial function* (`train_fused_with_trainer`: one `trainer.train_fused` run), whose report
``(member_metrics, checkpoint)`` becomes one Tune result ``{"members": {"0": {...}, "1": {...}},
"tokens_per_s": <sum>, "fused_members": K, "step": ...}``; `sweeps.running.callback` stores each
member as its own trial. The checkpoint is the directory of every member's checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ray import tune

from data import cached_generate
from sweeps.specs.spec import ExperimentSpec, TrialPlan

log = logging.getLogger(__name__)

Report = Callable[[Mapping[str, Any], str | None], None]
#: ``trial_fn(plan, report, checkpoint_dir, cache_dir)``; runs one trial, reporting as it goes.
TrialFn = Callable[[TrialPlan, Report, str, str], None]
#: ``report(member_metrics, checkpoint)``: one metrics mapping per member, in member order.
FusedReport = Callable[[Sequence[Mapping[str, Any]], str | None], None]
#: ``fused_fn(plans, report, checkpoint_dir, cache_dir)``: runs a fused group of trials.
FusedTrialFn = Callable[[list[TrialPlan], FusedReport, str, str], None]


def default_cache_dir() -> str:
    """``~/.cache/divsweep/data``: generated data sets, shared by every trial on the machine."""
    return str(Path.home() / ".cache" / "divsweep" / "data")


def trial_params(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The params of each trial a Tune config runs: ``[config["params"]]``, or the members of a
    fused group (``config["members"]``; a group of one is an ordinary trial)."""
    members = config.get("members")
    if members is None:
        return [dict(config["params"])]
    return [dict(p) for p in members]


def train_with_trainer(
    plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str
) -> None:
    """The real trial: generate (or reuse) the data set, then train and evaluate on it."""
    from trainer.loop import train  # torch loads in the trial's worker, not in the sweep's driver

    ds = cached_generate(plan.data, cache_dir)
    # A fractional GPU is shared with other trials: stay within this trial's part of it.
    share = plan.gpu_share if plan.gpu_share is not None and 0 < plan.gpu_share < 1 else None
    train(plan.train, ds, report=report, checkpoint_dir=checkpoint_dir, gpu_memory_fraction=share)


def train_fused_with_trainer(
    plans: list[TrialPlan], report: FusedReport, checkpoint_dir: str, cache_dir: str
) -> None:
    """The real fused trial: every member's data set, then one `trainer.train_fused` run."""
    from trainer.fused import train_fused  # torch loads in the worker, not in the driver

    datasets = [cached_generate(p.data, cache_dir) for p in plans]
    share = plans[0].gpu_share
    share = share if share is not None and 0 < share < 1 else None
    train_fused(
        [p.train for p in plans],
        datasets,
        report=report,
        checkpoint_dir=checkpoint_dir,
        gpu_memory_fraction=share,
    )


def fused_result(member_metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One Tune result for a fused group: each member's metrics under ``members``, and what a
    dashboard shows for the group (its step, the members' summed tokens/s, K)."""
    first = member_metrics[0]
    return {
        "members": {str(k): dict(m) for k, m in enumerate(member_metrics)},
        "step": first.get("step"),
        "tokens_per_s": sum(float(m.get("tokens_per_s", 0.0)) for m in member_metrics),
        "fused_members": len(member_metrics),
    }


def _tune_report_fused(member_metrics: Sequence[Mapping[str, Any]], checkpoint: str | None) -> None:
    _tune_report(fused_result(member_metrics), checkpoint)


def _tune_report(metrics: Mapping[str, Any], checkpoint: str | None) -> None:
    ckpt = tune.Checkpoint.from_directory(checkpoint) if checkpoint else None
    tune.report(dict(metrics), checkpoint=ckpt)


def tune_trainable(
    config: dict[str, Any],
    *,
    spec_json: str,
    cache_dir: str,
    trial_fn: TrialFn,
    fused_fn: FusedTrialFn | None = None,
    gpu_share: float = 0.0,
    finished: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """The function Tune runs for each trial (bound with `make_trainable`).

    ``finished`` maps the Tune trial ids that the store already holds as complete to their last
    Tune result: a restored experiment (`sweeps.running.driver.restore_tuner`) whose saved Tune
    state predates a trial's end would otherwise train that trial again. Such a trial reports
    its stored result once, so Tune (and a searcher) sees it finish, and trains nothing.
    """
    done = (finished or {}).get(tune.get_context().get_trial_id() or "")
    if done is not None:
        log.info("trial %s is complete in the store; not trained again", config)
        tune.report(dict(done))
        return
    spec = ExperimentSpec.model_validate_json(spec_json)
    plans = [spec.plan(p) for p in trial_params(config)]
    if gpu_share > 0:
        plans = [replace(p, gpu_share=gpu_share) for p in plans]
    # A per-trial scratch dir outside the git checkout: Tune's trial dir lives under the Ray
    # session (or storage) directory, and we fall back to the system temp dir.
    base = tune.get_context().get_trial_dir() or tempfile.gettempdir()
    checkpoint_dir = tempfile.mkdtemp(prefix="ckpt-", dir=base if os.path.isdir(base) else None)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as src:
            shutil.copytree(src, checkpoint_dir, dirs_exist_ok=True)
        log.info("trial %s resumes from its last checkpoint", plans[0].trial_key[:12])
    if len(plans) == 1:
        trial_fn(plans[0], _tune_report, checkpoint_dir, cache_dir)
        return
    if fused_fn is None:
        raise RuntimeError("a fused trial reached a trainable without a fused trial function")
    fused_fn(plans, _tune_report_fused, checkpoint_dir, cache_dir)


def make_trainable(
    spec: ExperimentSpec,
    trial_fn: TrialFn | None = None,
    cache_dir: str | None = None,
    gpu_share: float = 0.0,
    fused_fn: FusedTrialFn | None = None,
    finished: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """A picklable Tune function trainable for ``spec`` (``gpu_share``: what each trial gets).

    ``fused_fn`` runs fused groups; it defaults to the real trainer's unless ``trial_fn``
    replaces the real trainer (a fake trial function comes with its own fused one, or none).
    """
    cache = cache_dir or spec.data_cache_dir or default_cache_dir()
    if fused_fn is None and trial_fn is None:
        fused_fn = train_fused_with_trainer
    fn = partial(
        tune_trainable,
        spec_json=spec.spec_json,
        cache_dir=os.path.expanduser(cache),
        trial_fn=trial_fn or train_with_trainer,
        fused_fn=fused_fn,
        gpu_share=gpu_share,
        finished=dict(finished or {}),
    )
    fn.__name__ = "divsweep_trial"  # type: ignore[attr-defined]  # Tune names trials after it
    return fn
