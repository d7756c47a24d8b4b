"""Hostile and careless input: nesting, types, sizes, paths, resources (issue 13).

Each case asserts the status, a JSON error body naming the field, an unchanged registry and no
Ray job submitted. The app runs on the in-memory fakes (`service_fakes`), whose cluster is one
2-CPU, 16 GiB node without a GPU unless a test says otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from service_fakes import AUTH, Harness, small_spec


def _with(path: str, value: Any, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = small_spec() if spec is None else spec
    cur = spec
    *parents, last = path.split(".")
    for p in parents:
        cur = cur.setdefault(p, {})
    cur[last] = value
    return spec


def _post(h: Harness, raw: bytes | str) -> Any:
    return h.client.post(
        "/v1/experiments", content=raw, headers={**AUTH, "Content-Type": "application/json"}
    )


def _refused(h: Harness, raw: bytes | str, status: int, field: str) -> dict[str, Any]:
    before, jobs = h.registry_rows(), len(h.runner.submitted)
    r = _post(h, raw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail", "fields"} and body["detail"]
    named = [f["field"] for f in body["fields"]]
    assert any(f == field or f.startswith(field + ".") for f in named), body
    assert h.registry_rows() == before
    assert len(h.runner.submitted) == jobs  # no Ray job

    return dict(body)


# --- nesting: bounded before parsing ---------------------------------------------------------
@pytest.mark.parametrize("depth", [33, 5_000, 200_000])
def test_deep_nesting_is_400_not_500(harness: Harness, depth: int) -> None:
    raw = '{"preset": "smoke", "overrides": {"x": ' + "[" * depth + "]" * depth + "}}"
    body = _refused(harness, raw, 400, "body")
    assert "max_json_depth=32" in body["detail"]


def test_brackets_inside_strings_do_not_count(harness: Harness) -> None:
    r = harness.submit(small_spec(description="[" * 500 + "{" * 500))
    assert r.status_code == 202, r.text


def test_integer_of_thousands_of_digits_is_400(harness: Harness) -> None:
    raw = json.dumps(small_spec()).replace('"epochs": 1', '"epochs": ' + "9" * 5000)
    _refused(harness, raw, 400, "body")


# --- strict, finite types --------------------------------------------------------------------
TYPE_CASES = [
    ("bool for int", "train.epochs", "true"),
    ("bool for float", "train.lr", "false"),
    ("string for int", "data.n_instructions", '"10"'),
    ("float for int", "train.epochs", "2.0"),
    ("NaN", "train.lr", "NaN"),
    ("Infinity", "train.lr", "Infinity"),
    ("-Infinity", "data.noop_fraction", "-Infinity"),
    ("overflow to inf", "train.weight_decay", "1e999"),
    ("bool in a tuple", "data.z_len", "[true, 8]"),
    ("bool for resources", "resources.cpus", "true"),
]


@pytest.mark.parametrize(("case", "field", "token"), TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_strict_finite_types(harness: Harness, case: str, field: str, token: str) -> None:
    marker = "__VALUE__"
    raw = json.dumps(_with(field, marker)).replace(f'"{marker}"', token)
    _refused(harness, raw, 422, field)


def test_strict_types_reach_axis_values(harness: Harness) -> None:
    spec = small_spec(axes=[{"field": "data.n_instructions", "values": [10, "100"]}])
    body = _refused(harness, json.dumps(spec), 422, "axes.0.values.1")
    assert "data.n_instructions" in body["detail"]
    spec = small_spec(axes=[{"field": "train.epochs", "values": [1, True]}], budget=None)
    _refused(harness, json.dumps(spec), 422, "axes.0.values.1")


def test_strict_types_in_preset_overrides(harness: Harness) -> None:
    raw = json.dumps({"preset": "smoke", "overrides": {"train": {"max_steps": True}}})
    _refused(harness, raw, 422, "train.max_steps")
    raw = '{"preset": "smoke", "overrides": {"train": {"lr": NaN}}}'
    _refused(harness, raw, 422, "train.lr")


def test_lax_yaml_stays_readable_by_the_cli_path() -> None:
    """Hand-written YAML keeps working: ``1e-3`` is a float (PyYAML alone makes a string of it,
    which the strict service would refuse)."""
    from sweeps.specs.spec import yaml_load

    assert yaml_load("lr: 1e-3\nn: 10\nz: [4, 8]") == {"lr": 0.001, "n": 10, "z": [4, 8]}


# --- sizes: everything a trial can allocate --------------------------------------------------
SIZE_CASES = [
    ("test set", "data.test.n_test", 10**7, "data.test.n_test"),
    ("sequence length", "data.z_len", [4, 9_000], "data.z_len"),
    ("layers", "train.n_layer", 500, "train.n_layer"),
    ("parameters", "train.n_embd", 400_000, "train.model"),
    ("memory of the batch", "train.batch_size", 10**7, "train.batch_size"),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "field"), SIZE_CASES, ids=[c[0] for c in SIZE_CASES]
)
def test_size_quotas(tmp_path: Path, case: str, path: str, value: Any, field: str) -> None:
    h = Harness(
        tmp_path,
        max_trials=16,
        max_examples=100_000,
        max_test_examples=100_000,
        max_seq_len=2048,
        max_params=10**9,
        max_layers=64,
    )
    spec = _with(path, value)
    if path.startswith("train.n_"):
        spec["train"] |= {"model": None, "n_layer": 2, "n_head": 2, "n_embd": 32} | {
            path.split(".")[1]: value
        }
    if path == "data.z_len":
        spec["train"]["n_positions"] = 20_000
    with h.client:
        body = _refused(h, json.dumps(spec), 413, field)
    assert "quota" in body["detail"] or "GiB" in body["detail"]


def test_memory_is_checked_against_the_largest_node(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_trials=16, max_examples=100_000)
    spec = _with("train.batch_size", 20_000)
    with h.client:
        h.runner.node_list = [{"CPU": 2.0, "memory": 2 * 2**30}]
        body = _refused(h, json.dumps(spec), 413, "train.batch_size")
        assert "largest node offers 2.0 GiB" in body["detail"]
        h.runner.node_list = [{"CPU": 2.0, "memory": 512 * 2**30}]
        assert h.submit(spec).status_code == 202


# --- paths from submitters -------------------------------------------------------------------
@pytest.fixture()
def roots(tmp_path: Path) -> dict[str, Path]:
    from transformers import GPT2Config

    allowed = tmp_path / "models"
    (allowed / "gpt").mkdir(parents=True)
    GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=50).save_pretrained(
        allowed / "gpt"
    )
    outside = tmp_path / "secret"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    return {"allowed": allowed, "outside": outside}


def _init_spec(init: str) -> dict[str, Any]:
    spec = small_spec()
    spec["train"] = {"model": None, "init": init, "epochs": 1}
    return spec


@pytest.mark.parametrize("which", ["/etc", "outside", "dotdot", "symlink", "relative", "home"])
def test_paths_outside_the_model_roots_are_422(
    tmp_path: Path, roots: dict[str, Path], which: str
) -> None:
    allowed = roots["allowed"]
    init = {
        "/etc": "/etc",
        "outside": str(roots["outside"]),
        "dotdot": f"{allowed}/gpt/../../secret",
        "symlink": str(allowed / "escape"),
        "relative": "models/gpt",
        "home": "~/.ssh",
    }[which]
    h = Harness(tmp_path / "svc", max_trials=16, model_roots=[str(allowed)])
    with h.client:
        body = _refused(h, json.dumps(_init_spec(init)), 422, "train.init")
        assert "DIVSWEEP_MODEL_ROOTS" in body["detail"]


def test_paths_in_axes_and_preset_overrides_are_checked(
    tmp_path: Path, roots: dict[str, Path]
) -> None:
    h = Harness(tmp_path / "svc", max_trials=16, model_roots=[str(roots["allowed"])])
    spec = _init_spec(str(roots["allowed"] / "gpt"))
    spec["axes"] = [{"field": "train.init", "values": [str(roots["allowed"] / "gpt"), "/etc"]}]
    spec["budget"] = None
    with h.client:
        _refused(h, json.dumps(spec), 422, "train.init")
        raw = json.dumps({"preset": "smoke", "overrides": {"train": {"init": "/etc"}}})
        _refused(h, raw, 422, "train.init")


def test_no_roots_means_only_builtin_models(tmp_path: Path, roots: dict[str, Path]) -> None:
    h = Harness(tmp_path / "svc", max_trials=16)
    with h.client:
        body = _refused(h, json.dumps(_init_spec(str(roots["allowed"] / "gpt"))), 422, "train.init")
        assert "only builtin models" in body["detail"]
        spec = _init_spec("divsweep:smoke-lm")
        spec["train"]["max_steps"], spec["train"]["epochs"] = 2, None
        assert h.submit(spec).status_code == 202


def test_a_path_inside_a_root_is_accepted(tmp_path: Path, roots: dict[str, Path]) -> None:
    h = Harness(tmp_path / "svc", max_trials=16, model_roots=[str(roots["allowed"])])
    with h.client:
        r = h.submit(_init_spec(str(roots["allowed"] / "gpt")))
        assert r.status_code == 202, r.text
        (roots["allowed"] / "junk").mkdir()
        (roots["allowed"] / "junk" / "config.json").write_text("{}")
        body = _refused(
            h, json.dumps(_init_spec(str(roots["allowed"] / "junk"))), 422, "train.init"
        )
        assert "config.json" in body["detail"]
    assert os.path.realpath(roots["allowed"] / "escape") == str(roots["outside"])


# --- resources the cluster can never give ----------------------------------------------------
RESOURCE_CASES = [
    ("more CPUs than any node", {"resources": {"cpus": 64}}, "resources.cpus"),
    ("a GPU on a cluster without", {"resources": {"gpu": 1}}, "resources.gpu"),
    ("gpu auto without GPUs", {"resources": {"gpu": "auto"}}, "resources.gpu"),
    (
        "cuda without a GPU share",
        {"train": {"model": "nano", "epochs": 1, "device": "cuda"}},
        "train.device",
    ),
]


@pytest.mark.parametrize(
    ("case", "extra", "field"), RESOURCE_CASES, ids=[c[0] for c in RESOURCE_CASES]
)
def test_infeasible_resources_are_422(
    harness: Harness, case: str, extra: dict[str, Any], field: str
) -> None:
    body = _refused(harness, json.dumps(small_spec(**extra)), 422, field)
    assert "node" in body["detail"] or "GPU" in body["detail"]


def test_autoscaler_node_types_make_a_request_feasible(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_trials=16, node_types=[{"CPU": 8, "GPU": 1, "memory": 3e10}])
    with h.client:
        r = h.submit(small_spec(resources={"cpus": 4, "gpu": 0.5}))
        assert r.status_code == 202
        assert r.json()["capacity"]["waits_for_autoscaler"] == ["DIVSWEEP_NODE_TYPES[0]"]
        _refused(h, json.dumps(small_spec(resources={"cpus": 16})), 422, "resources.cpus")
        _refused(h, json.dumps(small_spec(resources={"cpus": 4, "gpu": 2})), 422, "resources.gpu")


def test_unknown_cluster_does_not_refuse_and_says_the_check_was_skipped(
    harness: Harness,
) -> None:
    """When Ray does not list its nodes, twice, the service cannot tell: it submits, and the 202
    says the node checks were skipped. The checks that need no node still run."""
    calls = 0

    def nodes() -> None:
        nonlocal calls
        calls += 1

    harness.runner.nodes = nodes  # type: ignore[method-assign]
    r = harness.submit(small_spec(resources={"cpus": 64}))
    assert r.status_code == 202 and calls == 2  # asked once more before giving up
    capacity = r.json()["capacity"]
    assert capacity["checked"] is False and "tried twice" in capacity["detail"]
    cuda = {"train": {"model": "nano", "epochs": 1, "device": "cuda:99"}}
    _refused(harness, json.dumps(small_spec(**cuda)), 422, "train.device")
    assert calls == 2  # refused on the spec alone, before Ray was asked


def test_a_failed_node_listing_is_retried_once(harness: Harness) -> None:
    answers = [None, [{"CPU": 2.0}]]
    harness.runner.nodes = lambda: answers.pop(0)  # type: ignore[method-assign]
    _refused(harness, json.dumps(small_spec(resources={"cpus": 64})), 422, "resources.cpus")
    assert answers == []


def test_a_spec_a_live_node_can_run_says_so(harness: Harness) -> None:
    capacity = harness.submit().json()["capacity"]
    assert capacity == {
        "checked": True,
        "waits_for_autoscaler": [],
        "detail": "a live node can run a trial now",
    }
