"""TrainConfig validation: good configs resolve, bad ones name the field and the rule."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from trainer import PRESETS, ConfigError, LoraSpec, TrainConfig, TrainerError


def test_presets_and_overrides():
    assert TrainConfig(max_steps=1).dims == PRESETS["paper"]
    assert PRESETS["paper"][:3] == (6, 4, 256)  # P3 appendix B
    cfg = TrainConfig(model="tiny", n_layer=3, max_steps=1)
    assert cfg.dims.n_layer == 3 and cfg.dims.n_embd == PRESETS["tiny"].n_embd
    explicit = TrainConfig(model=None, n_layer=1, n_head=2, n_embd=32, max_steps=1)
    assert explicit.dims[:3] == (1, 2, 32)


def test_defaults_and_derived():
    cfg = TrainConfig(epochs=2)
    assert cfg.examples_per_batch == 256 and cfg.lr == 1e-3 and cfg.schedule == "linear"
    assert TrainConfig(epochs=2, batch_tokens=4096).examples_per_batch is None
    assert not cfg.pretrained


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            {"model": None, "n_layer": 2, "n_head": 3, "n_embd": 64, "max_steps": 1},
            "n_embd: 64 is not divisible by n_head=3",
        ),
        ({"model": "nano", "n_head": 5, "max_steps": 1}, "n_embd: 64 is not divisible by n_head=5"),
        ({"epochs": 2, "max_steps": 10}, "epochs/max_steps: set exactly one"),
        ({}, "epochs/max_steps: set exactly one"),
        ({"max_steps": 1, "batch_size": 8, "batch_tokens": 100}, "batch_size/batch_tokens"),
        (
            {"max_steps": 1, "device": "cpu", "precision": "bf16"},
            "precision: bf16 autocast needs CUDA",
        ),
        ({"max_steps": 1, "device": "tpu"}, "device: must be"),
        ({"max_steps": 1, "lr": 0}, "lr:"),
        ({"max_steps": 1, "betas": (0.9, 1.0)}, "betas:"),
        ({"max_steps": 1, "model": "huge"}, "model:"),
        ({"max_steps": 1, "lora": {"r": 4}}, "lora: needs a pretrained checkpoint"),
        ({"max_steps": 1, "init": "/some/ckpt", "n_layer": 2}, "cannot resize a pretrained"),
        ({"max_steps": 1, "model": None, "n_layer": 2}, "n_head, n_embd: required when model=None"),
        ({"max_steps": 1, "learning_rate": 1e-3}, "learning_rate: Extra inputs are not permitted"),
        ({"max_steps": 0}, "max_steps:"),
    ],
)
def test_bad_configs_name_the_field(kwargs, needle):
    with pytest.raises(ConfigError) as exc:
        TrainConfig(**kwargs)
    assert needle in str(exc.value)
    assert isinstance(exc.value, TrainerError) and isinstance(exc.value, ValueError)


def test_frozen():
    cfg = TrainConfig(max_steps=1)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        cfg.lr = 1.0  # type: ignore[misc]


def test_embeds_in_another_spec_with_field_path():
    class Outer(BaseModel):
        train: TrainConfig

    ok = Outer.model_validate({"train": {"model": "nano", "max_steps": 3}})
    assert ok.train.dims == PRESETS["nano"]
    with pytest.raises(ValueError, match="epochs/max_steps"):
        Outer.model_validate({"train": {"model": "nano", "max_steps": 3, "epochs": 1}})


def test_roundtrip_json():
    cfg = TrainConfig(model="tiny", epochs=3, lora=None, betas=(0.9, 0.95))
    again = TrainConfig(**cfg.model_dump(mode="json"))
    assert again == cfg
    spec = LoraSpec(r=4, target_modules=("c_attn",))
    assert TrainConfig(init="/x", lora=spec, max_steps=1).lora == spec
