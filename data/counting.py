"""How many examples of each kind a split holds: rule indices (uniform or power law), no-op
counts and planted-occurrence counts. Shared by the rewrite and the Markov generators.

>>> rng = np.random.default_rng(0)
>>> np.bincount(rule_ids(rng, 10, 5, "uniform", None)).tolist()
[2, 2, 2, 2, 2]
>>> n_noops(10, 0.25)
3
"""

from __future__ import annotations

import numpy as np


def rule_ids(
    rng: np.random.Generator, n: int, n_rules: int, distribution: str, alpha: float | None
) -> np.ndarray:
    """(n,) int32 rule index of every example (see module docstring)."""
    if distribution == "uniform":
        per, extra = divmod(n, n_rules)
        sizes = np.full(n_rules, per, dtype=np.int64)
        sizes[:extra] += 1
        return rng.permutation(np.repeat(np.arange(n_rules, dtype=np.int32), sizes))
    assert alpha is not None  # validated by DataSpec
    u = rng.random(n) ** (1.0 / alpha)
    return np.minimum((n_rules * u).astype(np.int64), n_rules - 1).astype(np.int32)


def n_noops(n: int, noop_fraction: float) -> int:
    """The exact number of no-op examples in a split of ``n``: ``floor(f*n + 0.5)``."""
    return int(np.floor(noop_fraction * n + 0.5))


def occurrence_counts(
    rng: np.random.Generator, n: int, noop_fraction: float, occurrences: tuple[int, ...]
) -> np.ndarray:
    """(n,) int32 wanted ``z.count(x)``: 0 for no-ops, the ``occurrences`` cycled for the rest."""
    noop = np.zeros(n, dtype=bool)
    k = n_noops(n, noop_fraction)
    if k:
        noop[rng.choice(n, size=k, replace=False)] = True
    op = np.flatnonzero(~noop)
    counts = np.zeros(n, dtype=np.int32)
    if len(occurrences) == 1:
        counts[op] = occurrences[0]  # nothing to mix (and no random draw needed)
    else:
        cycle = np.asarray(occurrences, dtype=np.int32)[np.arange(len(op)) % len(occurrences)]
        counts[op] = rng.permutation(cycle)
    return counts
