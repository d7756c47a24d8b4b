"""Drawing inputs ``z`` for rules: planting ``x`` a given number of times, or avoiding it.

For a has-op example with ``c`` occurrences the length of ``z`` is uniform on
``[max(z_min, c*len(x)), z_max]``; ``z`` is random filler with ``x`` written at ``c`` random
non-overlapping positions. For a no-op example (``c = 0``) ``z`` is random filler. Either way the
*true* count ``z.count(x)`` must equal ``c``, otherwise the row is drawn again.

The check is vectorised: a position is a *candidate* when the first ``PREFIX`` (3) letters of
``x`` sit there and ``x`` would fit. True occurrences ⊆ candidates and planted ⊆ true
occurrences, so when a row has exactly ``c`` candidates its occurrences are exactly the planted
ones (count ``c``, leftmost = first planted start). For rows with extra candidates, ``x`` is
compared in full at each unplanted candidate; if none matches, the occurrences are again exactly
the planted ones. Only rows with an unplanted true occurrence (overlapping or accidental copies)
are decided by ``bytes.count``/``bytes.find``, which is exact.

Worked example (x=``ab``, c=1, z length 6): filler ``qzkwtr``, planted start 3 → ``qzkabr``;
the candidates of ``ab`` are {3}, one = c, so the row is kept with leftmost occurrence 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.errors import SpecError

MAX_ROUNDS = 10_000
#: Letters of x compared when looking for candidates; 3 leaves ~1 % of rows to bytes.count.
PREFIX = 3


@dataclass(frozen=True)
class Inputs:
    """Inputs of ``n`` examples: ``z`` (n, z_max) uint8 0-padded, its length and leftmost match."""

    z: np.ndarray
    z_len: np.ndarray  # (n,) int32
    first: np.ndarray  # (n,) int32 leftmost occurrence of x; == z_len for no-ops


def draw_inputs(
    rng: np.random.Generator,
    x: np.ndarray,
    x_len: np.ndarray,
    counts: np.ndarray,
    z_range: tuple[int, int],
    n_letters: int,
    letter0: int,
) -> Inputs:
    """Draw ``z`` for each row so that ``z.count(x) == counts`` exactly.

    ``x``: (n, x_max) uint8 token ids of each row's rule; ``counts``: (n,) wanted counts
    (0 = no-op). Rows that fail are redrawn in vectorised rounds.
    """
    n = len(counts)
    z_lo, z_hi = z_range
    z = np.zeros((0, z_hi), dtype=np.uint8)
    z_len = np.zeros(n, dtype=np.int32)
    first = np.zeros(n, dtype=np.int32)
    todo = np.arange(n)
    cols = np.arange(z_hi, dtype=np.int32)[None, :]
    for round_ in range(MAX_ROUNDS):
        if len(todo) == 0:
            return Inputs(z, z_len, first)
        # Round 0 covers every row in order, so its matrix becomes ``z`` without a copy.
        xr = x if round_ == 0 else x[todo]
        lx = x_len[todo].astype(np.int64)
        c = counts[todo].astype(np.int64)
        length = rng.integers(np.maximum(z_lo, c * lx), z_hi + 1)
        zr = rng.integers(letter0, letter0 + n_letters, size=(len(todo), z_hi), dtype=np.uint8)
        zr *= cols < length[:, None]  # zero (pad) past the end of each z
        starts = _plant(rng, zr, xr, lx, c, length)
        ok, left = _check(zr, xr, lx, c, length, starts, cols)
        if round_ == 0:
            z = zr
        else:
            z[todo[ok]] = zr[ok]
        z_len[todo[ok]], first[todo[ok]] = length[ok], left[ok]
        todo = todo[~ok]
    left = counts[todo]
    fields = tuple(
        f
        for f, bad in (("noop_fraction", (left == 0).any()), ("occurrences", (left > 0).any()))
        if bad
    )
    raise SpecError(
        f"{'/'.join(fields)}: could not draw z for {len(todo)} examples in {MAX_ROUNDS} rounds: "
        "with these lengths and this alphabet a random z (almost) always contains x more or "
        "fewer times than asked (e.g. a one-letter x over a tiny alphabet is hard to avoid)",
        fields,
    )


def _plant(
    rng: np.random.Generator,
    zr: np.ndarray,
    xr: np.ndarray,
    lx: np.ndarray,
    c: np.ndarray,
    length: np.ndarray,
) -> np.ndarray:
    """Write x at c random non-overlapping starts per row (in place).

    Returns the (r, max(c)) starts, row by row ascending, with -1 past each row's ``c``.
    """
    r = len(c)
    c_max = int(c.max()) if r else 0
    if c_max == 0:
        return np.full((r, 0), -1, dtype=np.int64)
    free = length - c * lx  # filler letters left around the copies
    gaps = rng.integers(0, free[:, None] + 1, size=(r, c_max))
    valid = np.arange(c_max)[None, :] < c[:, None]
    gaps = np.where(valid, gaps, np.iinfo(np.int64).max // 2)
    gaps.sort(axis=1)
    # copy j starts after j earlier copies and gaps[j] filler letters: non-overlapping by design
    starts = gaps + np.arange(c_max)[None, :] * lx[:, None]
    # Scatter every planted letter at once: (row, copy) pairs in row order, then their letters.
    width = zr.shape[1]
    dest = (np.arange(r, dtype=np.int64)[:, None] * width + starts)[valid]
    copy_row = np.repeat(np.arange(r), c)
    copy_len = lx[copy_row]
    ends = np.cumsum(copy_len)
    within = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - copy_len, copy_len)
    letters = xr if c_max == 1 and len(copy_row) == r else xr[copy_row]
    zr.reshape(-1)[np.repeat(dest, copy_len) + within] = letters[letters != 0]
    return np.where(valid, starts, -1)


def _check(
    zr: np.ndarray,
    xr: np.ndarray,
    lx: np.ndarray,
    c: np.ndarray,
    length: np.ndarray,
    starts: np.ndarray,
    cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(ok, leftmost) per row: ok iff ``z.count(x) == c`` (see module docstring)."""
    cand = zr == xr[:, :1]
    width = zr.shape[1]
    for j in range(1, min(PREFIX, xr.shape[1])):
        # letter j of x must follow; rows whose x is shorter than j+1 letters skip the test.
        # Positions past width-j are only candidates for such short x, so they stay as they are.
        cand[:, : width - j] &= (zr[:, j:] == xr[:, j : j + 1]) | (lx <= j)[:, None]
    cand &= cols <= (length - lx)[:, None]
    ok = np.count_nonzero(cand, axis=1) == c
    left = np.where(c > 0, starts[:, 0] if starts.shape[1] else 0, length).astype(np.int32)
    unsure = np.flatnonzero(~ok)
    if len(unsure) == 0:
        return ok, left
    # Rows with extra candidates: compare x in full at each candidate that is not planted
    # (self-similar x such as "aaaabbbb" always give extras, but rarely a true match).
    extra = cand[unsure]
    st = starts[unsure]
    planted = st >= 0
    row_base = np.arange(len(unsure), dtype=np.int64)[:, None] * width
    extra.reshape(-1)[(row_base + st)[planted]] = False
    ri, pos = np.nonzero(extra)
    rows = unsure[ri]
    span = np.arange(xr.shape[1])[None, :]
    window = zr[rows[:, None], np.minimum(pos[:, None] + span, width - 1)]
    full = ((window == xr[rows]) | (span >= lx[rows][:, None])).all(axis=1)
    exact = np.unique(rows[full])  # rows with an unplanted true occurrence: decide by bytes
    ok[unsure] = True
    ok[exact] = False
    for i in exact.tolist():
        zb = zr[i, : length[i]].tobytes()
        xb = xr[i, : lx[i]].tobytes()
        if zb.count(xb) == c[i]:
            ok[i] = True
            left[i] = zb.find(xb) if c[i] else length[i]
    return ok, left
