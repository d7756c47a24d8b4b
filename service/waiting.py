"""Why an experiment is not moving: Ray's own view of queued and infeasible resource demands.

`service.capacity` refuses at the door what no node can ever run, but an admitted experiment can
still wait: other experiments hold the CPUs, a GPU node died, the autoscaler cannot launch the
node type it needs. Ray then queues the trials' placement groups without a word to the
experiment. So once an experiment has had no running trial for `Settings.resource_wait_s`
seconds, its status carries a ``waiting`` object read from Ray's cluster status
(``GET /api/cluster_status`` on the dashboard): each queued demand (a task's or a placement
group's bundle, and how many), whether any node or node type could ever hold it, and the
cluster's usage.

Ray does not say which job a demand belongs to, so the report names the experiment's own
per-trial request next to the demands and marks those of the same shape. Example::

    >>> view = parse_cluster_status({"clusterStatus": {"loadMetricsReport": {
    ...     "usage": {"CPU": [2.0, 2.0]},
    ...     "resourceDemand": [[{"CPU": 4.0}, 1]],
    ...     "pgDemand": [[{"bundles": [[{"CPU": 1.0}, 1]], "strategy": "PACK"}, 3]],
    ...     "nodeTypes": [[{"CPU": 2.0, "memory": 8e9}, 1]]}}})
    >>> [(d.kind, d.resources, d.count, d.infeasible) for d in view.demands]
    [('task', {'CPU': 4.0}, 1, True), ('placement_group', {'CPU': 1.0}, 3, False)]
    >>> print(describe_wait({"CPU": 1.0}, 300.0, view))  # doctest: +ELLIPSIS
    no trial has run for 300 s: Ray queues 3 placement groups of {CPU: 1} (the shape of ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweeps.running.cluster import NodeType

#: Resource names that are bookkeeping, not capacity (node ids, the head marker).
_IGNORED = ("node:", "accelerator_type:")


@dataclass(frozen=True)
class Demand:
    """One queued request shape as Ray reports it: ``count`` bundles of ``resources``."""

    kind: str  # "task" or "placement_group"
    resources: dict[str, float]
    count: int
    infeasible: bool  # no live node and no node type the autoscaler may add can hold it


@dataclass(frozen=True)
class ClusterView:
    """What Ray's cluster status says about queued work and capacity."""

    demands: tuple[Demand, ...] = ()
    #: resource name -> (used, total) over the live nodes
    usage: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the autoscaler's error text, if it reports one
    autoscaler_error: str | None = None
    #: the resources of each shape of live node Ray reports
    live: tuple[dict[str, float], ...] = ()


def _shape(raw: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in raw.items() if not str(k).startswith(_IGNORED)}


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in bundle.items() if v > 0)


def parse_cluster_status(
    data: Mapping[str, Any], node_types: Sequence[Mapping[str, float]] = ()
) -> ClusterView:
    """The ``data`` member of ``/api/cluster_status`` (Ray 2.x, legacy load-metrics report) as a
    :class:`ClusterView`; ``node_types`` are the operator's extra types (`Settings.node_types`).

    A field Ray leaves out reads as empty: an unknown report never invents a demand.
    """
    status = data.get("clusterStatus") or {}
    report = status.get("loadMetricsReport") or {}
    live = [_shape(n) for n, _count in report.get("nodeTypes") or []]
    nodes = live + [dict(n) for n in node_types]

    def demand(kind: str, bundle: Mapping[str, Any], count: int) -> Demand:
        shape = _shape(bundle)
        return Demand(kind, shape, int(count), not any(_fits(shape, n) for n in nodes))

    demands = [demand("task", b, n) for b, n in report.get("resourceDemand") or []]
    for pg, n in report.get("pgDemand") or []:
        for bundle, per_pg in pg.get("bundles") or []:
            demands.append(demand("placement_group", bundle, int(n) * int(per_pg)))
    usage = {
        str(k): (float(v[0]), float(v[1]))
        for k, v in (report.get("usage") or {}).items()
        if not str(k).startswith(_IGNORED) and k in ("CPU", "GPU", "memory")
    }
    error = data.get("autoscalingError")
    return ClusterView(tuple(demands), usage, str(error) if error else None, tuple(live))


def _fmt(bundle: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items())) + "}"


def _usage(usage: Mapping[str, tuple[float, float]]) -> str:
    parts = []
    for k in ("CPU", "GPU"):
        if k in usage:
            parts.append(f"{k} {usage[k][0]:g}/{usage[k][1]:g}")
    if not parts and usage:  # Ray reports no CPU or GPU at all: a head started with 0 of each
        return "no CPU or GPU (live nodes have none)"
    return ", ".join(parts) or "unknown"


def own_demands(
    view: ClusterView, request: Mapping[str, float], gpu_auto: bool = False
) -> list[Demand]:
    """The demands of the experiment's trial shape ``request`` (``{"CPU": 1.0, "GPU": 0.5}``).

    With ``gpu_auto`` the driver picks the GPU share at run time, so any GPU amount matches.
    """
    want = {k: v for k, v in request.items() if v}

    def same(d: Demand) -> bool:
        got = dict(d.resources)
        if gpu_auto and got.get("GPU", 0.0) > 0:
            got["GPU"] = want.get("GPU", 0.0)
        return {k: v for k, v in got.items() if v} == want

    return [d for d in view.demands if same(d)]


def _autoscaler_types(
    request: Mapping[str, float], view: ClusterView, node_types: Sequence[NodeType]
) -> list[NodeType]:
    """The node types that could hold ``request`` when no live node can (else none)."""
    want = {k: (1e-9 if k == "GPU" else v) for k, v in request.items() if v}
    if any(_fits(want, n) for n in view.live):
        return []
    return [t for t in node_types if _fits(want, t.resources)]


def describe_wait(
    request: Mapping[str, float],
    seconds: float,
    view: ClusterView | None,
    gpu_auto: bool = False,
    node_types: Sequence[NodeType] = (),
) -> str:
    """One sentence on why the experiment waits and what would end it (for ``waiting.detail``).

    ``request`` is one trial's bundle (``{"CPU": 1.0, "GPU": 0.5}``); ``node_types`` are those
    the autoscaler may add (`service.capacity.NodeTypes`): when only they can hold a trial, the
    sentence says the experiment waits for the autoscaler, and for which type.
    """
    head = f"no trial has run for {seconds:.0f} s"
    if view is None:
        return (
            f"{head}, and Ray's cluster status is unavailable; see the Ray dashboard's "
            "cluster page and the job's logs"
        )
    ours = own_demands(view, request, gpu_auto)
    stuck = [d for d in ours if d.infeasible]
    if stuck:
        return (
            f"{head}: Ray cannot place a trial's request {_fmt(request)}: no live node and "
            "no node type the autoscaler may add has it. Cancel and resubmit with smaller "
            "resources, or add such a node"
        )
    scale = _autoscaler_types(request, view, node_types)
    grows = (
        "No live node can hold one: they wait for the autoscaler to add a node of type "
        + " or ".join(f"{t.name} (up to {t.max_workers})" for t in scale)
        if scale
        else "They start when running work frees resources or the autoscaler adds a node"
    )
    if ours:
        n = sum(d.count for d in ours)
        kinds = {d.kind for d in ours}
        what = "placement groups" if kinds == {"placement_group"} else "requests"
        others = sum(d.count for d in view.demands) - n
        more = f" and {others} other queued request(s)" if others else ""
        return (
            f"{head}: Ray queues {n} {what} of {_fmt(request)} (the shape of this "
            f"experiment's trials){more}; the cluster uses {_usage(view.usage)}. {grows}"
        )
    if view.demands:
        n = sum(d.count for d in view.demands)
        return (
            f"{head}: Ray queues {n} request(s), none of this experiment's shape "
            f"{_fmt(request)}; the cluster uses {_usage(view.usage)}"
        )
    return (
        f"{head}, and Ray reports no queued request: the sweep's driver may still be "
        "starting (runtime environment set-up); see the Ray job's logs"
    )


class Stalls:
    """When each experiment was first seen without a running trial, shared by the app's requests.

    Per process, like the resubmission count: after a restart the clock starts again, so a
    report can come late but never early.
    """

    def __init__(self) -> None:
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, exp_id: str, stalled: bool, now: float | None = None) -> float | None:
        """Record one observation; the time the current stall began, or None when moving."""
        with self._lock:
            if not stalled:
                self._since.pop(exp_id, None)
                return None
            return self._since.setdefault(exp_id, time.time() if now is None else now)
