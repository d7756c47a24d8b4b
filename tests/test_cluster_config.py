"""cluster.yaml passes the Ray cluster launcher's own validation (no cloud call is made)."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


def _load() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_with_ray() -> None:
    config = prepare_config(_load())
    validate_config(config)
    assert config["head_node_type"] == "head"
    assert config["available_node_types"]["gpu_worker"]["max_workers"] == 8


def test_dashboard_stays_on_loopback() -> None:
    start = " ".join(_load()["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in start


def test_validation_rejects_a_broken_config() -> None:
    """The check above can fail: an unknown top-level key is refused by Ray's schema."""
    config = _load()
    config["not_a_ray_field"] = 1
    with pytest.raises(Exception, match="not_a_ray_field"):
        validate_config(prepare_config(config))
