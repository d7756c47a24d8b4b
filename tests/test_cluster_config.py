"""cluster.yaml passes the Ray cluster launcher's own validation (no cloud call is made), and
every worker type it declares is one the service admits a paper preset on."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from service.capacity import check_feasible
from service.specs import Quotas, prepare_preset
from sweeps.running.cluster import load_node_types
from sweeps.specs.presets import load_preset

ROOT = Path(__file__).resolve().parents[1]
#: the paper-scale presets (their -mini CPU versions run anywhere)
PAPER = ("fig2a", "noops", "powerlaw", "semantic", "occurrences", "finetune")
QUOTAS = Quotas(max_trials=10_000, max_examples=10**9)


def _load() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_with_ray() -> None:
    config = prepare_config(_load())
    validate_config(config)
    assert config["head_node_type"] == "head"
    assert config["available_node_types"]["gpu_worker"]["max_workers"] == 8
    assert config["available_node_types"]["h100_worker"]["max_workers"] == 4


def test_dashboard_stays_on_loopback() -> None:
    start = " ".join(_load()["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in start


def test_head_keeps_its_state_in_redis_when_one_is_configured() -> None:
    """GCS fault tolerance the way Ray documents it: RAY_REDIS_ADDRESS on the head's start."""
    start = " ".join(_load()["head_start_ray_commands"])
    assert "RAY_REDIS_ADDRESS=$DIVSWEEP_REDIS_ADDRESS" in start
    assert "DIVSWEEP_DRIVER_CPUS=" in start  # drivers off the head, so they outlive it


def test_validation_rejects_a_broken_config() -> None:
    """The check above can fail: an unknown top-level key is refused by Ray's schema."""
    config = _load()
    config["not_a_ray_field"] = 1
    with pytest.raises(Exception, match="not_a_ray_field"):
        validate_config(prepare_config(config))


def test_the_service_reads_the_worker_types_with_their_gpus() -> None:
    types = {t.name: t for t in load_node_types(ROOT / "cluster.yaml")}
    assert sorted(types) == ["gpu_worker", "h100_worker"]  # the head adds no capacity
    assert (types["gpu_worker"].gpu_memory_gb, types["h100_worker"].gpu_memory_gb) == (24, 80)
    assert all(t.resources["GPU"] == 1 and t.resources["CPU"] >= 8 for t in types.values())


@pytest.mark.parametrize("node_type", ["gpu_worker", "h100_worker"])
def test_every_worker_type_runs_paper_presets_on_a_cold_cluster(node_type: str) -> None:
    """A cold cluster: the head (CPU 0) is the only live node, one worker type may be added.
    Each paper preset is admitted, waiting for that type, or (none here) refused by name."""
    (kind,) = [t for t in load_node_types(ROOT / "cluster.yaml") if t.name == node_type]
    head = [{"CPU": 0.0, "memory": 2e10}]
    for name in PAPER:
        prepared = prepare_preset(load_preset(name), name, {}, QUOTAS)
        placement = check_feasible(prepared.spec, prepared.sizes, head, [kind])
        assert placement.checked and placement.waits_for == (node_type,), (name, placement)
