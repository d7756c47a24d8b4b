"""ExperimentSpec validation, trial planning, and every preset file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec
from pydantic import ValidationError

from sweeps import ExperimentSpec, SpecError, list_presets, load_preset, load_spec, spec_from_dict
from sweeps.specs.presets import PRESET_DIR
from sweeps.specs.spec import LogRange

STUDIES = ("fig2a", "noops", "powerlaw", "semantic", "occurrences", "finetune")


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_validates(name: str) -> None:
    spec = load_preset(name)
    assert spec.name == name
    plans = spec.trials()
    assert plans and spec.n_trials >= len(plans) >= 1
    assert len({p.trial_key for p in plans}) == len(plans)  # distinct trials
    # the same model the service uses: the spec round-trips through JSON
    assert ExperimentSpec.model_validate_json(spec.spec_json) == spec


def test_presets_cover_every_study_at_both_scales() -> None:
    names = set(list_presets())
    for study in STUDIES:
        assert {study, f"{study}-mini"} <= names
    assert "smoke" in names
    smoke = load_preset("smoke")
    assert smoke.train.model == "nano" and 2 <= smoke.n_trials <= 4
    assert all(p.data.n_train <= 1000 for p in smoke.trials())


def test_fig2a_uses_the_fixed_budget() -> None:
    for name in ("fig2a", "fig2a-mini"):
        spec = load_preset(name)
        assert spec.budget is not None
        for p in spec.trials():
            i, s = p.data.n_instructions, p.data.examples_per_instruction
            assert s == spec.budget.total_examples // i
            assert p.params["data.examples_per_instruction"] == s


def test_finetune_checkpoint_is_checked_at_run_time_not_load_time(tmp_path: Path) -> None:
    from sweeps import RunError
    from sweeps.running.driver import run_experiment

    spec = load_preset("finetune")
    assert not Path(spec.train.init).exists()
    with pytest.raises(RunError, match="train.init: checkpoint directory"):
        run_experiment(spec, "ft", str(tmp_path / "store"))
    from sweeps.store import open_store

    rec = open_store(str(tmp_path / "store")).get_experiment("ft")
    assert rec.status == "failed" and "train.init" in (rec.error or "")


def test_a_builtin_init_is_built_before_the_trials_start(tmp_path: Path, monkeypatch) -> None:
    from sweeps.running.driver import check_runnable
    from trainer.builtin import BUILTINS, build_dir

    assert load_preset("finetune-mini").train.init == "divsweep:tiny-lm"  # runs out of the box
    monkeypatch.setenv("DIVSWEEP_MODEL_CACHE", str(tmp_path))
    spec = load_preset("finetune-mini")
    spec = spec.model_copy(
        update={"train": spec.train.model_copy(update={"init": "divsweep:smoke-lm"})}
    )
    check_runnable(spec)  # no RunError: a builtin name is not a path
    assert (build_dir("smoke-lm", BUILTINS["smoke-lm"], tmp_path) / "config.json").is_file()


def test_trials_grid_seeds_and_budget() -> None:
    spec = spec_from_dict(
        tiny_spec(
            axes=[
                {"field": "data.n_instructions", "values": [10, 100]},
                {"field": "train.lr", "values": [1e-3, 1e-2]},
            ],
            budget={"total_examples": 1000},
            seeds=[0, 1, 2],
        )
    )
    plans = spec.trials()
    assert spec.n_trials == len(plans) == 12
    first = plans[0]
    assert first.params == {
        "data.n_instructions": 10,
        "train.lr": 1e-3,
        "data.examples_per_instruction": 100,
        "seed": 0,
    }
    assert first.data.seed == first.train.seed == 0 and plans[1].train.seed == 1
    assert plans[-1].data.n_instructions == 100 and plans[-1].train.lr == 1e-2
    # plan() rebuilds exactly the same trial from its params (what the trainable does)
    assert spec.plan(plans[5].params) == plans[5]
    assert spec.varied_fields == [
        "data.n_instructions",
        "train.lr",
        "data.examples_per_instruction",
    ]


def test_bundle_axis_and_log_range() -> None:
    spec = spec_from_dict(
        tiny_spec(
            axes=[
                {
                    "name": "dist",
                    "values": [
                        {"data.distribution": "uniform", "data.alpha": None},
                        {"data.distribution": "power", "data.alpha": 0.5},
                    ],
                },
                {"field": "data.n_instructions", "range": {"start": 10, "stop": 40, "num": 3}},
            ]
        )
    )
    plans = spec.trials()
    assert [p.data.n_instructions for p in plans[:3]] == [10, 20, 40]
    assert plans[3].data.distribution == "power" and plans[3].data.alpha == 0.5
    assert LogRange(start=1, stop=4, num=3, integer=False).points() == pytest.approx([1, 2, 4])


@pytest.mark.parametrize(
    ("overrides", "path", "rule"),
    [
        (
            {"axes": [{"field": "data.n_instrucions", "values": [1]}]},
            "axes.0.field",
            "unknown field 'data.n_instrucions'",
        ),
        ({"axes": [{"field": "model.lr", "values": [1]}]}, "axes.0.field", "must start with"),
        (
            {"axes": [{"field": "data.n_instructions", "values": [10, 0]}]},
            "axes.0.values.1",
            "n_instructions",
        ),
        ({"axes": [{"field": "data.n_instructions", "values": []}]}, "axes.0", "must not be empty"),
        ({"train": {"model": "nano", "epochs": 1, "max_steps": 3}}, "train", "epochs/max_steps"),
        ({"data": {"n_instructions": 10}}, "data", "examples_per_instruction"),
        (
            {"search": {"kind": "threshold", "level": 0.5, "low": 10, "high": 5}},
            "search",
            "need low < high",
        ),
        (
            {
                "search": {
                    "kind": "optuna",
                    "n_trials": 2,
                    "space": {"train.lr": {"kind": "loguniform", "low": 0, "high": 1}},
                }
            },
            "search.optuna.space.train.lr",
            "low > 0",
        ),
        ({"search": {"kind": "bayes"}}, "search", "kind"),
        ({"resources": {"cpus": 0}}, "resources.cpus", "greater than 0"),
        ({"retries": -1}, "retries", "greater than or equal to 0"),
        ({"seeds": [1, 1]}, "seeds", "distinct"),
        (
            {
                "budget": {"total_examples": 5},
                "axes": [{"field": "data.n_instructions", "values": [10]}],
            },
            "axes.0.values.0",
            "smaller than data.n_instructions=10",
        ),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"name": "bad name!"}, "name", "pattern"),
    ],
)
def test_bad_specs_fail_with_field_paths(overrides: dict[str, Any], path: str, rule: str) -> None:
    with pytest.raises(SpecError) as err:
        spec_from_dict(tiny_spec(**overrides))
    msg = str(err.value)
    assert path in msg and rule in msg, msg


def test_pydantic_model_raises_validation_error_for_the_service() -> None:
    with pytest.raises(ValidationError) as err:
        ExperimentSpec.model_validate(tiny_spec(retries=-1))
    assert err.value.errors()[0]["loc"] == ("retries",)


def test_spec_is_frozen_and_hash_is_stable() -> None:
    a, b = spec_from_dict(tiny_spec()), spec_from_dict(tiny_spec())
    assert a.spec_hash == b.spec_hash and len(a.spec_hash) == 64
    with pytest.raises(ValidationError):
        a.retries = 3  # type: ignore[misc]
    assert spec_from_dict(tiny_spec(retries=2)).spec_hash != a.spec_hash


def test_load_spec_yaml_and_json_and_errors(tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    js.write_text(json.dumps(tiny_spec()))
    assert load_spec(js).name == "tiny"
    yml = tmp_path / "s.yaml"
    yml.write_text((PRESET_DIR / "smoke.yaml").read_text().replace("retries: 1", "retries: x"))
    with pytest.raises(SpecError, match=r"s\.yaml: .*retries: Input should be a valid integer"):
        load_spec(yml)
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="must hold a mapping"):
        load_spec(tmp_path / "list.yaml")
    with pytest.raises(SpecError, match="no preset 'nope'"):
        load_preset("nope")
