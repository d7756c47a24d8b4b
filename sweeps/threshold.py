"""Threshold search: the smallest axis value at which a metric reaches a level.

`ThresholdSearcher` is a Tune `Searcher` doing bisection on a log scale, with replicates:

1. probe both ends of the bracket ``[low, high]`` (``replicates`` trials each);
   if ``low`` already passes, the answer is ``low``; if ``high`` fails, there is none;
2. probe the geometric midpoint, keep the half where the change happens, and repeat until
   ``high / low <= resolution`` (integers: until they are adjacent); the answer is ``high``.

A value *passes* when the mean of its replicates' final metric is ``>= level``; a replicate that
failed counts as not passing (its metric is missing). Worked example with threshold 37 on
``[1, 1000]``, resolution 1.25: probes 1 (fail), 1000 (pass), 32 (fail), 179 (pass), 76 (pass),
49 (pass), 40 (pass); now 40 / 32 <= 1.25, so the answer is 40 after 7 probes, where a ×1.25
grid over the same range has 32 values.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.search import Searcher

from sweeps.spec import ThresholdSearch

log = logging.getLogger(__name__)


def midpoint(low: float, high: float, integer: bool) -> float | int | None:
    """The log-scale midpoint strictly inside ``(low, high)``, or None when there is none."""
    mid = math.sqrt(low * high)
    if not integer:
        return mid if low < mid < high else None
    m = round(mid)
    m = min(max(m, math.floor(low) + 1), math.ceil(high) - 1)
    return m if low < m < high else None


class ThresholdSearcher(Searcher):
    """Suggests ``{"params": {axis: value, "seed": s}}`` rounds until the bracket is narrow."""

    def __init__(self, search: ThresholdSearch, seeds: tuple[int, ...]) -> None:
        super().__init__(metric=search.metric, mode="max")
        self.search = search
        self.seeds = seeds
        self.low: float = round(search.low) if search.integer else search.low
        self.high: float = round(search.high) if search.integer else search.high
        self.scores: dict[float, list[float | None]] = {}
        self.queue: list[tuple[float, int]] = []
        self.outstanding: dict[str, float] = {}
        self.phase = "start"
        self.done = False
        self.threshold: float | None = None

    # --- Tune's Searcher API -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.queue and not self.done:
            if self.outstanding:
                return None  # wait for the round to finish
            self._next_round()
        if self.done and not self.queue:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's documented sentinel
        value, seed = self.queue.pop(0)
        self.outstanding[trial_id] = value
        return {"params": {self.search.axis: value, "seed": seed}}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        value = self.outstanding.pop(trial_id, None)
        if value is None:
            return
        metric = None if error or not result else result.get(self.search.metric)
        self.scores.setdefault(value, []).append(None if metric is None else float(metric))

    # --- the bisection -------------------------------------------------------------------------
    def passes(self, value: float) -> bool:
        """Mean over replicates reaches the level (missing replicates count as 0)."""
        got = [s if s is not None else 0.0 for s in self.scores.get(value, [])]
        return bool(got) and sum(got) / len(got) >= self.search.level

    def _probe(self, value: float) -> None:
        self.queue.extend((value, s) for s in self.seeds)

    def _finish(self, threshold: float | None) -> None:
        self.done = True
        self.threshold = threshold
        log.info("threshold search on %s: %s after %d probed values", self.search.axis,
                 threshold, len(self.scores))

    def _next_round(self) -> None:
        if self.phase == "start":
            self.phase = "ends"
            self._probe(self.low)
            self._probe(self.high)
            return
        if self.phase == "ends":
            self.phase = "bisect"
            if self.passes(self.low):
                return self._finish(self.low)
            if not self.passes(self.high):
                return self._finish(None)
        else:
            probed = self._last_mid
            if self.passes(probed):
                self.high = probed
            else:
                self.low = probed
        mid = midpoint(self.low, self.high, self.search.integer)
        if mid is None or self.high / self.low <= self.search.resolution:
            return self._finish(self.high)
        self._last_mid: float = mid
        self._probe(mid)
