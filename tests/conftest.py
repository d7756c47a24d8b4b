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


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A throwaway PostgreSQL server for the session (`servers.Postgres`); tests take their
    own database with ``postgres.new_database()``."""
    from servers import postgres_server

    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """moto's S3 server for the session (`servers.S3`); ``s3.new_bucket()`` gives a store URI."""
    from servers import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A Redis server for the session (`servers.Redis`), for Ray's GCS fault tolerance."""
    from servers import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server
