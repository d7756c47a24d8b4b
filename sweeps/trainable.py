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
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from sweeps.spec import ExperimentSpec, TrialPlan

log = logging.getLogger(__name__)

Report = Callable[[Mapping[str, Any], str | None], None]
#: ``trial_fn(plan, report, checkpoint_dir, cache_dir)``; runs one trial, reporting as it goes.
TrialFn = Callable[[TrialPlan, Report, str, str], None]


def default_cache_dir() -> str:
    """``~/.cache/divsweep/data``: generated data sets, shared by every trial on the machine."""
    return str(Path.home() / ".cache" / "divsweep" / "data")


def train_with_trainer(
    plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str
) -> None:
    """The real trial: generate (or reuse) the data set, then train and evaluate on it."""
    from data import cached_generate
    from trainer import train

    ds = cached_generate(plan.data, cache_dir)
    # A fractional GPU is shared with other trials: stay within this trial's part of it.
    share = plan.gpu_share if plan.gpu_share is not None and 0 < plan.gpu_share < 1 else None
    train(plan.train, ds, report=report, checkpoint_dir=checkpoint_dir, gpu_memory_fraction=share)


def _tune_report(metrics: Mapping[str, Any], checkpoint: str | None) -> None:
    from ray import tune

    ckpt = tune.Checkpoint.from_directory(checkpoint) if checkpoint else None
    tune.report(dict(metrics), checkpoint=ckpt)


def tune_trainable(
    config: dict[str, Any],
    *,
    spec_json: str,
    cache_dir: str,
    trial_fn: TrialFn,
    gpu_share: float = 0.0,
) -> None:
    """The function Tune runs for each trial (bound with `make_trainable`)."""
    plan = ExperimentSpec.model_validate_json(spec_json).plan(config["params"])
    if gpu_share > 0:
        plan = replace(plan, gpu_share=gpu_share)
    from ray import tune

    # A per-trial scratch dir outside the git checkout: Tune's trial dir lives under the Ray
    # session (or storage) directory, and we fall back to the system temp dir.
    base = tune.get_context().get_trial_dir() or tempfile.gettempdir()
    checkpoint_dir = tempfile.mkdtemp(prefix="ckpt-", dir=base if os.path.isdir(base) else None)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as src:
            shutil.copytree(src, checkpoint_dir, dirs_exist_ok=True)
        log.info("trial %s resumes from its last checkpoint", plan.trial_key[:12])
    trial_fn(plan, _tune_report, checkpoint_dir, cache_dir)


def make_trainable(
    spec: ExperimentSpec,
    trial_fn: TrialFn | None = None,
    cache_dir: str | None = None,
    gpu_share: float = 0.0,
) -> Callable[[dict[str, Any]], None]:
    """A picklable Tune function trainable for ``spec`` (``gpu_share``: what each trial gets)."""
    cache = cache_dir or spec.data_cache_dir or default_cache_dir()
    fn = partial(
        tune_trainable,
        spec_json=spec.spec_json,
        cache_dir=os.path.expanduser(cache),
        trial_fn=trial_fn or train_with_trainer,
        gpu_share=gpu_share,
    )
    fn.__name__ = "divsweep_trial"  # type: ignore[attr-defined]  # Tune names trials after it
    return fn
