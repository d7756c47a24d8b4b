"""GPU packing: ``gpu: auto`` measures the share, Ray packs that many trials on one GPU, and each
trial is told its share (the trainer caps its CUDA memory at it).

Ray's GPU count is a logical resource, so a Ray started with ``num_gpus=1`` on this CPU machine
schedules exactly as it would on a one-GPU node (CUDA is not touched by the fake trials).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import in_process_ray, tiny_spec

from sweeps import spec_from_dict
from sweeps.running import packing
from sweeps.running.driver import run_experiment
from sweeps.running.packing import (
    GpuFleet,
    GpuPlace,
    TrialResources,
    gpu_share,
    group_memory,
    trial_memory,
)
from sweeps.specs.spec import TrialPlan

AXES = [{"field": "data.n_instructions", "values": [4, 8, 12, 16]}]


def record_overlap(
    plan: TrialPlan, report: Any, checkpoint_dir: str, cache_dir: str, *, out: str
) -> None:
    """Holds its slot for 3 s and records when, with which share and GPU ids."""
    import ray

    start = time.time()
    time.sleep(3.0)
    with open(os.path.join(out, f"{plan.data.n_instructions}.json"), "w") as f:
        json.dump(
            {
                "start": start,
                "end": time.time(),
                "share": plan.gpu_share,
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            },
            f,
        )
    report({"step": 1, "test_acc": 0.0}, None)


@pytest.fixture(scope="module")
def one_gpu_ray() -> Iterator[None]:
    # The one GPU names its type the way Ray does on a real node: 80 GB, read, not assumed
    h100 = {"accelerator_type:H100": 1.0}
    with in_process_ray(num_cpus=4, num_gpus=1, ship=(__import__(__name__),), resources=h100):
        yield


def _spec(resources: dict[str, Any], model: str = "tiny"):
    return spec_from_dict(
        tiny_spec(
            name="pack",
            axes=AXES,
            resources=resources,
            reuse=False,
            train={"model": model, "epochs": 1, "device": "auto"},
        )
    )


def _max_overlap(out: Path) -> tuple[int, list[dict[str, Any]]]:
    runs = [json.loads(p.read_text()) for p in out.glob("*.json")]
    # the most trials alive at one instant: check at every start
    most = max(sum(r["start"] <= s["start"] < r["end"] for r in runs) for s in runs)
    return most, runs


def test_auto_share_comes_from_the_measured_estimate() -> None:
    spec = _spec({"gpu": "auto", "gpu_memory_gb": 80})
    est = trial_memory(spec.trials()[0])
    assert est.parameters > 0 and est.activations > 0 and est.total > est.activations
    share = gpu_share(spec)
    assert share == 0.125  # a tiny model fits an eighth of 80 GB with room to spare
    # the same trials on a small GPU need a larger share: the figure follows the estimate
    small = gpu_share(_spec({"gpu": "auto", "gpu_memory_gb": est.total * 1.25 * 3 / 2**30}))
    assert small == 0.375
    with pytest.raises(ValueError, match="resources.gpu: auto: .* more than the GPU"):
        gpu_share(_spec({"gpu": "auto", "gpu_memory_gb": 0.1}))
    assert gpu_share(_spec({"gpu": 0.5})) == 0.5


@pytest.mark.usefixtures("one_gpu_ray")
def test_tiny_trials_share_one_gpu_and_know_their_share(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    spec = _spec({"gpu": "auto", "cpus": 0.5})
    run_experiment(
        spec,
        "packed",
        str(tmp_path / "store"),
        verbose=0,
        trial_fn=partial(record_overlap, out=str(out)),
    )
    most, runs = _max_overlap(out)
    assert len(runs) == 4 and most == 4, runs  # all four on the one GPU at once
    assert {r["share"] for r in runs} == {0.125}
    assert {tuple(r["gpu_ids"]) for r in runs} == {("0",)}


@pytest.mark.usefixtures("one_gpu_ray")
def test_a_whole_gpu_per_trial_runs_them_one_by_one(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    spec = _spec({"gpu": 1, "cpus": 0.5})
    run_experiment(
        spec,
        "whole",
        str(tmp_path / "store"),
        verbose=0,
        trial_fn=partial(record_overlap, out=str(out)),
    )
    most, runs = _max_overlap(out)
    assert len(runs) == 4 and most == 1
    assert {r["share"] for r in runs} == {1.0}


# --- the GPUs read from the cluster, and each Tune trial's share -----------------------------


def _estimate(gib: float, overhead_gib: float = 1.0) -> Any:
    """A made-up estimate of ``gib`` GiB in all, ``overhead_gib`` of it the CUDA context."""
    from trainer.memory import MemoryEstimate

    g = 2**30
    return MemoryEstimate(
        parameters=int((gib - overhead_gib) * g),
        gradients=0,
        optimizer=0,
        activations=0,
        temporaries=0,
        overhead=int(overhead_gib * g),
        rows=1,
        seq_len=1,
        dtype="fp32",
        measured_rows=(1,),
    )


A10G = {"CPU": 8.0, "GPU": 1.0, "accelerator_type:A10G": 1.0}
H100 = {"CPU": 24.0, "GPU": 1.0, "accelerator_type:H100": 1.0}


def test_the_fleet_is_read_from_the_nodes_and_the_spec_overrides_it() -> None:
    auto = _spec({"gpu": "auto"})
    assert auto.resources.gpu_memory_gb is None  # no assumed size
    fleet = GpuFleet.read(auto, [{"CPU": 0.0}, H100, A10G, dict(A10G)])
    assert fleet.sizes == (("A10G", 24.0), ("H100", 80.0)) and fleet.unknown == ()
    assert fleet.describe() == "A10G 24 GB, H100 80 GB"
    pinned = _spec({"gpu": "auto", "gpu_memory_gb": 40})
    assert GpuFleet.read(pinned, [H100, A10G]) == GpuFleet(override=40.0)
    odd = GpuFleet.read(auto, [A10G, {"GPU": 1.0}, {"GPU": 2.0, "accelerator_type:X9": 1.0}])
    assert odd.unknown == ("X9", "unnamed")
    # no GPU of known memory: the field to set is named
    with pytest.raises(ValueError, match="resources.gpu_memory_gb: .*unnamed of unknown memory"):
        GpuFleet.read(auto, [{"CPU": 4.0, "GPU": 1.0}]).place(_estimate(1))
    with pytest.raises(ValueError, match="resources.gpu_memory_gb: .*no GPU"):
        GpuFleet.read(auto, [{"CPU": 4.0}]).place(_estimate(1))


def test_a_run_gets_the_smallest_gpu_that_holds_it_and_is_pinned_only_when_needed() -> None:
    fleet = GpuFleet((("A10G", 24.0), ("H100", 80.0)))
    # 7 GiB x 1.25 = 8.75 GiB: three eighths (3 GiB each) of the A10G; any GPU holds it
    assert fleet.place(_estimate(7)) == GpuPlace(0.375, 24.0, None)
    # 30 GiB x 1.25 > 24: four eighths (10 GiB each) of an H100, pinned there
    assert fleet.place(_estimate(30)) == GpuPlace(0.5, 80.0, "H100")
    with pytest.raises(ValueError, match=r"resources.gpu: auto: .*A10G 24 GB, H100 80 GB"):
        fleet.place(_estimate(70))
    # a GPU of unknown memory could take any trial: every trial is pinned to its type
    assert GpuFleet((("A10G", 24.0),), unknown=("X9",)).place(_estimate(7)).accelerator == "A10G"
    assert GpuFleet(override=24.0).place(_estimate(19)) == GpuPlace(1.0, 24.0, None)


def test_a_trial_alone_gets_its_own_share_and_a_fused_group_the_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One trial needs 7 GiB (1 of it the CUDA context), K fused ones 6 K + 1 GiB."""
    from ray.tune import PlacementGroupFactory

    monkeypatch.setattr(packing, "trial_memory", lambda plan: _estimate(7))
    spec = _spec({"gpu": "auto", "cpus": 2})
    plans = spec.trials()
    request = TrialResources(spec, GpuFleet((("A10G", 24.0), ("H100", 80.0))))
    alone = request.request(plans[:1])
    assert alone == {"CPU": 2.0, "GPU": 0.375}  # 8.75 GiB of a 24 GB GPU's eighths
    assert request.request(plans[:3]) == {"CPU": 2.0, "GPU": 1.0}  # 23.75 GiB: the whole A10G
    assert request.request(plans) == {"CPU": 2.0, "GPU": 0.5, "accelerator_type:H100": 0.001}
    # what Tune calls with each trial's config: an ordinary trial, a fused group
    one = request({"params": plans[0].params})
    assert isinstance(one, PlacementGroupFactory) and one.required_resources == alone
    three = request({"members": [p.params for p in plans[:3]]})
    assert three.required_resources == {"CPU": 2.0, "GPU": 1.0}
    assert request({"members": [plans[1].params]}).required_resources == alone
    # the share of the largest trial (the driver's check before the sweep starts)
    assert gpu_share(spec, request.fleet) == 0.375
    assert gpu_share(spec, request.fleet, members=4) == 0.5


def test_the_driver_reads_live_nodes_and_node_types(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`gpu_fleet` on a fabricated cluster: one live node naming its GPU only in its labels,
    one dead H200, and the node types the service handed the driver (DIVSWEEP_NODE_TYPES)."""
    from sweeps.running import driver

    nodes = [
        {"Alive": True, "Resources": {"CPU": 0.0, "memory": 2e10}, "Labels": {}},
        {
            "Alive": True,
            "Resources": {"CPU": 8.0, "GPU": 1.0},
            "Labels": {"ray.io/accelerator-type": "L4"},
        },
        {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H200": 1.0}},
    ]
    monkeypatch.setattr(driver.ray, "nodes", lambda: nodes)
    monkeypatch.setenv("DIVSWEEP_NODE_TYPES", json.dumps([H100]))
    monkeypatch.setenv("DIVSWEEP_CLUSTER_CONFIG", str(tmp_path / "absent.yaml"))
    auto = _spec({"gpu": "auto"})
    fleet = driver.gpu_fleet(auto)
    assert fleet is not None and fleet.sizes == (("L4", 24.0), ("H100", 80.0))
    assert driver.gpu_fleet(_spec({"gpu": 0.5})) is None
    assert driver.gpu_fleet(_spec({"gpu": "auto", "gpu_memory_gb": 16})) == GpuFleet(override=16)
    monkeypatch.delenv("DIVSWEEP_NODE_TYPES")
    monkeypatch.setattr(driver.ray, "nodes", lambda: nodes[:1])  # a cold cluster, no types known
    with pytest.raises(ValueError, match="resources.gpu_memory_gb"):
        driver.gpu_fleet(auto)


def record_group(
    plans: TrialPlan | list[TrialPlan],
    report: Any,
    checkpoint_dir: str,
    cache_dir: str,
    *,
    out: str,
) -> None:
    """A fake trial (one plan) or fused trial (a list): records each member's share and group."""
    group = plans if isinstance(plans, list) else [plans]
    for plan in group:
        with open(os.path.join(out, f"{plan.data.n_instructions}.json"), "w") as f:
            json.dump({"share": plan.gpu_share, "members": len(group)}, f)
    if isinstance(plans, list):
        report([{"step": 1, "test_acc": 0.0} for _ in plans], None)
    else:
        report({"step": 1, "test_acc": 0.0}, None)


@pytest.mark.usefixtures("one_gpu_ray")
def test_fused_groups_and_lone_trials_ask_ray_for_their_own_shares(tmp_path: Path) -> None:
    """Three compatible cells at ``fuse: 2``: a group of two and a trial alone. The GPU is sized
    between them (override), so the lone trial's share is smaller than the group's."""
    out = tmp_path / "runs"
    out.mkdir()
    axes = [{"field": "data.n_instructions", "values": [4, 8, 10]}]
    probe = spec_from_dict(
        tiny_spec(name="mix", axes=axes, budget={"total_examples": 80}, reuse=False)
    )
    one, two = group_memory(probe.trials()[:1]), group_memory(probe.trials()[:2])
    gb = (one.total + two.total) * 1.25 / 2 * 2 / 2**30  # half of it holds one, not two
    spec = spec_from_dict(
        tiny_spec(
            name="mix",
            axes=axes,
            budget={"total_examples": 80},
            reuse=False,
            resources={"gpu": "auto", "cpus": 0.5, "fuse": 2, "gpu_memory_gb": gb},
        )
    )
    record = partial(record_group, out=str(out))
    run_experiment(
        spec, "mix", str(tmp_path / "store"), verbose=0, trial_fn=record, fused_fn=record
    )
    runs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(r["members"] for r in runs.values()) == [1, 2, 2], runs
    shares = {r["members"]: r["share"] for r in runs.values()}
    assert shares == {1: 0.5, 2: 0.625}, runs
