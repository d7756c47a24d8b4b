"""Shared fixtures: a real local Ray head for the whole session, GPU test skipping."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tune's progress reporter and Ray's log dedup make test output noisy and slow on 2 cores.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[object]:
    """A private Ray head on loopback (GCS + dashboard + Jobs API), shared by the session.

    Yields a ``service.local_ray.LocalRayHead`` with ``.address`` and ``.dashboard_url``.
    """
    from service.local_ray import LocalRayHead

    head = LocalRayHead.start(num_cpus=2, object_store_mb=256)
    try:
        yield head
    finally:
        head.stop()
