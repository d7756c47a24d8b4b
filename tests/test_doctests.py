"""The worked examples in the docstrings of the light modules run, and say what they print.

The house style asks public functions for a worked example; this keeps them true. Modules that
need Ray, a GPU or a trained model show their examples with ``+SKIP`` and are left out here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import data

LIGHT = [f"data.{m.name}" for m in pkgutil.iter_modules(data.__path__) if m.name != "__main__"] + [
    "sweeps.stats",
    "sweeps.running.cluster",
    "sweeps.specs.bisection",
    "sweeps.specs.expand",
    "sweeps.specs.spec",
    "sweeps.reporting.verdicts",
    "sweeps.reporting.studies",
    "sweeps.reporting.frontier",
    "trainer.config",
    "trainer.evaluate",
    "trainer.builtin",
]


@pytest.mark.parametrize("name", LIGHT)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
