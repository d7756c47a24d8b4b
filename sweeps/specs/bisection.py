"""The arithmetic of a threshold search's bisection on a log scale, without Ray or a spec.

`sweeps.running.threshold` probes midpoints; the spec bounds its trial count by `max_probes`, which
follows the same bisection. Both live here so neither borrows from the other.

>>> midpoint(16, 1024, integer=True)
128
>>> max_probes(5, 5000, 1.25, integer=True)
8
"""

from __future__ import annotations

import math


def midpoint(low: float, high: float, integer: bool) -> float | int | None:
    """The log-scale midpoint strictly inside ``(low, high)``, or None when there is none."""
    mid = math.sqrt(low * high)
    if not integer:
        return mid if low < mid < high else None
    m = round(mid)
    m = min(max(m, math.floor(low) + 1), math.ceil(high) - 1)
    return m if low < m < high else None


def max_probes(low: float, high: float, resolution: float, integer: bool) -> int:
    """An upper bound on the number of probed values: both ends, then the longest bisection.

    Rounded integer midpoints split a bracket unevenly, so every bracket the bisection can
    reach is followed: ``low=5, high=5000, resolution=1.25`` can take 8 probes, one more
    than exact halving (``2 + ceil(log2(log(1000) / log(1.25)))``). Past 4096 brackets at
    one depth (a very fine resolution) it adds that one probe of slack instead.
    """
    if not integer:  # both halves have the same ratio; a hair of slack for rounding
        ratio, steps = high / low, 0
        while ratio > resolution * (1 - 1e-9):
            ratio, steps = math.sqrt(ratio), steps + 1
        return 2 + steps
    brackets, steps = {(round(low), round(high))}, 0
    while brackets:
        if len(brackets) > 4096:
            worst = max(h / lo for lo, h in brackets)
            halvings = math.log(worst) / math.log(resolution)
            return 2 + steps + math.ceil(math.log2(max(halvings, 1.0))) + 1
        deeper = set()
        for lo, h in brackets:
            mid = midpoint(lo, h, True)
            if mid is not None and h / lo > resolution:
                deeper |= {(lo, int(mid)), (int(mid), h)}
        if deeper:
            steps += 1
        brackets = deeper
    return 2 + steps
