"""Fixtures for the sweeps tests: an in-process Ray with 2 CPUs, and a tiny base spec."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

TINY_DATA: dict[str, Any] = {
    "alphabet": "abcdefgh",
    "z_len": [4, 10],
    "x_len": [2, 3],
    "y_len": [1, 3],
    "n_instructions": 10,
    "examples_per_instruction": 10,
    "test": {"n_test": 20},
}
TINY_TRAIN: dict[str, Any] = {"model": "nano", "epochs": 1, "device": "cpu"}


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A valid spec mapping with small data/train settings, plus ``overrides``."""
    return {"name": "tiny", "data": dict(TINY_DATA), "train": dict(TINY_TRAIN), **overrides}


@contextmanager
def in_process_ray(
    num_cpus: int,
    num_gpus: int = 0,
    ship: tuple[Any, ...] = (),
    resources: dict[str, float] | None = None,
) -> Iterator[None]:
    """An in-process local Ray (no dashboard) with ``num_cpus`` (and logical ``num_gpus``, and
    custom ``resources``, e.g. ``{"accelerator_type:H100": 1}`` for the GPU a node would name).

    It never touches other Ray clusters on the machine (no ``ray stop``): shutdown ends only the
    processes this ``ray.init`` started. Test modules are not importable on Ray workers: the
    modules in ``ship`` travel by value.
    """
    import ray
    from ray import cloudpickle

    for module in ship:
        cloudpickle.register_pickle_by_value(module)
    saved = os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        # "local": always a new Ray, even when another one on this machine left its address in
        # /tmp/ray/ray_current_cluster (ray.init() with no address would join that one)
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=128 * 1024 * 1024,
    )
    try:
        yield
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """An in-process local Ray with 2 CPUs for tests that drive Tune directly."""
    import fakes

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    with in_process_ray(num_cpus=2, ship=(fakes,)):
        yield
