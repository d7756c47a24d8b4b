"""Summary statistics of a generated split (used by the CLI and handy in notebooks).

>>> summarize(ds.train)                        # doctest: +SKIP
{'rows': 5000, 'noop_share': 0.5, 'occurrences': {1: 2500}, 'rules_used': 100,
 'rule_count_max': 50, 'rule_count_min': 50, 'rule_gini': 0.0}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 for equal counts, -> 1 when one rule has all."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * x) / (n * total))


def summarize(table: pa.Table, n_rules: int | None = None) -> dict[str, Any]:
    """Counts, no-op share, occurrence histogram and rule-frequency skew of one split.

    ``n_rules`` is the number of rules the split may use (rules with no example count as 0 in
    the skew figures); by default the largest rule id + 1.
    """
    ids = table.column("rule_id").to_numpy()
    n_rules = int(ids.max()) + 1 if n_rules is None and len(ids) else (n_rules or 0)
    per_rule = np.bincount(ids, minlength=n_rules)
    occ = table.column("occurrences").to_numpy()
    noop = table.column("is_noop").to_numpy(zero_copy_only=False)
    values, counts = np.unique(occ[~noop], return_counts=True)
    seen = {}
    for col in ("x_seen", "y_seen"):  # test splits: rules whose x (y) never occurred in training
        if col in table.column_names:
            new = ~table.column(col).to_numpy(zero_copy_only=False)
            seen[f"rules_new_{col[0]}"] = len(np.unique(ids[new]))
    return {
        "rows": table.num_rows,
        "noop_share": float(noop.mean()) if len(noop) else 0.0,
        "occurrences": {int(v): int(c) for v, c in zip(values, counts, strict=True)},
        "rules_used": int(np.count_nonzero(per_rule)),
        "rule_count_max": int(per_rule.max()) if n_rules else 0,
        "rule_count_min": int(per_rule.min()) if n_rules else 0,
        "rule_gini": gini(per_rule),
        **seen,
    }
