"""The spec's ``tracking`` section: which experiment trackers (MLflow, Weights & Biases) get
every trial's reports, and whether this machine has them installed.

A spec asks for them with ``tracking``; every trial then appears as a run with its parameters
and every report's metrics, beside divsweep's own results store (which stays the record)::

    tracking: {mlflow: true, wandb: true}        # project defaults to the spec's name

Both are optional extras (``pip install 'divsweep[mlflow]'`` / ``'divsweep[wandb]'``), so the
base install stays lean; a spec asking for one that is not installed is refused before it runs
(`check_installed`). The Tune logger callbacks that send the runs, and where the runs go, are
in `sweeps.running.trackers`.
"""

from __future__ import annotations

import importlib.util

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
