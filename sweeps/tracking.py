"""Experiment trackers (MLflow, Weights & Biases) through Ray Tune's own logger callbacks.

A spec asks for them with ``tracking``; every trial then appears as a run with its parameters
and every report's metrics, beside divsweep's own results store (which stays the record)::

    tracking: {mlflow: true, wandb: true}        # project defaults to the spec's name

Where the runs go is the operator's choice, never the submitter's (a spec holds no paths):

- MLflow: ``MLFLOW_TRACKING_URI`` on the machine that runs the sweep's driver, else a local
  SQLite store beside Tune's state, ``<tune storage>/mlflow/mlflow.db`` (``mlflow ui
  --backend-store-uri sqlite:///<that>`` shows it).
- W&B: offline unless ``WANDB_MODE`` says otherwise on the driver's machine (with
  ``WANDB_API_KEY`` for online); offline runs go to ``<tune storage>/wandb`` (``wandb sync``
  uploads them later).

Both are optional extras (``pip install 'divsweep[mlflow]'`` / ``'divsweep[wandb]'``), so the
base install stays lean; a spec asking for one that is not installed is refused before it runs.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sweeps.errors import SpecError

#: tracker -> (import name, pip extra)
PACKAGES = {"mlflow": ("mlflow", "divsweep[mlflow]"), "wandb": ("wandb", "divsweep[wandb]")}


class Tracking(BaseModel):
    """Which trackers receive every trial's reports (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mlflow: bool = False
    wandb: bool = False
    #: MLflow experiment / W&B project name; default: the spec's ``name``
    project: str | None = Field(
        None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )

    @property
    def enabled(self) -> list[str]:
        return [name for name in PACKAGES if getattr(self, name)]


def missing(tracking: Tracking) -> list[tuple[str, str]]:
    """``(field, message)`` for each requested tracker that is not installed here."""
    out = []
    for name in tracking.enabled:
        module, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            out.append(
                (
                    f"tracking.{name}",
                    f"the {module} package is not installed where the "
                    f"sweep runs; pip install '{extra}' there, or set "
                    "it false",
                )
            )
    return out


def check_installed(tracking: Tracking) -> None:
    """SpecError naming ``tracking.<name>`` for a requested tracker that is not installed."""
    for field, message in missing(tracking):
        raise SpecError(f"{field}: {message}")


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
