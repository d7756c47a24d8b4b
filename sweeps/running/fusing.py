"""Fused trials: which trials of a grid train together as one model, and how many at once.

A grid of small models (Fig. 2a: 16 cells of ~5 M parameters) leaves a GPU mostly idle when
each trial is its own process, and processes sharing a GPU without NVIDIA MPS take turns on it.
`trainer.fused` trains K compatible trials as one fused model instead; this module decides the
groups before the sweep starts:

1. **compatible** trials are those `trainer.config.fusable` accepts together (the one home of
   the rule): the same train config apart from its seed, the same number of training examples
   (so the same number of steps and evaluation points) and the same vocabulary;
2. the **width** K is ``resources.fuse``, or for ``auto`` the most members that fit one GPU
   (``gpu: auto``: K members need about K times one trial's measured memory, the CUDA context
   once, see `trainer.memory.MemoryEstimate.fused`) and at most `AUTO_MAX`;
3. each compatible set is cut into ``ceil(n / K)`` groups of near-equal size (16 trials at
   K = 10 make two groups of 8, not 10 + 6, so both finish together).

Each group becomes one Tune trial (config ``{"members": [params, ...]}``); its members keep
their own trial keys, store rows, reuse and checkpoints (`sweeps.running.trainable`,
`sweeps.running.callback`). Fusing applies to grid searches under the FIFO scheduler: Optuna and
threshold searches choose one point at a time, and ASHA stops trials one by one.

Example::

    >>> spec = load_preset("fig2a-mini").model_copy(update={"resources": Resources(fuse=4)})
    >>> [len(g) for g in fuse_groups(spec, spec.trials())]         # doctest: +SKIP
    [4, 4, 4, 4]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from sweeps.running.packing import GiB, largest_estimate
from sweeps.specs.spec import ExperimentSpec, TrialPlan
from trainer.config import fusable

log = logging.getLogger(__name__)

#: The widest group ``fuse: auto`` forms (HFTA's gains flatten out past a GPU's worth of work).
AUTO_MAX = 16


def fuse_width(spec: ExperimentSpec) -> int:
    """How many trials one fused trial of ``spec`` may hold (1: fusing is off)."""
    mode = spec.resources.fuse_mode
    if mode == 1:
        return 1
    if spec.search_cannot_fuse() is not None:
        return 1  # an explicit width here is refused by the spec's own validation
    if isinstance(mode, int):
        return mode
    if spec.resources.gpu != "auto":
        return AUTO_MAX
    return _widest_that_fits(spec)


def _widest_that_fits(spec: ExperimentSpec) -> int:
    """The most members (up to `AUTO_MAX`) whose fused estimate fits one GPU with headroom."""
    from trainer.memory import gpu_fraction_for  # imports torch: only ``gpu: auto`` needs it

    gpu_bytes = int(spec.resources.gpu_memory_gb * GiB)
    one = largest_estimate(spec)
    width = 1
    for k in range(2, AUTO_MAX + 1):
        try:
            gpu_fraction_for(one.fused(k), gpu_bytes)
        except ValueError:
            break
        width = k
    log.info("resources.fuse auto: up to %d trials per fused model (%s each)", width, one)
    return width


def compatible_sets(plans: Sequence[TrialPlan]) -> tuple[list[list[TrialPlan]], list[TrialPlan]]:
    """``plans`` as sets of trials that can train fused (`trainer.config.fusable` of their train
    configs and data specs, an equivalence), in order of first appearance, and the trials that
    always run alone."""
    sets: list[list[TrialPlan]] = []
    alone: list[TrialPlan] = []
    for p in plans:
        if fusable([p.train], [p.data]) is not None:
            alone.append(p)
            continue
        for s in sets:
            if fusable([s[0].train, p.train], [s[0].data, p.data]) is None:
                s.append(p)
                break
        else:
            sets.append([p])
    return sets, alone


def fuse_groups(spec: ExperimentSpec, plans: Sequence[TrialPlan]) -> list[list[TrialPlan]]:
    """``plans`` cut into fused groups (see the module docstring): the fused groups in the order
    their first member appears, then the trials that cannot be fused; a group of one is an
    ordinary trial."""
    width = fuse_width(spec)
    if width == 1:
        return [[p] for p in plans]
    sets, alone = compatible_sets(plans)
    groups: list[list[TrialPlan]] = []
    for members in sets:
        n_groups = math.ceil(len(members) / width)
        size, extra = divmod(len(members), n_groups)
        start = 0
        for g in range(n_groups):
            end = start + size + (g < extra)
            groups.append(members[start:end])
            start = end
    log.info(
        "fusing: %d trial(s) in %d fused group(s) of up to %d, %d alone",
        sum(len(g) for g in groups),
        len(groups),
        width,
        len(alone),
    )
    return groups + [[p] for p in alone]
