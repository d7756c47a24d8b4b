"""Presets: one spec file per study of the paper, at paper scale and as a ``-mini`` CPU version.

Files live in ``sweeps/presets/<name>.yaml``. Example::

    >>> "fig2a-mini" in list_presets()
    True
    >>> load_preset("smoke").search.kind
    'grid'
"""

from __future__ import annotations

from pathlib import Path

from sweeps.errors import SpecError
from sweeps.specs.spec import ExperimentSpec, load_spec

#: ``sweeps/presets/``: the spec files stay where commands name them (``sweeps/presets/x.yaml``)
PRESET_DIR = Path(__file__).parent.parent / "presets"


def list_presets() -> list[str]:
    """Names of every preset, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of preset ``name``; `SpecError` naming the known presets if there is none."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(f"preset: no preset {name!r}; known: {', '.join(list_presets())}")
    return path


def load_preset(name: str) -> ExperimentSpec:
    """Load and validate preset ``name`` (e.g. ``"fig2a-mini"``)."""
    return load_spec(preset_path(name))
