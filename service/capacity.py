"""Refusing at the door what the cluster can never run: resources no node has, memory no node has.

Ray queues a trial whose request fits no node *forever* (an "infeasible" demand): the experiment
would sit in ``pending`` while nothing happens. So before anything is recorded or submitted, the
service compares each trial's request with the nodes that exist (Ray's own list, over the
dashboard's state API) and, on an autoscaling cluster, the node types it may add: those of the
cluster config the autoscaler runs with (`NodeTypes`: ``~/ray_bootstrap_config.yaml`` where
``ray up`` put it, or ``DIVSWEEP_CLUSTER_CONFIG``), or the operator's ``DIVSWEEP_NODE_TYPES``
override. A spec only a node type can run is admitted and waits for the autoscaler
(`Placement`). A node is a mapping of Ray resource names to amounts, as Ray reports
them: ``{"CPU": 2.0, "GPU": 1.0, "memory": 23990022144.0}``. Example::

    >>> from sweeps.specs.presets import load_preset
    >>> from sweeps.specs.spec import Resources
    >>> nodes = [{"CPU": 2.0, "memory": 24e9}]
    >>> check_feasible(load_preset("fig2a-mini"), None, nodes).detail  # 1 CPU a trial: fine
    'a live node can run a trial now'
    >>> spec = load_preset("fig2a-mini").model_copy(
    ...     update={"resources": Resources(cpus=4)})
    >>> check_feasible(spec, None, nodes)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    service.errors.SpecValidationError: resources.cpus: each trial asks for 4 CPUs, but the ...
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.errors import FieldError, PayloadTooLargeError, SpecValidationError
from sweeps.running.cluster import ClusterConfigError, NodeType, load_node_types
from sweeps.specs.limits import TrialSizes
from sweeps.specs.spec import ExperimentSpec

log = logging.getLogger(__name__)

Node = Mapping[str, float]
GiB = 1024**3


def _refuse(field: str, msg: str) -> SpecValidationError:
    return SpecValidationError(f"{field}: {msg}", [FieldError(field, msg, "infeasible")])


@dataclass(frozen=True)
class Placement:
    """Where a trial of an admitted spec can run: a live node now, or only on a node type the
    autoscaler may add (``waits_for``: those types' names). ``checked`` is False when Ray did
    not list its nodes, so only the checks that need no node ran (`check_spec`)."""

    checked: bool
    waits_for: tuple[str, ...] = ()
    detail: str = ""


def check_spec(spec: ExperimentSpec) -> None:
    """The checks that need no node list, so they run even when Ray does not answer: a CUDA
    device with no GPU share (Ray would hide every GPU from the trial)."""
    if spec.train.device.startswith("cuda") and spec.resources.gpu == 0:
        raise _refuse(
            "train.device",
            f"device {spec.train.device!r} needs a GPU, but "
            "resources.gpu is 0, so Ray gives the trial none; set resources.gpu",
        )


def _fits(node: Node, cpus: float, gpu_need: float) -> bool:
    return node.get("CPU", 0.0) >= cpus and node.get("GPU", 0.0) >= gpu_need


def check_feasible(
    spec: ExperimentSpec,
    sizes: TrialSizes | None,
    live: Sequence[Node],
    node_types: Sequence[NodeType] = (),
) -> Placement:
    """Raise unless one node (live, or a type the autoscaler may add) can run any trial;
    return where trials can run (a live node, or only once the autoscaler adds a node).

    422 naming ``resources.cpus``, ``resources.gpu`` or ``train.device`` when no node has the
    CPUs, GPUs or the CUDA device a trial asks for; 413 naming the term that dominates when a
    CPU trial's memory estimate (`sweeps.specs.limits.memory_bound`) exceeds every node's memory.
    """
    check_spec(spec)
    nodes = [*live, *(t.resources for t in node_types)]
    where = f"nodes: {len(live)} live, {len(node_types)} types the autoscaler may add"
    res = spec.resources
    cpus = res.cpus
    gpu = res.gpu
    wants_cuda = spec.train.device.startswith("cuda")
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
    if not any(_fits(n, cpus, gpu_need) for n in nodes):
        raise _refuse(
            "resources.cpus", f"no single node has both {cpus:g} CPUs and {gpu} GPU ({where})"
        )
    if sizes is not None and sizes.memory_bytes is not None and gpu_need == 0:
        # GPU trials keep the model on the GPU: `gpu: auto` sizes that share itself
        _check_memory(sizes, nodes, cpus, where)
    if any(_fits(n, cpus, gpu_need) for n in live):
        return Placement(True, (), "a live node can run a trial now")
    names = tuple(t.name for t in node_types if _fits(t.resources, cpus, gpu_need))
    return Placement(
        True,
        names,
        f"no live node can run a trial ({where}); it waits for the autoscaler to add a "
        f"node of type {' or '.join(names)}",
    )


def _check_memory(sizes: TrialSizes, nodes: Sequence[Node], cpus: float, where: str) -> None:
    assert sizes.memory_bytes is not None  # the caller checked
    max_mem = max((n.get("memory", 0.0) for n in nodes if n.get("CPU", 0.0) >= cpus), default=0.0)
    if max_mem and sizes.memory_bytes > max_mem:
        field = max(sizes.memory_parts, key=lambda k: sizes.memory_parts[k])
        parts = ", ".join(f"{k} {v / GiB:.1f}" for k, v in sizes.memory_parts.items())
        msg = (
            f"one trial needs about {sizes.memory_bytes / GiB:.1f} GiB ({parts} GiB), but "
            f"the largest node offers {max_mem / GiB:.1f} GiB ({where})"
        )
        raise PayloadTooLargeError(f"{field}: {msg}", [FieldError(field, msg, "quota")])


def operator_node_types(raw: Sequence[Mapping[str, float]]) -> list[NodeType]:
    """``DIVSWEEP_NODE_TYPES`` (resource mappings) as node types named by their position."""
    return [NodeType(f"DIVSWEEP_NODE_TYPES[{i}]", dict(r)) for i, r in enumerate(raw)]


class NodeTypes:
    """The node types the autoscaler may add, read again when their source changes.

    ``DIVSWEEP_NODE_TYPES`` (the operator's override) when set; otherwise the cluster config
    the autoscaler runs with (`sweeps.running.cluster`), re-read when the file changes
    (``ray up`` rewrites it on an update); otherwise none.
    """

    def __init__(self, override: Sequence[Mapping[str, float]], config: Path | None) -> None:
        self._override = operator_node_types(override)
        self._config = config.expanduser() if config is not None else None
        self._seen: tuple[float, list[NodeType]] | None = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        if self._override:
            return "DIVSWEEP_NODE_TYPES"
        return str(self._config) if self._config is not None else "none"

    def get(self) -> list[NodeType]:
        if self._override or self._config is None:
            return list(self._override)
        try:
            mtime = self._config.stat().st_mtime
        except OSError:
            return []  # no cluster config: a fixed cluster, nothing to add
        with self._lock:
            if self._seen is None or self._seen[0] != mtime:
                try:
                    types = load_node_types(self._config)
                except ClusterConfigError as e:
                    log.warning("node types unknown: %s", e)
                    types = []
                self._seen = (mtime, types)
            return list(self._seen[1])
