"""Service settings, read once from ``DIVSWEEP_*`` environment variables (pydantic-settings).

Every default keeps the service and Ray on loopback and its state in one directory::

    Settings()                                   # state under ~/.divsweep, host 127.0.0.1
    Settings(state_dir="/tmp/ds", tokens={"alice": "s3cret"}, max_trials=64)

    # the same from the environment (dicts and lists are JSON):
    DIVSWEEP_STATE_DIR=/tmp/ds DIVSWEEP_TOKENS='{"alice": "s3cret"}' DIVSWEEP_MAX_TRIALS=64

Derived locations (``registry_url``, ``store_uri``, ``jobs_dir``) are properties so that a
changed ``state_dir`` moves all of them together.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Settings(BaseSettings):
    """Typed, frozen service configuration."""

    model_config = SettingsConfigDict(
        env_prefix="DIVSWEEP_", frozen=True, extra="forbid", populate_by_name=True
    )

    state_dir: Path = Field(
        default=Path.home() / ".divsweep", description="registry, jobs, results"
    )
    registry_url_override: str | None = Field(
        default=None,
        alias="DIVSWEEP_REGISTRY_URL",
        description="any SQLAlchemy URL; default sqlite:///<state_dir>/registry.db",
    )
    store_uri_override: str | None = Field(
        default=None,
        alias="DIVSWEEP_STORE_URI",
        description="results store URI (sweeps.open_store); default <state_dir>/results",
    )
    # Submitter name -> bearer token. Empty means every mutating route answers 403.
    tokens: dict[str, str] = Field(default_factory=dict)

    ray_address: str | None = Field(default=None, description="GCS address, e.g. 127.0.0.1:6379")
    dashboard_url: str | None = Field(
        default=None, description="Ray dashboard / Jobs API, e.g. http://127.0.0.1:8265"
    )
    # Ray's auth token (RAY_AUTH_MODE=token clusters): sent with every Jobs API and state API
    # call. `divsweep serve` makes one for the head it starts (<state_dir>/ray-token, mode 600).
    ray_token: str | None = Field(default=None, repr=False)
    # The interpreter the Ray job runs `-m sweeps.run` with: the cluster's python by default.
    job_python: str = "python"
    # CPUs each sweep's driver reserves. 0 runs it on the head (Ray's default for a job); any
    # amount above 0 (0.01 is enough) places it on a worker node, so that it outlives a head
    # that dies and comes back under GCS fault tolerance (cluster.yaml sets 0.01).
    driver_cpus: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    # Ship data/trainer/sweeps with each job (runtime_env py_modules) for clusters whose python
    # does not have divsweep installed.
    ship_packages: bool = False

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="base URL put in links; default: paths relative to the root"
    )

    max_trials: int = Field(default=256, ge=1)
    max_examples: int = Field(default=2_000_000, ge=1, description="training examples in one trial")
    max_concurrent: int = Field(
        default=4, ge=1, description="experiments pending or running at once"
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_json_depth: int = Field(
        default=32, ge=4, le=1000, description="nesting of arrays and objects in a request body"
    )
    max_test_examples: int = Field(
        default=1_000_000, ge=1, description="test examples in one trial"
    )
    max_seq_len: int = Field(
        default=4096, ge=8, description="tokens in the longest example of one trial"
    )
    max_params: int = Field(
        default=8_000_000_000, ge=1, description="model parameters of one trial (7B fine-tunes fit)"
    )
    max_layers: int = Field(default=128, ge=1, description="model layers of one trial")
    # Directories under which a submitted path (train.init) may lie, after resolving symlinks
    # and `..`. Empty: only builtin models (`divsweep:<name>`). JSON list in the environment.
    model_roots: list[Path] = Field(default_factory=list)
    # The Ray cluster-launcher config the cluster's autoscaler runs with: its node types are what
    # the autoscaler may add (`service.capacity.NodeTypes`). Default: where `ray up` puts it on
    # the head; absent, the cluster is taken as fixed (only live nodes count).
    cluster_config: Path | None = Field(default=Path("~/ray_bootstrap_config.yaml"))
    # Override of the node types, e.g. '[{"CPU": 8, "GPU": 1, "memory": 32e9}]' (the live
    # nodes are read from Ray): requests that fit neither a live node nor one of these are
    # refused with a 422.
    node_types: list[dict[str, float]] = Field(default_factory=list)

    # An experiment without a running trial for this long reports why in its status
    # (`service.waiting`: Ray's queued and infeasible demands) instead of a bare 'pending'.
    resource_wait_s: float = Field(default=300.0, ge=0, allow_inf_nan=False)

    sse_poll_s: float = Field(default=0.5, gt=0, le=10)
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    page_size_max: int = Field(default=200, ge=1)

    @field_validator("tokens")
    @classmethod
    def _check_tokens(cls, v: dict[str, str]) -> dict[str, str]:
        for name, token in v.items():
            if not _TOKEN_NAME.match(name):
                raise ValueError(f"token name {name!r} must match {_TOKEN_NAME.pattern}")
            if len(token) < 8:
                raise ValueError(f"token of {name!r} must be at least 8 characters")
        return v

    @property
    def registry_url(self) -> str:
        """SQLAlchemy URL of the experiment registry."""
        return self.registry_url_override or f"sqlite:///{self.state_dir / 'registry.db'}"

    @property
    def store_uri(self) -> str:
        """URI of the sweeps results store that jobs write and the service reads."""
        return self.store_uri_override or str(self.state_dir / "results")

    @property
    def jobs_dir(self) -> Path:
        """Per-experiment working directories shipped to Ray (each holds ``spec.json``)."""
        return self.state_dir / "jobs"
