"""Threshold search: the smallest axis value at which a metric reaches a level.

`ThresholdSearcher` is a Tune `Searcher` doing bisection on a log scale, with replicates:

1. probe both ends of the bracket ``[low, high]`` (``replicates`` trials each);
   if ``low`` already passes, the answer is ``low``; if ``high`` fails, there is none;
2. probe the geometric midpoint, keep the half where the change happens, and repeat until
   ``high / low <= resolution`` (integers: until they are adjacent); the answer is ``high``.

A value *passes* when the mean of its replicates' final metric is ``>= level``; a replicate that
failed (or reported no number, or NaN) counts as 0. Worked example with threshold 37 on
``[1, 1000]``, resolution 1.25: probes 1 (fail), 1000 (pass), 32 (fail), 179 (pass), 76 (pass),
49 (pass), 40 (pass); now 40 / 32 <= 1.25, so the answer is 40 after 7 probes, where a ×1.25
grid over the same range has 32 values.

Adaptive replicates (``max_replicates`` set). Work goes in rounds: a round is every trial of one
step (both ends, or one midpoint), and the next round starts when all of them have finished. A
probed value is *decided* when its replicates agree: all scores on one side of ``level``, or the
two-sided Student-t interval of their mean at ``confidence`` excludes ``level``. An undecided
value gets one more seed (the next replicate seed) per round; at ``max_replicates`` seeds its
mean decides and it is marked *uncertain*. Only when every value of the step is decided does the
bracket move. Example, ``level=0.5, replicates=2, max_replicates=6, confidence=0.9``:
scores ``[0.9, 0.95]`` agree (pass, 2 trials). ``[0.45, 0.75]`` do not: the interval is
``0.60 ± 0.95`` (``t = 6.31`` at 1 degree of freedom), so a third seed runs; ``[0.45, 0.75, 0.8]``
gives ``0.67 ± 0.32``, still undecided; a fourth, 0.85, gives ``0.71 ± 0.21``, which excludes 0.5:
pass after 4 trials. Seeds that never settle stop at 6 and are marked uncertain.

Several bisections in one experiment (``search.over``, the phase boundary). Each value of the
``over`` axis (e.g. ``data.n_examples``) gets its own `Bisection` of ``axis``, with its own
rounds and adaptive replicates; the searcher interleaves them: each ``suggest`` asks the groups
in turn (starting after the one served last) and hands out the first trial any of them has, so a
group that waits for the rest of its round never keeps another group's trials from running. Its
trials' params carry the group's value (``{"data.n_examples": 14000, "data.n_instructions": 64,
"seed": 0}``), and `lookup` answers them one by one as for a single search.

`ThresholdSearcher.summary` reports the outcome; ``save``/``restore`` let ``Tuner.restore``
continue a bisection; a ``lookup`` function lets stored results of identical trials stand in
for running them again.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from sweeps.specs.bisection import midpoint
from sweeps.specs.spec import ThresholdSearch
from sweeps.stats import t_critical

log = logging.getLogger(__name__)

#: ``lookup(params) -> metric | None``: the final metric of a stored complete trial with exactly
#: these params (``{axis: value, "seed": s}``, plus the group's field with ``over``), or None to
#: run the trial.
Lookup = Callable[[dict[str, Any]], float | None]

#: 2: one `Bisection` state per group of ``over`` (1 held a single bisection's attributes).
_STATE_VERSION = 2
#: The attributes of a `Bisection` that a checkpoint holds (everything that changes).
_STATE = (
    "low",
    "high",
    "scores",
    "issued",
    "reused",
    "queue",
    "running",
    "phase",
    "stage",
    "done",
    "threshold",
)


@dataclass(frozen=True)
class Verdict:
    """What a probed value's replicates say so far."""

    n: int
    mean: float  # failed replicates count as 0
    passes: bool  # mean >= level
    agree: bool  # all on one side of level, or the t interval excludes it
    decided: bool  # agree, or no seed left to add (then the mean decides: uncertain)


def _score(metric: Any) -> float | None:
    """A replicate's final metric; None (counted as 0) when missing or NaN."""
    if metric is None:
        return None
    value = float(metric)
    return None if math.isnan(value) else value


class Bisection:
    """One bisection of ``search.axis`` at the fixed field values ``group`` (``{}`` without
    ``over``): its bracket, its probes' scores and its rounds. Plain state, no Tune: the
    `ThresholdSearcher` hands its trials to Tune and feeds the scores back."""

    def __init__(
        self,
        search: ThresholdSearch,
        seeds: tuple[int, ...],
        group: dict[str, Any],
        lookup: Lookup | None = None,
    ) -> None:
        self.search = search
        self.seeds = seeds
        self.group = group
        self.lookup = lookup
        self.low: float = round(search.low) if search.integer else search.low
        self.high: float = round(search.high) if search.integer else search.high
        self.scores: dict[float, dict[int, float | None]] = {}  # value -> seed -> final metric
        self.issued: dict[float, int] = {}  # value -> replicate seeds handed out so far
        self.reused = 0  # trials answered by `lookup`
        self.queue: list[tuple[float, int]] = []  # (value, seed) not yet suggested
        self.running = 0  # trials suggested and not yet complete
        self.phase = "start"  # start -> ends -> bisect
        self.stage: list[float] = []  # the values of the current step
        self.done = False
        self.threshold: float | None = None

    def params(self, value: float, seed: int) -> dict[str, Any]:
        """A trial's params: the group's fields, the probed value and the replicate seed."""
        return {**self.group, self.search.axis: value, "seed": seed}

    def next_trial(self) -> tuple[float, int] | None:
        """The next ``(value, seed)`` to run, or None: the round's other trials still run, or
        the bisection is done. A round answered entirely by `lookup` moves on by itself."""
        self._advance()
        if not self.queue:
            return None
        self.running += 1
        return self.queue.pop(0)

    def record(self, value: float, seed: int, metric: Any) -> None:
        """A suggested trial finished with ``metric`` (None: failed or no number). The round's
        last trial moves the bisection on at once: Tune stops asking once it has run
        ``num_samples`` trials, and the state it saves then must hold the finished answer."""
        self.running -= 1
        self.scores.setdefault(value, {})[seed] = _score(metric)
        self._advance()

    def _advance(self) -> None:
        """Start rounds until one has trials to run, one is running, or the bisection is done
        (a round answered entirely by `lookup` moves on by itself)."""
        while not self.queue and not self.running and not self.done:
            self._next_round()

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _STATE}

    def load(self, state: dict[str, Any]) -> None:
        for k in _STATE:
            setattr(self, k, state[k])

    # --- the outcome ---------------------------------------------------------------------------
    def verdict(self, value: float) -> Verdict:
        """Pass/fail of ``value`` from the replicates finished so far, and whether it is decided."""
        sc = self.scores.get(value, {})
        got = [0.0 if x is None else x for x in (sc[s] for s in self.seeds if s in sc)]
        n, level = len(got), self.search.level
        mean = sum(got) / n if n else 0.0
        agree = n > 0 and (all(g >= level for g in got) or all(g < level for g in got))
        if not agree and n >= 2:
            half = t_critical(self.search.confidence, n - 1) * statistics.stdev(got) / math.sqrt(n)
            agree = abs(mean - level) > half
        return Verdict(
            n, mean, n > 0 and mean >= level, agree, agree or n >= self.search.replicate_cap
        )

    def passes(self, value: float) -> bool:
        """Mean over replicates reaches the level (missing replicates count as 0)."""
        return self.verdict(value).passes

    def summary(self) -> dict[str, Any]:
        """This bisection's part of `ThresholdSearcher.summary`: done, threshold, bracket,
        trial counts and probes."""
        probes = []
        for value in sorted(self.scores):
            sc, v = self.scores[value], self.verdict(value)
            seeds = [s for s in self.seeds if s in sc]
            probes.append(
                {
                    "value": value,
                    "seeds": seeds,
                    "scores": [sc[s] for s in seeds],
                    "n": v.n,
                    "mean": v.mean,
                    "passes": v.passes,
                    "decided": v.decided,
                    "uncertain": v.decided and not v.agree,
                }
            )
        n_scores = sum(len(sc) for sc in self.scores.values())
        return {
            "done": self.done,
            "threshold": self.threshold,
            "bracket": [self.low, self.high],
            "n_trials": n_scores - self.reused,
            "n_reused": self.reused,
            "probes": probes,
        }

    # --- the bisection -------------------------------------------------------------------------
    def _ask(self, value: float) -> None:
        """Hand out ``value``'s next replicate seed: answered by `lookup`, or queued for Tune."""
        seed = self.seeds[self.issued.get(value, 0)]
        self.issued[value] = self.issued.get(value, 0) + 1
        metric = self.lookup(self.params(value, seed)) if self.lookup else None
        if metric is None:
            self.queue.append((value, seed))
            return
        self.scores.setdefault(value, {})[seed] = _score(metric)
        self.reused += 1

    def _probe(self, *values: float) -> None:
        self.stage = list(values)
        for value in values:
            for _ in range(self.search.replicates):
                self._ask(value)

    def _finish(self, threshold: float | None) -> None:
        self.done = True
        self.threshold = threshold
        summary = self.summary()
        where = "".join(f" at {k}={v}" for k, v in self.group.items())
        log.info(
            "threshold search on %s%s: %s after %d probed values, %d trials (%d reused)",
            self.search.axis,
            where,
            threshold,
            len(self.scores),
            summary["n_trials"],
            summary["n_reused"],
        )
        log.info("threshold search summary%s: %s", where, summary)
        shaky = [p["value"] for p in summary["probes"] if p["uncertain"]]
        if shaky and self.search.max_replicates is not None:
            log.warning(
                "threshold search on %s%s: seeds still disagreed at max_replicates=%d for "
                "%s; their means decided",
                self.search.axis,
                where,
                self.search.max_replicates,
                shaky,
            )

    def _next_round(self) -> None:
        """Called when nothing is queued or running: add seeds, move the bracket, or finish."""
        if self.phase == "start":
            self.phase = "ends"
            self._probe(self.low, self.high)
            return
        undecided = [v for v in self.stage if not self.verdict(v).decided]
        if undecided:
            for value in undecided:
                self._ask(value)
            return
        if self.phase == "ends":
            self.phase = "bisect"
            if self.passes(self.low):
                return self._finish(self.low)
            if not self.passes(self.high):
                return self._finish(None)
        else:
            (probed,) = self.stage
            if self.passes(probed):
                self.high = probed
            else:
                self.low = probed
        mid = midpoint(self.low, self.high, self.search.integer)
        if mid is None or self.high / self.low <= self.search.resolution:
            return self._finish(self.high)
        self._probe(mid)


class ThresholdSearcher(Searcher):
    """Suggests ``{"params": {axis: value, "seed": s}}`` rounds until every bracket is narrow.

    ``seeds`` are the replicate seeds in the order they are used (at least
    ``search.replicate_cap`` of them; `ExperimentSpec.replicate_seeds`). With ``search.over``
    there is one `Bisection` per value, interleaved (see the module docstring). Example,
    driving it by hand the way Tune does::

        searcher = ThresholdSearcher(search, (0, 1, 2, 3))
        while (cfg := searcher.suggest(tid := new_id())) != Searcher.FINISHED:
            ...  # run cfg["params"], then searcher.on_trial_complete(tid, {"test_acc": acc})
        searcher.summary()["threshold"]
    """

    def __init__(
        self, search: ThresholdSearch, seeds: tuple[int, ...], lookup: Lookup | None = None
    ) -> None:
        super().__init__(metric=search.metric, mode="max")
        cap = search.replicate_cap
        if len(seeds) < cap:
            raise ValueError(
                f"seeds: a threshold search needs {cap} replicate seeds "
                f"(replicate_cap), got {list(seeds)}"
            )
        self.search = search
        self.seeds = tuple(seeds)
        self.groups = [Bisection(search, self.seeds, g, lookup) for g in search.groups]
        self.outstanding: dict[str, tuple[int, float, int]] = {}  # id -> (group, value, seed)
        self.turn = 0  # the group asked first by the next `suggest`

    @property
    def threshold(self) -> float | None:
        """The answer of a search without ``over`` (None until done, or when nothing passes)."""
        if len(self.groups) != 1:
            raise ValueError("threshold: a search with `over` has one per group (summary())")
        return self.groups[0].threshold

    # --- Tune's Searcher API -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        n = len(self.groups)
        for k in range(n):
            i = (self.turn + k) % n
            probe = self.groups[i].next_trial()
            if probe is not None:
                self.turn = (i + 1) % n
                value, seed = probe
                self.outstanding[trial_id] = (i, value, seed)
                return {"params": self.groups[i].params(value, seed)}
        if all(g.done for g in self.groups):
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's documented sentinel
        return None  # every unfinished group waits for its round to finish

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        probe = self.outstanding.pop(trial_id, None)
        if probe is None:
            return
        group, value, seed = probe
        metric = None if error or not result else result.get(self.search.metric)
        self.groups[group].record(value, seed, metric)

    def save(self, checkpoint_path: str) -> None:
        """Pickle the search state to ``checkpoint_path`` (atomically: ``.tmp``, then rename)."""
        state = {
            "version": _STATE_VERSION,
            "search": self.search.model_dump(mode="json"),
            "seeds": self.seeds,
            "groups": [g.state() for g in self.groups],
            "outstanding": self.outstanding,
            "turn": self.turn,
        }
        tmp = f"{checkpoint_path}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Continue from a `save` of a searcher with the same search and seeds."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)  # our own checkpoint, written by `save`
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"{checkpoint_path}: searcher state version {state.get('version')!r}"
                f", expected {_STATE_VERSION}"
            )
        mine = self.search.model_dump(mode="json")
        if state["search"] != mine or tuple(state["seeds"]) != self.seeds:
            raise ValueError(
                f"{checkpoint_path}: searcher state is for search {state['search']} "
                f"with seeds {list(state['seeds'])}, not {mine} with seeds "
                f"{list(self.seeds)}"
            )
        for group, saved in zip(self.groups, state["groups"], strict=True):
            group.load(saved)
        self.outstanding = state["outstanding"]
        self.turn = state["turn"]

    # --- the outcome ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The search so far, e.g. (``threshold`` is None until done, or when nothing passes)::

            {"axis": "data.n_instructions", "metric": "test_acc", "level": 0.5, "done": True,
             "threshold": 40, "bracket": [32, 40], "n_trials": 15, "n_reused": 0,
             "probes": [{"value": 1, "seeds": [0, 1], "scores": [0.02, 0.06], "n": 2,
                         "mean": 0.04, "passes": False, "decided": True, "uncertain": False},
                        ...]}

        ``probes`` is sorted by value; ``scores`` follow ``seeds`` (None: the trial failed, it
        counts as 0 in ``mean``); ``uncertain``: decided only because ``max_replicates`` ran
        out. ``n_trials`` counts trials Tune ran, ``n_reused`` those answered by ``lookup``.
        With ``over``, ``threshold``/``bracket``/``probes`` move into ``groups``, one per value
        of ``over`` (``{"value": 14000, "done": ..., "threshold": ..., "bracket": ...,
        "n_trials": ..., "n_reused": ..., "probes": [...]}``), and the top level adds ``over``
        (its field) and the total ``n_trials`` / ``n_reused``.
        """
        head = {"axis": self.search.axis, "metric": self.search.metric, "level": self.search.level}
        over = self.search.over
        if over is None:
            return {**head, **self.groups[0].summary()}
        groups = [{"value": g.group[over.field or ""], **g.summary()} for g in self.groups]
        return {
            **head,
            "over": over.field,
            "done": all(g["done"] for g in groups),
            "n_trials": sum(g["n_trials"] for g in groups),
            "n_reused": sum(g["n_reused"] for g in groups),
            "groups": groups,
        }
