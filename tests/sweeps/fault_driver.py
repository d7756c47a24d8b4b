"""A sweep driver in its own process, so that a fault test can SIGKILL it.

``python fault_driver.py SPEC_JSON_FILE EXPERIMENT_ID STORE_URI MARKERS_DIR`` runs the spec on the
cluster named by ``RAY_ADDRESS`` with `fakes.paced_trainer` (the real trainer, paced).
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path

import fakes
from ray import cloudpickle

from sweeps.running.driver import run_experiment
from sweeps.specs.spec import ExperimentSpec


def main() -> None:
    spec_file, exp_id, uri, markers = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO)
    cloudpickle.register_pickle_by_value(fakes)  # Ray workers cannot import the test modules
    spec = ExperimentSpec.model_validate_json(Path(spec_file).read_text())
    run_experiment(
        spec, exp_id, uri, trial_fn=partial(fakes.paced_trainer, markers=markers), verbose=0
    )


if __name__ == "__main__":
    main()
