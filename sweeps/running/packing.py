"""GPU packing: the share of a GPU each trial asks Ray for, from a measured memory estimate and
the GPUs the cluster has.

Small models leave most of a GPU idle, so a study of ``tiny`` models should run several trials
per GPU. With ``resources: {gpu: auto}`` the driver sizes each Tune trial's request when Tune
creates it (``tune.with_resources`` with `TrialResources`, called with the trial's config):

1. `trainer.memory` measures what the trial needs on CUDA (parameters, gradients, AdamW state,
   activations saved for backward at the worst batch, temporaries, CUDA context), once per
   distinct (train config, vocabulary, longest sequence); a fused group of K trials
   (`sweeps.running.fusing`) needs K members' worth and the CUDA context once
   (`MemoryEstimate.fused`);
2. the GPUs it may land on are read from the cluster (`GpuFleet.read`): Ray's
   ``accelerator_type:<name>`` resource (or ``ray.io/accelerator-type`` label) of every live
   node and of every node type the autoscaler may add, mapped to memory by
   `sweeps.running.cluster.GPU_MEMORY_GB` (``resources.gpu_memory_gb``, when set, overrides
   them: every GPU is taken to be that size; with no GPU of known memory, it must be set);
3. the share is the smallest eighth of the smallest GPU holding the estimate with 25 % headroom
   (`trainer.memory.gpu_fraction_for`). A trial too large for the smallest GPU is sized on the
   smallest one that holds it and pinned to that accelerator type (a sliver of its
   ``accelerator_type:<name>`` resource joins the request), so Ray never puts it on a GPU too
   small for it; where some GPUs' memory is unknown, every trial is pinned to the type it was
   sized on;
4. the trial's trainer caps the CUDA caching allocator at the share Ray gave it
   (`sweeps.running.trainable`), so a trial that outgrows the estimate fails with an
   out-of-memory error instead of starving its neighbours.

So a trial that runs alone asks for its own share and a fused group for the group's, not every
trial for the widest group's.

Example (the fig2a preset, ``resources: {cpus: 2, gpu: auto}``, on cluster.yaml's A10G and
H100 workers: its 16 trials fuse into groups of 7, 7, and two trials that run alone)::

    >>> spec = load_preset("fig2a")
    >>> fleet = GpuFleet.read(spec, [{"GPU": 1, "accelerator_type:A10G": 1},
    ...                              {"GPU": 1, "accelerator_type:H100": 1}])
    >>> fleet.describe()
    'A10G 24 GB, H100 80 GB'
    >>> request = TrialResources(spec, fleet)
    >>> request.request(spec.trials()[:1])          # a trial alone  # doctest: +SKIP
    {'CPU': 2.0, 'GPU': 0.25}
    >>> groups = fuse_groups(spec, spec.trials(), fleet)            # doctest: +SKIP
    >>> [len(g) for g in groups], request.request(groups[0])        # doctest: +SKIP
    ([7, 7, 1, 1], {'CPU': 2.0, 'GPU': 1.0})
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from data.vocab import Vocab
from sweeps.running.cluster import gpu_sizes, unknown_gpus
from sweeps.specs.spec import ExperimentSpec, GridSearch, ThresholdSearch, TrialPlan

if TYPE_CHECKING:
    from ray.tune import PlacementGroupFactory

    from trainer.memory import MemoryEstimate

log = logging.getLogger(__name__)

GiB = 1024**3
#: How much of its ``accelerator_type:<name>`` resource a pinned trial asks for: Ray gives each
#: node 1 of it, so this only selects the node type and never limits how many trials share it.
PIN_AMOUNT = 0.001


def trial_memory(plan: TrialPlan) -> MemoryEstimate:
    """The measured CUDA memory estimate of training ``plan`` (cached per distinct shape)."""
    from trainer.memory import estimate_train_memory  # imports torch: only ``gpu: auto`` needs it

    vocab = Vocab.build(plan.data.alphabet, markov=plan.data.markov is not None)
    longest = plan.data.max_seq_len  # an upper bound; Markov bounds can exceed the model's reach
    if not plan.train.pretrained:
        longest = min(longest, plan.train.dims.n_positions)
    return estimate_train_memory(plan.train, vocab.size, longest)


def group_memory(plans: Sequence[TrialPlan]) -> MemoryEstimate:
    """The estimate of ``plans`` run as one Tune trial: one plan alone, or a fused group."""
    largest = max((trial_memory(p) for p in plans), key=lambda e: e.total)
    return largest.fused(len(plans)) if len(plans) > 1 else largest


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


@dataclass(frozen=True)
class GpuPlace:
    """Where a run fits: its ``share`` of a GPU of ``gb`` GB; ``accelerator`` is the Ray
    accelerator type it must be pinned to (None: every GPU of the cluster holds it)."""

    share: float
    gb: float
    accelerator: str | None = None


@dataclass(frozen=True)
class GpuFleet:
    """The GPUs trials may land on: ``sizes`` are (accelerator type, GB) pairs, smallest first,
    read from the cluster; ``unknown`` names GPU nodes (types) whose memory divsweep does not
    know; ``override`` is ``resources.gpu_memory_gb``: every GPU that size."""

    sizes: tuple[tuple[str, float], ...] = ()
    override: float | None = None
    unknown: tuple[str, ...] = ()

    @classmethod
    def read(cls, spec: ExperimentSpec, nodes: Iterable[Mapping[str, float]]) -> GpuFleet:
        """The fleet for ``spec`` on a cluster of ``nodes`` (Ray resource mappings of the live
        nodes and of the node types the autoscaler may add)."""
        if spec.resources.gpu_memory_gb is not None:
            return cls(override=spec.resources.gpu_memory_gb)
        nodes = list(nodes)
        sizes = tuple(sorted(gpu_sizes(nodes).items(), key=lambda kv: (kv[1], kv[0])))
        return cls(sizes, unknown=tuple(sorted(set(unknown_gpus(nodes)))))

    def describe(self) -> str:
        """``'A10G 24 GB, H100 80 GB'``, or ``'every GPU 24 GB (resources.gpu_memory_gb)'``."""
        if self.override is not None:
            return f"every GPU {self.override:g} GB (resources.gpu_memory_gb)"
        known = [f"{name} {gb:g} GB" for name, gb in self.sizes]
        unknown = [f"{name} of unknown memory" for name in self.unknown]
        return ", ".join(known + unknown) or "no GPU"

    def place(self, estimate: MemoryEstimate) -> GpuPlace:
        """The smallest GPU that holds ``estimate`` with headroom, and the share of it.

        The run is pinned to that GPU's accelerator type when a smaller GPU (or one of unknown
        memory) could otherwise take it. ValueError naming the field when no GPU's memory is
        known or none is large enough.
        """
        from trainer.memory import gpu_fraction_for  # imports torch: only ``gpu: auto`` needs it

        candidates = [("", self.override)] if self.override is not None else list(self.sizes)
        if not candidates:
            raise ValueError(
                f"resources.gpu_memory_gb: the cluster's GPUs ({self.describe()}) come with no "
                "memory divsweep knows (Ray's accelerator_type:<name> resource or "
                "ray.io/accelerator-type label, for a type in "
                "sweeps.running.cluster.GPU_MEMORY_GB), so gpu: auto cannot size the trials; "
                "set resources.gpu_memory_gb"
            )
        error = ""
        for name, gb in candidates:
            try:
                share = gpu_fraction_for(estimate, int(gb * GiB))
            except ValueError as e:
                error = str(e)
                continue
            pin = name if name and (self.unknown or gb > candidates[0][1]) else None
            return GpuPlace(share, gb, pin)
        raise ValueError(f"resources.gpu: auto: {error} (the largest GPU: {self.describe()})")


@dataclass(frozen=True)
class TrialResources:
    """Tune's resource request for each trial of a ``gpu: auto`` spec, from the trial's own
    config: ``tune.with_resources(trainable, TrialResources(spec, fleet))`` (Tune calls it with
    the config when it creates the trial; a fused group's config lists its members)."""

    spec: ExperimentSpec
    fleet: GpuFleet

    def __call__(self, config: Mapping[str, Any]) -> PlacementGroupFactory:
        # Ray Tune: imported on the driver's side only (this module stays light)
        from ray.tune import PlacementGroupFactory

        from sweeps.running.trainable import trial_params

        return PlacementGroupFactory(
            [self.request([self.spec.plan(p) for p in trial_params(config)])]
        )

    def request(self, plans: Sequence[TrialPlan]) -> dict[str, float]:
        """``{"CPU": .., "GPU": share}``, plus ``accelerator_type:<name>`` when pinned."""
        estimate = group_memory(plans)
        place = self.fleet.place(estimate)  # the driver placed the largest trial already
        log.info(
            "resources.gpu auto: %s needs %s -> %s of a %g GB GPU%s",
            f"a group of {len(plans)} fused trials" if len(plans) > 1 else "a trial",
            estimate.describe(),
            place.share,
            place.gb,
            f", pinned to {place.accelerator}" if place.accelerator else "",
        )
        out = {"CPU": float(self.spec.resources.cpus), "GPU": place.share}
        if place.accelerator:
            out[f"accelerator_type:{place.accelerator}"] = PIN_AMOUNT
        return out


def gpu_share(spec: ExperimentSpec, fleet: GpuFleet | None = None, members: int = 1) -> float:
    """The share of the spec's largest trial (or of a fused group of ``members`` of it):
    ``resources.gpu`` itself, or for ``auto`` its place in ``fleet`` (default: the spec's
    ``gpu_memory_gb`` override)."""
    res = spec.resources
    if not isinstance(res.gpu, str):
        return float(res.gpu)
    fleet = fleet or GpuFleet.read(spec, ())
    largest = largest_estimate(spec)
    return fleet.place(largest.fused(members) if members > 1 else largest).share
