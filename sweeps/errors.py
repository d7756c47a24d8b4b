"""Exceptions raised by `sweeps`.

The tree, rooted at `SweepError`::

    SweepError
    ├── SpecError            an experiment spec is invalid (message names the field path and rule)
    ├── StoreError           the results store cannot do what was asked
    │   └── UnknownExperimentError   no experiment with that id in the store
    └── RunError             the sweep could not be run (e.g. a checkpoint path does not exist)

`SpecError` is also a `ValueError`, so callers that treat bad input generically keep working.
"""

from __future__ import annotations


class SweepError(Exception):
    """Base class of every error raised by `sweeps`."""


class SpecError(SweepError, ValueError):
    """An experiment spec is invalid; the message names the field path, e.g. ``axes.0.field``."""


class StoreError(SweepError):
    """The results store could not complete an operation."""


class UnknownExperimentError(StoreError, KeyError):
    """The store holds no experiment with the requested id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunError(SweepError):
    """The sweep cannot run as specified (checked at run time, not at load time)."""
