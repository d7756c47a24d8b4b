"""Drawing sets of distinct rules ``x → y``, optionally disjoint from another set.

Rules are drawn in vectorised rounds from the family (see :mod:`data.families`); a candidate is
kept when ``x != y``, it is new, and it is not excluded. Exclusion levels: ``"rule"`` rejects a
candidate whose ``(x, y)`` pair is in the excluded set, ``"x"`` rejects one whose ``x`` is.
Candidates are accepted in draw order, so the result is a pure function of the random stream.

Rules are compared through 64-bit hashes of their padded rows. Equal rules always hash alike, so
no duplicate and no clash with the excluded set can slip through; two distinct rules sharing a
hash (chance about 2**-64 per pair) only make the later one look taken, costing a redraw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from data.errors import SpecError
from data.families import KIND_CODE, draw_strings
from data.spec import RuleFamily
from data.vocab import LETTER0, Vocab

MAX_ROUNDS = 64


@dataclass(frozen=True)
class RuleSet:
    """``m`` rules as 0-padded token-id matrices (letters start at ``LETTER0``)."""

    x: np.ndarray  # (m, x_max) uint8
    x_len: np.ndarray  # (m,) int32
    y: np.ndarray  # (m, y_max) uint8
    y_len: np.ndarray  # (m,) int32
    kind: np.ndarray  # (m,) int8, index into families.KINDS
    k: np.ndarray  # (m,) int32

    def __len__(self) -> int:
        return len(self.x_len)

    def x_keys(self) -> np.ndarray:
        """(m,) uint64 hash of each x."""
        return row_hashes(self.x)

    def y_keys(self) -> np.ndarray:
        """(m,) uint64 hash of each y."""
        return row_hashes(self.y)

    def pair_keys(self) -> np.ndarray:
        """(m,) uint64 hash of each (x, y)."""
        return row_hashes(np.concatenate([self.x, self.y], axis=1))

    def strings(self, vocab: Vocab) -> tuple[pa.StringArray, pa.StringArray]:
        """``(x, y)`` as Arrow string arrays."""
        return strings_from_padded(self.x, vocab), strings_from_padded(self.y, vocab)

    def take(self, idx: np.ndarray) -> RuleSet:
        return RuleSet(
            self.x[idx], self.x_len[idx], self.y[idx], self.y_len[idx], self.kind[idx], self.k[idx]
        )


# Fixed odd multipliers (a pure function of nothing) so hashes never depend on the process.
_MULT = np.random.Generator(np.random.PCG64(20240215)).integers(
    1, 2**63, size=64, dtype=np.uint64
) | np.uint64(1)


def row_hashes(mat: np.ndarray) -> np.ndarray:
    """(m,) uint64 hash of each row of a uint8 matrix, read 8 bytes at a time."""
    m, w = mat.shape
    pad = -w % 8
    words = np.ascontiguousarray(np.pad(mat, ((0, 0), (0, pad))) if pad else mat)
    words = words.view(np.uint64)  # (m, ceil(w/8))
    h = np.zeros(m, dtype=np.uint64)
    for j in range(words.shape[1]):
        # multiply-xor-shift mixing; uint64 arithmetic wraps around by design
        h = (h ^ (words[:, j] * _MULT[j])) * _MULT[-1 - j]
        h ^= h >> np.uint64(29)
    return h


def member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """(m,) bool: which keys are in ``sorted_set`` (binary search; no hashing of our own)."""
    if len(sorted_set) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
    return sorted_set[pos] == keys


def strings_from_padded(mat: np.ndarray, vocab: Vocab) -> pa.StringArray:
    """Arrow strings of a 0-padded token-id matrix, built from buffers (no Python strings)."""
    mask = mat != 0
    lens = np.count_nonzero(mask, axis=1)
    offsets = np.zeros(len(mat) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    data = vocab.id_to_byte[mat[mask]]
    return pa.StringArray.from_buffers(len(mat), pa.py_buffer(offsets), pa.py_buffer(data))


def _candidates(
    rng: np.random.Generator,
    family: RuleFamily,
    m: int,
    x_len: tuple[int, int],
    y_len: tuple[int, int],
    n_letters: int,
) -> RuleSet:
    kinds = np.array([KIND_CODE[k] for k in family.kinds], dtype=np.int8)
    kind = kinds[rng.integers(0, len(kinds), size=m)]
    k_lo, k_hi = family.k or (1, 1)
    k = rng.integers(k_lo, k_hi + 1, size=m).astype(np.int32)
    k[kind == KIND_CODE["free"]] = 1
    x, lx = draw_strings(rng, kind, k, *x_len, n_letters, LETTER0)
    if family.constrain_y:
        y, ly = draw_strings(rng, kind, k, *y_len, n_letters, LETTER0)
    else:
        free = np.full(m, KIND_CODE["free"], dtype=np.int8)
        y, ly = draw_strings(rng, free, np.ones(m, dtype=np.int32), *y_len, n_letters, LETTER0)
    return RuleSet(x, lx, y, ly, kind, k)


def draw_rules(
    rng: np.random.Generator,
    family: RuleFamily,
    n: int,
    x_len: tuple[int, int],
    y_len: tuple[int, int],
    n_letters: int,
    *,
    exclude: RuleSet | None = None,
    level: Literal["rule", "x"] = "rule",
    field: str = "n_instructions",
) -> RuleSet:
    """``n`` distinct rules with ``x != y``, none clashing with ``exclude`` at ``level``.

    Raises ``SpecError`` naming ``field`` when the family cannot supply enough rules.
    """
    banned = np.zeros(0, dtype=np.uint64)
    if exclude is not None:
        banned = np.sort(exclude.x_keys() if level == "x" else exclude.pair_keys())
    seen = np.zeros(0, dtype=np.uint64)  # sorted hashes of the rules kept so far
    kept: list[RuleSet] = []
    have = 0
    width = max(x_len[1], y_len[1])
    for _ in range(MAX_ROUNDS):
        if have >= n:
            break
        cand = _candidates(rng, family, max(2 * (n - have), 64), x_len, y_len, n_letters)
        xs = np.pad(cand.x, ((0, 0), (0, width - x_len[1])))
        ys = np.pad(cand.y, ((0, 0), (0, width - y_len[1])))
        pairs = cand.pair_keys()
        clash = cand.x_keys() if level == "x" else pairs
        fresh = (xs != ys).any(axis=1) & ~member(pairs, seen) & ~member(clash, banned)
        idx = np.flatnonzero(fresh)
        _, first = np.unique(pairs[idx], return_index=True)  # first copy of each new rule
        idx = idx[np.sort(first)][: n - have]
        kept.append(cand.take(idx))
        seen = np.sort(np.concatenate([seen, pairs[idx]]))  # all new, all distinct
        have += len(idx)
    if have < n:
        raise SpecError(
            f"{field}: asked for {n} distinct rules but family "
            f"{'/'.join(family.kinds)} (k range {family.k or (1, 1)}) "
            f"with x_len={list(x_len)}, y_len={list(y_len)} and {n_letters} letters gave only "
            f"{have} after {MAX_ROUNDS} rounds"
            + ("" if exclude is None else f" disjoint (level={level!r}) from the training rules"),
            (field,),
        )
    return RuleSet(
        *(
            np.concatenate([getattr(r, f) for r in kept])
            for f in ("x", "x_len", "y", "y_len", "kind", "k")
        )
    )
