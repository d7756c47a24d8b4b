"""Rule families: how the strings ``x`` and ``y`` of a rule are drawn.

Every family builds a string of length ``k * b`` from a random *base* of ``b`` letters; ``k`` is
the number of copies, so ``k`` means the same thing in every family (the paper's examples):

=========  ============================================  ==========================  ===
family     string                                        example (base ``abc``)      k
=========  ============================================  ==========================  ===
free       the base itself (``k`` is always 1)           ``abc``                     1
repeated   each base letter copied ``k`` times           ``aaabbbccc``               3
periodic   the base copied ``k`` times                   ``abcabc``                  2
mirror     ``k`` copies, every second one reversed       ``abccbaabc``               3
=========  ============================================  ==========================  ===

With ``k = 1`` every family reduces to ``free``. ``mix`` draws each rule's family uniformly from
``RuleFamily.mix``. Per rule, ``k`` is uniform on the ``k`` range, then the base length ``b`` is
uniform among the values with ``k * b`` inside the string's length range; ``x`` and ``y`` share the
rule's family and ``k`` (``y`` is free when ``RuleFamily.constrain_y`` is false).

Worked example: a repeated rule with k=2, ``x = aabb`` (base ``ab``), ``y = cc`` (base ``c``), on
``z = daabbd`` gives output ``dccd``; the text is ``aabb→cc|daabbd=dccd`` and the tokens
(default alphabet) ``5 5 6 6 2 7 7 3 8 5 5 6 6 8 4 8 7 7 8 1``.

Strings are handled as 0-padded ``uint8`` matrices of token ids (letters are ``letter0 ..
letter0 + A - 1``), one row per string, so that a million rules are drawn without a Python loop.
"""

from __future__ import annotations

import itertools

import numpy as np

KINDS: tuple[str, ...] = ("free", "repeated", "periodic", "mirror")
KIND_CODE: dict[str, int] = {name: i for i, name in enumerate(KINDS)}


def base_lengths(k: int, lo: int, hi: int) -> range:
    """Base lengths ``b >= 1`` with ``lo <= k * b <= hi``; empty when ``k`` cannot fit."""
    return range(max(1, -(-lo // k)), hi // k + 1)


#: Counts of distinct strings stop here: no data set asks for more, and the exact count of, say,
#: 26-letter strings of up to a million letters is a million-digit number that takes minutes.
COUNT_CAP = 10**18


def n_strings(k: int, lo: int, hi: int, n_letters: int) -> int:
    """Distinct strings of one kind with copy count ``k`` (exact: the base is a prefix), or
    `COUNT_CAP` when there are at least that many."""
    lengths = base_lengths(k, lo, hi)
    if n_letters <= 1:  # one string per length (none without letters)
        return min(len(lengths), COUNT_CAP) * n_letters
    total = 0
    for b in lengths:  # at most ~60 rounds before the cap with 2 letters or more
        total += n_letters**b
        if total >= COUNT_CAP:
            return COUNT_CAP
    return total


def family_strings(kind: str, k: int, lo: int, hi: int, n_letters: int) -> set[tuple[int, ...]]:
    """Every distinct string of one kind and copy count, as tuples of letter indices.

    Only for small families (the caller bounds the count with `n_strings` first): degenerate
    bases make strings coincide (``aa`` is ``aaaa`` as repeated, periodic and mirror with
    k=2), which is why an exact count needs the strings themselves.

    >>> sorted(family_strings("mirror", 2, 4, 4, 2))
    [(0, 0, 0, 0), (0, 1, 1, 0), (1, 0, 0, 1), (1, 1, 1, 1)]
    """
    out: set[tuple[int, ...]] = set()
    for b in base_lengths(k, lo, hi):
        for base in itertools.product(range(n_letters), repeat=b):
            if kind == "free" or k == 1:
                s = base
            elif kind == "repeated":
                s = tuple(c for c in base for _ in range(k))
            elif kind == "periodic":
                s = base * k
            else:  # mirror: every second copy reversed
                s = tuple(c for i in range(k) for c in (base if i % 2 == 0 else base[::-1]))
            out.add(s)
    return out


def expand(
    kind: np.ndarray, k: np.ndarray, base: np.ndarray, b: np.ndarray, width: int
) -> np.ndarray:
    """Expand bases into family strings.

    ``kind``, ``k``, ``b``: (m,) ints; ``base``: (m, bmax) uint8; returns (m, width) uint8 with
    zeros after each string's length ``k * b``. Worked example: kind=mirror, k=3, base=``abc``
    gives indices 0 1 2 2 1 0 0 1 2 → ``abccbaabc``.
    """
    m = len(kind)
    col = np.arange(width, dtype=np.int32)[None, :]  # (1, W)
    length = (k.astype(np.int32) * b.astype(np.int32))[:, None]
    out = np.empty((m, width), dtype=np.uint8)
    free = kind == KIND_CODE["free"]
    # free strings are their base: no index arithmetic (the common case, and a million rules)
    if free.all():
        np.multiply(base[:, :width], col < length, out=out)
        return out
    out[free] = base[free, :width] * (col < length[free])
    rest = np.flatnonzero(~free)
    k2 = k[rest].astype(np.int32)[:, None]
    b2 = np.maximum(b[rest].astype(np.int32), 1)[:, None]
    kind2 = kind[rest][:, None]
    seg, pos = col // b2, col % b2
    idx = np.where(seg % 2 == 0, pos, b2 - 1 - pos)  # mirror
    idx = np.where(kind2 == KIND_CODE["periodic"], pos, idx)
    idx = np.where(kind2 == KIND_CODE["repeated"], col // k2, idx)
    strings = np.take_along_axis(base[rest], np.minimum(idx, base.shape[1] - 1), axis=1)
    out[rest] = strings * (col < length[rest])
    return out


def draw_strings(
    rng: np.random.Generator,
    kind: np.ndarray,
    k: np.ndarray,
    lo: int,
    hi: int,
    n_letters: int,
    letter0: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one string per row for the given kinds and copy counts.

    Returns ``(strings (m, hi) uint8, lengths (m,) int32)``. The caller has checked that every
    ``k`` admits a base length (``base_lengths`` is non-empty).
    """
    m = len(kind)
    k64 = k.astype(np.int64)
    b_lo = np.maximum(1, -(-lo // k64))
    b_hi = hi // k64
    b = rng.integers(b_lo, b_hi + 1) if m else np.zeros(0, dtype=np.int64)
    base = rng.integers(letter0, letter0 + n_letters, size=(m, hi), dtype=np.uint8)
    strings = expand(kind, k, base, b, hi)
    return strings, (k64 * b).astype(np.int32)
