"""A job runner for page tests that runs the real sweep driver: each submission becomes a process
running `sweeps.running.driver.run_experiment` on its own in-process local Ray (2 CPUs), with the
smoke frontier's fake trial function (`tests/sweeps/fakes.py`: `frontier_accuracy`, whose
threshold moves with the budget) in place of training. Everything the page reads (the store, the
searcher's trials, the driver's statuses) is real; only the model is not trained.

``uvicorn --factory frontier_job:app_from_env --app-dir tests/service`` serves the real app on it;
``python -m frontier_job run JOB.json`` is one job (what the runner starts).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.server import SUPPORT_DIR, SimulatedRunner

if TYPE_CHECKING:
    from fastapi import FastAPI

#: tests/sweeps, where the fake trial functions live
SWEEPS_TESTS = SUPPORT_DIR.parent / "sweeps"


class DriverRunner(SimulatedRunner):
    """`SimulatedRunner` whose process-mode writer is the real driver (see the module doc)."""

    python_path = (SUPPORT_DIR, SWEEPS_TESTS)

    def _job_file(self, exp_id: str, spec_json: str) -> dict[str, Any]:
        return {"store_uri": self.store_uri, "experiment_id": exp_id, "spec_json": spec_json}

    def job_command(self, job_file: Path) -> list[str]:
        return [sys.executable, "-m", "frontier_job", "run", str(job_file)]


def app_from_env() -> FastAPI:
    """The real app from ``DIVSWEEP_*`` settings, its jobs run by `DriverRunner`."""
    from service.app import create_app
    from service.settings import Settings

    settings = Settings()
    runner = DriverRunner(settings.store_uri, settings.jobs_dir, writer="process")
    atexit.register(runner.close)
    return create_app(settings, runner=runner)


def run_job(job: dict[str, Any]) -> None:
    """One experiment through the real driver on a local Ray of its own."""
    import fakes
    import ray
    from ray import cloudpickle

    from sweeps.running.driver import run_experiment
    from sweeps.specs.spec import ExperimentSpec

    cloudpickle.register_pickle_by_value(fakes)  # Ray workers cannot import tests/sweeps
    os.environ.pop("RAY_ADDRESS", None)  # never another cluster on this machine
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=128 * 1024 * 1024,
    )
    try:
        spec = ExperimentSpec.model_validate_json(job["spec_json"])
        run_experiment(
            spec,
            job["experiment_id"],
            job["store_uri"],
            trial_fn=fakes.frontier_accuracy,
            verbose=0,
        )
    finally:
        ray.shutdown()


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "run":
        run_job(json.loads(Path(argv[1]).read_text()))
        return
    raise SystemExit("usage: python -m frontier_job run JOB.json")


if __name__ == "__main__":
    main(sys.argv[1:])
