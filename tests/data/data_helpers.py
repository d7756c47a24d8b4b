"""Shared helpers for the data tests: tiny specs that generate in milliseconds.

(Not named conftest.py: basenames must be unique across the whole suite's folders.)
"""

from __future__ import annotations

from typing import Any

from data import DataSpec


def small_spec(**overrides: Any) -> DataSpec:
    """A spec small enough for property tests (short strings, few examples)."""
    base: dict[str, Any] = {
        "z_len": (6, 24),
        "x_len": (2, 5),
        "y_len": (1, 5),
        "n_instructions": 20,
        "examples_per_instruction": 10,
        "test": {"n_test": 100, "n_instructions": 20},
        "seed": 0,
    }
    base.update(overrides)
    return DataSpec(**base)
