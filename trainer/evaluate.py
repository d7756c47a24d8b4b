"""Exact-match evaluation of a model on a split of a rewrite data set.

`evaluate` decodes the prompts greedily (`trainer.decode.greedy_decode`), compares each decoded
output with the expected one, and aggregates: overall accuracy, accuracy on no-op and has-op
examples, accuracy by occurrence count of ``x`` in ``z``, plus a few failures to look at.

On a test split whose rows say whether the rule's ``x`` / ``y`` occurred in training
(``x_seen`` / ``y_seen``, see `data.generate.seen_columns`), the has-op accuracy is also split
by them: ``test_acc_op_new_x`` is the strict "unseen instruction" figure (the model never saw
the pattern it must find), ``test_acc_op_seen_x`` the rest; ``test_n_op_new_x`` and
``test_rules_op_new_x`` say how many examples and distinct rules stand behind it (likewise
``_y``).

Example::

    >>> res = evaluate(model, ds, "test", n=500)                  # doctest: +SKIP
    >>> res.metrics                                               # doctest: +SKIP
    {'test_n': 500, 'test_acc': 0.91, 'test_acc_noop': 1.0, 'test_acc_op': 0.82,
     'test_acc_op_new_x': 0.80, 'test_n_op_new_x': 410, 'test_rules_op_new_x': 82, ...,
     'test_acc_occ_1': 0.82}
    >>> res.failures[0]                                           # doctest: +SKIP
    {'x': 'ab', 'y': 'c', 'z': 'zzabz', 'expected': 'zzcz', 'predicted': 'zzccz'}

A split without no-op (or without has-op, new-x, ...) examples omits that key rather than
reporting NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.batching import Sequences
from trainer.config import TrainConfig
from trainer.decode import greedy_decode
from trainer.model import Codec


@dataclass(frozen=True)
class EvalResult:
    """Metrics (flat, prefixed keys), per-example predictions and a few failures."""

    metrics: dict[str, float | int]
    indices: np.ndarray  # rows of the split that were evaluated
    predictions: list[str]
    correct: np.ndarray  # bool per evaluated row
    failures: list[dict[str, str]] = field(default_factory=list)


def sample_indices(n_total: int, n: int | None, seed: int, salt: int) -> np.ndarray:
    """A fixed, seeded subset of ``n`` rows (all rows when n is None or >= n_total), sorted."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(np.random.SeedSequence([seed, salt]))
    return np.sort(rng.choice(n_total, size=n, replace=False))


def accuracy_metrics(
    correct: np.ndarray,
    is_noop: np.ndarray,
    occurrences: np.ndarray | None,
    prefix: str,
    seen: dict[str, np.ndarray] | None = None,
    rule_ids: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Flat metric dict: ``<prefix>_acc``, ``_acc_noop``, ``_acc_op``, ``_acc_occ_<n>``, ``_n``;
    with ``seen`` (``{"x": x_seen, "y": y_seen}`` per row) also the accuracy of the rows whose
    rule's x was new (``_acc_new_x``; has-op ``_acc_op_new_x``, no-op ``_acc_noop_new_x``) or
    seen (``_seen_x``), the has-op counts ``_n_op_new_x`` and, with ``rule_ids``, the distinct
    has-op rules ``_rules_op_new_x`` (and ``_y``).

    >>> ok = np.array([True, False, True, True])
    >>> m = accuracy_metrics(ok, np.zeros(4, bool), None, "test",
    ...                      {"x": np.array([False, False, True, True])}, np.array([0, 1, 2, 2]))
    >>> m["test_acc_op_new_x"], m["test_acc_op_seen_x"], m["test_rules_op_new_x"]
    (0.5, 1.0, 2)
    """
    m: dict[str, float | int] = {f"{prefix}_n": int(len(correct))}
    if len(correct):
        m[f"{prefix}_acc"] = float(correct.mean())
    for name, mask in (("noop", is_noop), ("op", ~is_noop)):
        if mask.any():
            m[f"{prefix}_acc_{name}"] = float(correct[mask].mean())
    for s, was_seen in (seen or {}).items():
        for new, tag in ((~was_seen, f"new_{s}"), (was_seen, f"seen_{s}")):
            for kind, mask in (("op_", ~is_noop & new), ("noop_", is_noop & new), ("", new)):
                if mask.any():
                    m[f"{prefix}_acc_{kind}{tag}"] = float(correct[mask].mean())
            op = ~is_noop & new
            m[f"{prefix}_n_op_{tag}"] = int(op.sum())
            if rule_ids is not None:
                m[f"{prefix}_rules_op_{tag}"] = len(np.unique(rule_ids[op]))
    if occurrences is not None:
        for occ in np.unique(occurrences[~is_noop]):
            m[f"{prefix}_acc_occ_{int(occ)}"] = float(correct[occurrences == occ].mean())
    return m


def evaluate_split(
    model: torch.nn.Module,
    table: Any,
    seqs: Sequences,
    codec: Codec,
    indices: np.ndarray,
    prefix: str,
    batch_size: int = 256,
    n_failures: int = 5,
    by_occurrence: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Evaluate rows ``indices`` of a split given its table (pyarrow) and encoded sequences."""
    offsets = np.asarray(seqs.offsets)
    tokens = np.asarray(seqs.tokens)
    plens = np.asarray(seqs.prompt_lens)
    starts = offsets[indices]
    prompts = [tokens[s : s + p] for s, p in zip(starts, plens[indices], strict=True)]
    completion_lens = offsets[indices + 1] - starts - plens[indices]
    # A generation longer than the longest expected completion is wrong anyway.
    max_new = int(completion_lens.max()) if len(indices) else 0
    gen = greedy_decode(
        model, prompts, codec.eos_id, max_new, batch_size=batch_size, autocast_dtype=autocast_dtype
    )
    predictions = [codec.decode(g) for g in gen]
    expected = table.column("output").take(indices).to_pylist()
    ended = np.array([codec.eos_id in g for g in gen], dtype=bool)
    correct = ended & np.array([p == e for p, e in zip(predictions, expected, strict=True)])
    is_noop = table.column("is_noop").take(indices).to_numpy(zero_copy_only=False).astype(bool)
    occ = None
    if by_occurrence and "occurrences" in table.column_names:
        occ = table.column("occurrences").take(indices).to_numpy(zero_copy_only=False)
    seen = {
        c[0]: table.column(c).take(indices).to_numpy(zero_copy_only=False).astype(bool)
        for c in ("x_seen", "y_seen")
        if c in table.column_names
    }
    rule_ids = table.column("rule_id").take(indices).to_numpy() if seen else None
    failures = []
    for j in np.flatnonzero(~correct)[:n_failures]:
        row = {k: str(table.column(k)[int(indices[j])].as_py()) for k in ("x", "y", "z")}
        failures.append({**row, "expected": expected[j], "predicted": predictions[j]})
    metrics = accuracy_metrics(correct, is_noop, occ, prefix, seen, rule_ids)
    return EvalResult(metrics, indices, predictions, correct, failures)


def evaluate(
    model: torch.nn.Module,
    ds: Any,
    split: str = "test",
    *,
    codec: Codec | None = None,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    n_failures: int = 5,
) -> EvalResult:
    """Exact-match evaluation of ``model`` on ``n`` seeded rows of ``ds``'s ``split``
    (``"test"``, ``"fresh"`` or ``"train"``; metric keys start with the split's name, except
    ``"train"``, whose re-decoded training examples measure memorisation: ``memo_``).

    ``codec`` defaults to the data set's own vocabulary (a scratch model); pass
    ``build_codec(cfg, ds.vocab)`` for a pretrained checkpoint with its own tokenizer.
    """
    if codec is None:
        codec = Codec(TrainConfig(model="nano", max_steps=1), ds.vocab)
    table = ds.split(split)
    seqs = codec.encode(ds, split)
    idx = sample_indices(table.num_rows, n, seed, salt=SALTS[split])
    return evaluate_split(
        model,
        table,
        seqs,
        codec,
        idx,
        METRIC_PREFIX[split],
        batch_size,
        n_failures,
        by_occurrence=split == "test",
    )


#: Seeds of each split's evaluation sample (`sample_indices`); the metric prefix of each split.
SALTS = {"test": 0, "train": 1, "fresh": 2}
METRIC_PREFIX = {"test": "test", "train": "memo", "fresh": "fresh"}
