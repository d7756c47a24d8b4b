"""Refusing at the door what the cluster can never run: resources no node has, memory no node has.

Ray queues a trial whose request fits no node *forever* (an "infeasible" demand): the experiment
would sit in ``pending`` while nothing happens. So before anything is recorded or submitted, the
service compares each trial's request with the nodes that exist (Ray's own list, over the
dashboard's state API) and, on an autoscaling cluster, the node types it may add (the operator's
``DIVSWEEP_NODE_TYPES``). A node is a mapping of Ray resource names to amounts, as Ray reports
them: ``{"CPU": 2.0, "GPU": 1.0, "memory": 23990022144.0}``. Example::

    >>> from sweeps.specs.presets import load_preset
    >>> from sweeps.specs.spec import Resources
    >>> nodes = [{"CPU": 2.0, "memory": 24e9}]
    >>> check_feasible(load_preset("fig2a-mini"), None, nodes)        # 1 CPU a trial: fine
    >>> spec = load_preset("fig2a-mini").model_copy(
    ...     update={"resources": Resources(cpus=4)})
    >>> check_feasible(spec, None, nodes)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    service.errors.SpecValidationError: resources.cpus: each trial asks for 4 CPUs, but the ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from service.errors import FieldError, PayloadTooLargeError, SpecValidationError
from sweeps.specs.limits import TrialSizes
from sweeps.specs.spec import ExperimentSpec

Node = Mapping[str, float]
GiB = 1024**3


def _refuse(field: str, msg: str) -> SpecValidationError:
    return SpecValidationError(f"{field}: {msg}", [FieldError(field, msg, "infeasible")])


def check_feasible(
    spec: ExperimentSpec,
    sizes: TrialSizes | None,
    live: Sequence[Node],
    node_types: Sequence[Node] = (),
) -> None:
    """Raise unless one node (live, or a type the autoscaler may add) can run any trial.

    422 naming ``resources.cpus``, ``resources.gpu`` or ``train.device`` when no node has the
    CPUs, GPUs or the CUDA device a trial asks for; 413 naming the term that dominates when a
    CPU trial's memory estimate (`sweeps.specs.limits.memory_bound`) exceeds every node's memory.
    """
    nodes = [*live, *node_types]
    where = f"nodes: {len(live)} live, {len(node_types)} types the autoscaler may add"
    res = spec.resources
    cpus = res.cpus
    gpu = res.gpu
    wants_cuda = spec.train.device.startswith("cuda")
    if wants_cuda and gpu == 0:
        raise _refuse(
            "train.device",
            f"device {spec.train.device!r} needs a GPU, but "
            "resources.gpu is 0, so Ray gives the trial none; set resources.gpu",
        )
    gpu_need = 1e-9 if gpu == "auto" else float(gpu)
    max_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    max_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    if cpus > max_cpu:
        raise _refuse(
            "resources.cpus",
            f"each trial asks for {cpus:g} CPUs, but the largest node has {max_cpu:g} ({where})",
        )
    if gpu_need > 0 and gpu_need > max_gpu:
        field = "train.device" if wants_cuda and gpu == "auto" else "resources.gpu"
        has = f"the largest node has {max_gpu:g}" if max_gpu else "no node has a GPU"
        raise _refuse(field, f"each trial asks for {gpu} GPU, but {has} ({where})")
    if not any(n.get("CPU", 0.0) >= cpus and n.get("GPU", 0.0) >= gpu_need for n in nodes):
        raise _refuse(
            "resources.cpus", f"no single node has both {cpus:g} CPUs and {gpu} GPU ({where})"
        )
    if sizes is None or sizes.memory_bytes is None or gpu_need > 0:
        return  # GPU trials keep the model on the GPU: `gpu: auto` sizes that share itself
    max_mem = max((n.get("memory", 0.0) for n in nodes if n.get("CPU", 0.0) >= cpus), default=0.0)
    if max_mem and sizes.memory_bytes > max_mem:
        field = max(sizes.memory_parts, key=lambda k: sizes.memory_parts[k])
        parts = ", ".join(f"{k} {v / GiB:.1f}" for k, v in sizes.memory_parts.items())
        msg = (
            f"one trial needs about {sizes.memory_bytes / GiB:.1f} GiB ({parts} GiB), but "
            f"the largest node offers {max_mem / GiB:.1f} GiB ({where})"
        )
        raise PayloadTooLargeError(f"{field}: {msg}", [FieldError(field, msg, "quota")])
