"""The power distribution's rule shares follow alpha: a chi-square test that can fail."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import small_spec
from scipy import stats

from data import generate

N_RULES, N = 10, 20_000
LEVEL = 1e-3  # significance level; the seed is fixed, so the outcome is deterministic


def bucket_probs(alpha: float) -> np.ndarray:
    """P(rule i) = ((i+1)/I)**alpha - (i/I)**alpha for rule index floor(I*u)."""
    edges = (np.arange(N_RULES + 1) / N_RULES) ** alpha
    return np.diff(edges)


def observed(alpha: float, seed: int) -> np.ndarray:
    spec = small_spec(
        distribution="power",
        alpha=alpha,
        n_instructions=N_RULES,
        n_examples=N,
        examples_per_instruction=None,
        seed=seed,
        test={"n_test": 10},
    )
    ids = generate(spec).train.column("rule_id").to_numpy()
    return np.bincount(ids, minlength=N_RULES)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0, 2.0])
def test_shares_follow_alpha(alpha: float) -> None:
    counts = observed(alpha, seed=11)
    result = stats.chisquare(counts, N * bucket_probs(alpha))
    assert result.pvalue > LEVEL, (counts, result)


@pytest.mark.parametrize(("true_alpha", "claimed"), [(0.5, 0.6), (1.0, 0.9), (0.1, 0.13)])
def test_wrong_alpha_is_rejected(true_alpha: float, claimed: float) -> None:
    counts = observed(true_alpha, seed=11)
    assert stats.chisquare(counts, N * bucket_probs(claimed)).pvalue < LEVEL


def test_small_alpha_concentrates_on_first_rules() -> None:
    counts = observed(0.1, seed=4)
    assert counts[0] > 0.75 * N  # (1/10)**0.1 = 0.794
