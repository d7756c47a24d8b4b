"""Driving a `ThresholdSearcher` by hand the way Tune does, on fake metrics with a known
threshold (shared by the threshold and frontier tests; sent to Ray workers by value)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from sweeps.running.threshold import ThresholdSearcher
from sweeps.specs.spec import ThresholdSearch

AXIS = "data.n_instructions"
TRUE = 37  # where the mean of `noisy_metric` over seeds crosses LEVEL
LEVEL = 0.5
NOISE = 0.3
Metric = Callable[[float, int], float | None]


def noisy_metric(value: float, seed: int, true: float = TRUE, salt: str = "") -> float:
    """Mean over seeds ``0.5 + 0.45 tanh(2 ln(value / true))``; each seed adds up to ±NOISE.

    Deterministic per (value, seed, salt). Beyond a factor 1.5 from ``true`` the mean is more
    than NOISE from the level, so every seed lands on the same side; closer in, seeds can
    disagree. ``salt`` draws other noise for the same (value, seed): another budget's curve.
    """
    u = random.Random(f"{value}:{seed}{salt}").random()
    return 0.5 + 0.45 * math.tanh(2 * math.log(value / true)) + NOISE * (2 * u - 1)


def step_metric(value: float, seed: int) -> float:
    """~0.05 below TRUE, ~0.95 from it (the driver test's `fakes.step_accuracy`)."""
    return (0.95 if value >= TRUE else 0.05) + 0.04 * math.sin(seed + 1)


def search(**kw: Any) -> ThresholdSearch:
    base: dict[str, Any] = {
        "axis": AXIS,
        "metric": "test_acc",
        "level": LEVEL,
        "low": 2,
        "high": 2000,
        "replicates": 2,
        "max_replicates": 8,
        "resolution": 1.25,
    }
    return ThresholdSearch.model_validate({**base, **kw})


def searcher(s: ThresholdSearch, **kw: Any) -> ThresholdSearcher:
    return ThresholdSearcher(s, tuple(range(s.replicate_cap)), **kw)


_ids = itertools.count()


def drive(
    sr: ThresholdSearcher,
    metric: Metric = noisy_metric,
    *,
    concurrency: int = 2,
    running: list[tuple[str, dict[str, Any]]] | None = None,
    stop_after: int | None = None,
    score_of: Callable[[dict[str, Any]], float | None] | None = None,
) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """Run ``sr`` like Tune: returns the params of each trial run as a tuple, in order
    (``(value, seed)``; with ``over``, the group's value first), and the trials still running
    (non-empty only when stopped after ``stop_after`` trials). A trial scores
    ``metric(value, seed)``, or ``score_of(params)`` when given."""
    running = list(running or [])
    ran: list[tuple[Any, ...]] = []
    finished = False
    while True:
        while not finished and len(running) < concurrency:
            tid = f"t{next(_ids)}"
            cfg = sr.suggest(tid)
            if cfg is None:
                break
            if cfg == Searcher.FINISHED:
                finished = True
                break
            running.append((tid, cfg["params"]))
        if stop_after is not None and len(ran) >= stop_after:
            return ran, running
        if not running:
            assert finished, "the searcher waits, but no trial is running"
            return ran, running
        tid, params = running.pop(0)
        ran.append(tuple(params.values()))
        score = score_of(params) if score_of else metric(params[AXIS], params["seed"])
        if score is None:
            sr.on_trial_complete(tid, None, error=True)
        else:
            sr.on_trial_complete(tid, {"test_acc": score})
