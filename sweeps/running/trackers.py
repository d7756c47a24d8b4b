"""Experiment trackers (MLflow, Weights & Biases) through Ray Tune's own logger callbacks.

The spec's ``tracking`` section (which trackers, whether they are installed) is
`sweeps.specs.tracking`; here is what the driver hands Tune for it::

    run_config = tune.RunConfig(callbacks=[*callbacks(spec.tracking, spec.name, storage)], ...)

Where the runs go is the operator's choice, never the submitter's (a spec holds no paths):

- MLflow: ``MLFLOW_TRACKING_URI`` on the machine that runs the sweep's driver, else a local
  SQLite store beside Tune's state, ``<tune storage>/mlflow/mlflow.db`` (``mlflow ui
  --backend-store-uri sqlite:///<that>`` shows it).
- W&B: offline unless ``WANDB_MODE`` says otherwise on the driver's machine (with
  ``WANDB_API_KEY`` for online); offline runs go to ``<tune storage>/wandb`` (``wandb sync``
  uploads them later).
"""

from __future__ import annotations

import os
from typing import Any

from sweeps.specs.tracking import Tracking, check_installed


def callbacks(tracking: Tracking, spec_name: str, storage_path: str) -> list[Any]:
    """Tune logger callbacks for the requested trackers (imports Ray and the trackers)."""
    check_installed(tracking)
    project = tracking.project or spec_name
    out: list[Any] = []
    if tracking.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        # MLflow 3 keeps its file store in maintenance mode; SQLite is its local default
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (
            "sqlite:///" + os.path.join(_local(storage_path, "mlflow"), "mlflow.db")
        )
        out.append(
            MLflowLoggerCallback(
                tracking_uri=uri, experiment_name=project, tags={"divsweep.spec": spec_name}
            )
        )
    if tracking.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        mode = os.environ.get("WANDB_MODE") or "offline"
        # Tune's callback asks for an API key unless this process's environment says offline;
        # the driver process runs this one sweep, so its environment is ours to set
        os.environ["WANDB_MODE"] = mode
        out.append(
            WandbLoggerCallback(
                project=project, mode=mode, dir=_local(storage_path, "wandb"), log_config=True
            )
        )
    return out


def _local(storage_path: str, name: str) -> str:
    """``<storage>/<name>`` as a local directory (a remote storage keeps trackers local)."""
    if "://" in storage_path:
        storage_path = os.path.expanduser("~/.cache/divsweep/tune")
    path = os.path.join(storage_path, name)
    os.makedirs(path, exist_ok=True)
    return os.path.abspath(path)
