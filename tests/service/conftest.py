"""Fixtures for the service's unit tests (fakes in ``service_fakes``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_fakes import Harness


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, max_trials=16, max_examples=100_000, max_concurrent=3)
    with h.client:
        yield h
