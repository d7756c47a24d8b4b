"""divsweep sweeps: experiment specs, presets, the Ray Tune driver, the results store and reports.

Four rooms, each a subpackage: `sweeps.specs` (what a study is: `ExperimentSpec`, its trials,
presets, lifecycles, limits), `sweeps.running` (running it on Ray Tune: driver, trainable,
callbacks, searchers, fusing, packing, reuse, trackers), `sweeps.store` (the results store) and
`sweeps.reporting` (tables, charts, plots, verdicts, the results document, cost plans).
Example::

    from sweeps import load_preset, summary
    from sweeps.running.driver import run_experiment        # imports Ray
    spec = load_preset("smoke")
    exp_id = run_experiment(spec, store_uri="/tmp/results")  # blocks until done
    print(summary(exp_id, store_uri="/tmp/results").to_pandas())

Importing this package never imports Ray, connects to anything or touches the disk: the names
below are the light public API. `run_experiment` lives in `sweeps.running.driver`, which imports
Ray when imported.
"""

from sweeps.errors import RunError, SpecError, StoreError, SweepError, UnknownExperimentError
from sweeps.reporting.plot import plot_experiment, plot_phase_diagram
from sweeps.reporting.tables import results, summary, threshold_estimate
from sweeps.specs.lifecycle import ExperimentStatus, TrialState
from sweeps.specs.presets import list_presets, load_preset, preset_path
from sweeps.specs.spec import ExperimentSpec, TrialPlan, load_spec, spec_from_dict
from sweeps.store import ResultsStore, open_store

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
    "spec_from_dict",
    "summary",
    "threshold_estimate",
]
