"""What a Ray cluster can give trials: the node types its autoscaler may add, and GPU memory.

Two facts the service's admission check and the sweep driver's GPU packing need, read from the
cluster rather than typed in by hand:

- **Node types** come from the cluster config the autoscaler itself runs with: ``ray up``
  copies it to the head as ``~/ray_bootstrap_config.yaml`` and starts the head with
  ``--autoscaling-config`` pointing at it (Ray Tune detects a ``ray up`` cluster by that same
  file). Each entry of its ``available_node_types`` names the resources one node of the type
  has and how many the autoscaler may start (``max_workers``). Ray's own state has no such
  list: its load report describes live nodes only, and the GCS ``ClusterConfig`` key
  (`ray._private.state.GlobalState.get_cluster_config`) is empty unless an autoscaler reports
  one, which Ray 2.60's cluster launcher does not.
- **GPU memory** comes from the ``accelerator_type:<name>`` resource Ray gives every node
  with a GPU (detected from the GPU's name, e.g. ``accelerator_type:H100``), or that a node
  type declares; `GPU_MEMORY_GB` maps the names to a GPU's memory.

Example::

    >>> types = node_types_from_config({"available_node_types": {
    ...     "head": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
    ...     "h100": {"resources": {"CPU": 24, "GPU": 1, "accelerator_type:H100": 1},
    ...              "node_config": {}, "max_workers": 4}}, "head_node_type": "head"})
    >>> [(t.name, t.max_workers, t.gpu_memory_gb) for t in types]
    [('h100', 4, 80.0)]
    >>> a10g = {"CPU": 8, "GPU": 1, "accelerator_type:A10G": 1}
    >>> smallest_gpu_gb([a10g, *[t.resources for t in types]])
    24.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

#: Where ``ray up`` puts the cluster config on the head (and what the autoscaler reads).
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")

#: Memory of one GPU, GB, by Ray's accelerator type (`ray.util.accelerators`). Ray names both
#: A100 sizes "A100" unless told otherwise, so it reads as the smaller one.
GPU_MEMORY_GB: dict[str, float] = {
    "T4": 16.0,
    "V100": 16.0,
    "P100": 16.0,
    "A10G": 24.0,
    "L4": 24.0,
    "L40S": 48.0,
    "A100": 40.0,
    "A100-40G": 40.0,
    "A100-80G": 80.0,
    "H100": 80.0,
    "H20": 96.0,
    "H200": 141.0,
    "B200": 180.0,
    "RTX-PRO-6000": 96.0,
}
_ACCEL = "accelerator_type:"


class ClusterConfigError(ValueError):
    """The cluster config cannot be read as a Ray cluster-launcher config."""


@dataclass(frozen=True)
class NodeType:
    """One node type the autoscaler may add: its name, one node's resources, how many."""

    name: str
    resources: dict[str, float] = field(default_factory=dict)
    max_workers: int = 1

    @property
    def gpu_memory_gb(self) -> float | None:
        return gpu_memory_gb(self.resources)


def gpu_memory_gb(resources: Mapping[str, float]) -> float | None:
    """The memory of one GPU of a node with these Ray resources, or None when unknown."""
    if not resources.get("GPU"):
        return None
    names = [k[len(_ACCEL) :] for k in resources if k.startswith(_ACCEL)]
    known = [GPU_MEMORY_GB[n] for n in names if n in GPU_MEMORY_GB]
    if names and not known:
        log.info("no GPU memory known for accelerator type(s) %s", names)
    return min(known) if known else None


def smallest_gpu_gb(nodes: Iterable[Mapping[str, float]]) -> float | None:
    """The smallest known GPU among ``nodes`` (a trial may land on any of them), or None."""
    sizes = [g for g in (gpu_memory_gb(n) for n in nodes) if g is not None]
    return min(sizes) if sizes else None


def node_types_from_config(config: Mapping[str, Any]) -> list[NodeType]:
    """The worker node types of a cluster-launcher config (``available_node_types``) that the
    autoscaler may start (``max_workers`` > 0), each with its declared ``resources``.

    A type that leaves its ``resources`` empty relies on the cloud provider's detection, which
    needs the provider's API; it is left out with a warning (state them, as cluster.yaml does).
    """
    types = config.get("available_node_types")
    if not isinstance(types, Mapping):
        raise ClusterConfigError("available_node_types: missing, or not a mapping of node types")
    out = []
    for name, spec in types.items():
        if not isinstance(spec, Mapping):
            raise ClusterConfigError(f"available_node_types.{name}: not a mapping")
        count = int(spec.get("max_workers", config.get("max_workers", 0)) or 0)
        if name == config.get("head_node_type") or count <= 0:
            continue
        resources = {str(k): float(v) for k, v in (spec.get("resources") or {}).items()}
        if not resources:
            log.warning(
                "node type %s declares no resources; the service cannot tell what it offers",
                name,
            )
            continue
        out.append(NodeType(str(name), resources, count))
    return out


def load_node_types(path: str | Path) -> list[NodeType]:
    """`node_types_from_config` of the YAML (or JSON) file at ``path``."""
    path = Path(path).expanduser()
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClusterConfigError(f"cluster config {path}: {e}") from e
    if not isinstance(config, Mapping):
        raise ClusterConfigError(f"cluster config {path}: not a mapping")
    return node_types_from_config(config)
