"""Shared fixtures: small data sets and one briefly trained model, built once per session."""

from __future__ import annotations

import pytest
import torch

from data import DataSpec, generate


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Predictable speed and numerics on the shared 2-core machine.
    torch.set_num_threads(1)


def small_spec(**kw) -> DataSpec:
    """A small alphabet and short strings: learnable in seconds on one core."""
    base = dict(
        n_instructions=4,
        examples_per_instruction=250,
        alphabet="abcd",
        z_len=(3, 6),
        x_len=(2, 2),
        y_len=(1, 2),
        noop_fraction=0.5,
        seed=0,
        test={"n_test": 300},
    )
    base.update(kw)
    return DataSpec(**base)


@pytest.fixture(scope="session")
def make_spec():
    """`small_spec` as a fixture (test modules here cannot import conftest by name)."""
    return small_spec


@pytest.fixture(scope="session")
def small_ds():
    return generate(small_spec())


@pytest.fixture(scope="session")
def trained(small_ds):
    """A nano model trained until it mostly solves the easy task (shared by several tests)."""
    from trainer import TrainConfig
    from trainer.loop import train

    cfg = TrainConfig(
        model="nano",
        max_steps=300,
        batch_size=32,
        lr=3e-3,
        warmup_steps=20,
        eval_test_n=300,
        eval_train_n=300,
        eval_per_epoch=False,
        seed=0,
    )
    return cfg, train(cfg, small_ds)
