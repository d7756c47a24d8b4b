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
from sweeps.running.driver import run_experiment
from sweeps.running.packing import gpu_share, trial_memory
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
    with in_process_ray(num_cpus=4, num_gpus=1, ship=(__import__(__name__),)):
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
