"""divsweep sweeps: experiment specs, presets, the Ray Tune driver and the results store.

Example::

    from sweeps import load_preset, run_experiment, summary
    spec = load_preset("smoke")
    exp_id = run_experiment(spec, store_uri="/tmp/results")   # needs Ray; blocks until done
    print(summary(exp_id, store_uri="/tmp/results").to_pandas())

Importing this package never connects to Ray or touches the disk. The errors, the lifecycles
and the store are plain imports. Every other name is loaded on first use, because the spec
module imports the trainer's config, which imports torch (1.1 s): a process that only reads the
store (the service's readers, ``from sweeps.store import open_store``) must not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sweeps.errors import RunError, SpecError, StoreError, SweepError, UnknownExperimentError
from sweeps.lifecycle import ExperimentStatus, TrialState
from sweeps.store import ResultsStore, open_store

if TYPE_CHECKING:
    from sweeps.driver import run_experiment
    from sweeps.plot import plot_experiment, plot_phase_diagram
    from sweeps.presets import list_presets, load_preset, preset_path
    from sweeps.spec import ExperimentSpec, TrialPlan, load_spec, spec_from_dict
    from sweeps.tables import results, summary, threshold_estimate

#: the names that import torch (through `sweeps.spec`), by their module
_LAZY = {
    "run_experiment": "sweeps.driver",
    "plot_experiment": "sweeps.plot",
    "plot_phase_diagram": "sweeps.plot",
    "list_presets": "sweeps.presets",
    "load_preset": "sweeps.presets",
    "preset_path": "sweeps.presets",
    "results": "sweeps.tables",
    "summary": "sweeps.tables",
    "threshold_estimate": "sweeps.tables",
    "ExperimentSpec": "sweeps.spec",
    "TrialPlan": "sweeps.spec",
    "load_spec": "sweeps.spec",
    "spec_from_dict": "sweeps.spec",
}
__all__ = [
    "ExperimentSpec",
    "ExperimentStatus",
    "ResultsStore",
    "RunError",
    "SpecError",
    "StoreError",
    "SweepError",
    "TrialPlan",
    "TrialState",
    "UnknownExperimentError",
    "list_presets",
    "load_preset",
    "load_spec",
    "open_store",
    "plot_experiment",
    "plot_phase_diagram",
    "preset_path",
    "results",
    "run_experiment",
    "spec_from_dict",
    "summary",
    "threshold_estimate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
