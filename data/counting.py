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

from data.spec import DataSpec


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


def on_top_split(
    rng: np.random.Generator,
    n_op: int,
    n_noop: int,
    n_rules: int,
    distribution: str,
    alpha: float | None,
    occurrences: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Rule ids and wanted counts of a split whose ``n_op`` has-op examples follow the rule
    distribution exactly as a split without no-ops would, with ``n_noop`` no-ops on top (rules
    drawn the same way), shuffled together. Returns ``(ids, counts)``, counts 0 for no-ops.

    >>> ids, counts = on_top_split(np.random.default_rng(0), 8, 8, 4, "uniform", None, (1,))
    >>> np.bincount(ids[counts > 0]).tolist(), int((counts == 0).sum())
    ([2, 2, 2, 2], 8)
    """
    op_ids = rule_ids(rng, n_op, n_rules, distribution, alpha)
    noop_ids = rule_ids(rng, n_noop, n_rules, distribution, alpha) if n_noop else op_ids[:0]
    op_counts = occurrence_counts(rng, n_op, 0.0, occurrences)
    order = rng.permutation(n_op + n_noop)
    ids = np.concatenate([op_ids, noop_ids])[order]
    counts = np.concatenate([op_counts, np.zeros(n_noop, dtype=np.int32)])[order]
    return ids, counts


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


def train_composition(rng: np.random.Generator, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(rule ids, wanted counts)`` of every training example of ``spec``: no-ops within the
    budget (`rule_ids`, then `occurrence_counts`), or on top of it (`on_top_split`)."""
    if spec.noops_on_top:
        return on_top_split(
            rng,
            spec.n_budget,
            spec.n_noops_on_top,
            spec.n_instructions,
            spec.distribution,
            spec.alpha,
            spec.occurrences,
        )
    ids = rule_ids(rng, spec.n_train, spec.n_instructions, spec.distribution, spec.alpha)
    return ids, occurrence_counts(rng, spec.n_train, spec.noop_fraction, spec.occurrences)
