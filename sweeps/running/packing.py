"""GPU packing: the share of a GPU each trial asks Ray for, from a measured memory estimate.

Small models leave most of a GPU idle, so a study of ``tiny`` models should run several trials
per GPU. With ``resources: {gpu: auto, gpu_memory_gb: 80}`` the driver sizes the share before
the sweep starts:

1. for each distinct (train config, vocabulary, longest sequence) among the spec's trials (grid:
   every cell; threshold: both bracket ends; optuna: the base config), `trainer.memory` measures
   what training needs on CUDA (parameters, gradients, AdamW state, activations saved for
   backward at the worst batch, temporaries, CUDA context);
2. the share is the smallest eighth of the GPU holding the largest of them with 25 % headroom
   (`trainer.memory.gpu_fraction_for`);
3. every trial requests that share from Ray (``tune.with_resources``), and its trainer caps the
   CUDA caching allocator at it (``train(..., gpu_memory_fraction=share)``), so a trial that
   outgrows the estimate fails with an out-of-memory error instead of starving its neighbours.

Example::

    >>> spec = load_preset("fig2a-mini").model_copy(update={"resources": Resources(gpu="auto")})
    >>> gpu_share(spec)                                    # doctest: +SKIP
    0.125
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from data.vocab import Vocab
from sweeps.specs.spec import ExperimentSpec, GridSearch, ThresholdSearch, TrialPlan

if TYPE_CHECKING:
    from trainer.memory import MemoryEstimate

log = logging.getLogger(__name__)

GiB = 1024**3


def trial_memory(plan: TrialPlan) -> MemoryEstimate:
    """The measured CUDA memory estimate of training ``plan`` (cached per distinct shape)."""
    from trainer.memory import estimate_train_memory  # imports torch: only ``gpu: auto`` needs it

    vocab = Vocab.build(plan.data.alphabet, markov=plan.data.markov is not None)
    longest = plan.data.max_seq_len  # an upper bound; Markov bounds can exceed the model's reach
    if not plan.train.pretrained:
        longest = min(longest, plan.train.dims.n_positions)
    return estimate_train_memory(plan.train, vocab.size, longest)


def _sized_plans(spec: ExperimentSpec) -> list[TrialPlan]:
    """Trials that bound the memory of every trial the spec can run."""
    search = spec.search
    if isinstance(search, GridSearch):
        return spec.trials()
    if isinstance(search, ThresholdSearch):
        seed = spec.replicate_seeds[0]
        return [
            spec.plan({search.axis: v, "seed": seed})
            for v in (
                round(search.low) if search.integer else search.low,
                round(search.high) if search.integer else search.high,
            )
        ]
    # Optuna: only the base config is known before the sweep; a space over model size or
    # batch needs an explicit share.
    return spec.trials()[:1]


def largest_estimate(spec: ExperimentSpec) -> MemoryEstimate:
    """The measured estimate of the spec's most memory-hungry trial."""
    return max((trial_memory(p) for p in _sized_plans(spec)), key=lambda e: e.total)


def gpu_share(spec: ExperimentSpec, members: int = 1) -> float:
    """The GPU share per trial: ``resources.gpu`` itself, or for ``auto`` the measured one.

    ``members`` > 1: each Tune trial trains that many fused trials (`sweeps.running.fusing`), and
    its share holds their fused estimate.
    """
    res = spec.resources
    if not isinstance(res.gpu, str):
        return float(res.gpu)
    from trainer.memory import gpu_fraction_for  # imports torch: only ``gpu: auto`` needs it

    gpu_bytes = int(res.gpu_memory_gb * GiB)
    largest = largest_estimate(spec)
    if members > 1:
        largest = largest.fused(members)
    try:
        share = gpu_fraction_for(largest, gpu_bytes)
    except ValueError as e:
        raise ValueError(f"resources.gpu: auto: {e}") from None
    log.info(
        "resources.gpu auto: largest %s needs %s -> %s of a %.0f GB GPU per trial",
        f"group of {members} fused trials" if members > 1 else "trial",
        largest.describe(),
        share,
        res.gpu_memory_gb,
    )
    return share
