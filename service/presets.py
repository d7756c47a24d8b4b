"""The presets the service offers, read through ``sweeps.list_presets``/``load_preset``.

Example::

    [p.name for p in available()]        # ['fig2a-mini', 'smoke', ...]
    find("smoke").n_trials               # 2
    find("nope")                         # None
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sweeps.specs.presets import list_presets, load_preset
from sweeps.specs.spec import ExperimentSpec

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class Preset:
    name: str
    spec: ExperimentSpec


def _names() -> list[str]:
    return list_presets()


def _load(name: str) -> ExperimentSpec:
    return load_preset(name)


def available() -> list[Preset]:
    """Every preset that loads; one that fails is logged and left out, not a 500."""
    out = []
    for name in _names():
        try:
            out.append(Preset(name, _load(name)))
        except Exception as e:  # a broken preset file must not take the listing down
            log.warning("preset %s does not load: %s", name, e)
    return out


def find(name: str) -> ExperimentSpec | None:
    """The preset's spec, or None when there is no such preset (the name is checked first, so
    it never reaches a file path unless it is a plain name)."""
    if not _NAME.match(name) or name not in _names():
        return None
    return _load(name)


def describe(spec: ExperimentSpec) -> dict[str, Any]:
    """The preset as the API lists it."""
    return {
        "name": spec.name,
        "description": spec.description,
        "n_trials": spec.n_trials,
        "spec": spec.model_dump(mode="json"),
    }
