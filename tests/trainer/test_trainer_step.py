"""The training step's speed knobs change speed only: each gives the numbers of the default."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import ConfigError, TrainConfig
from trainer.batching import IGNORE, collate
from trainer.loop import train

VOLATILE = {"wall_s", "tokens_per_s"}


def _cfg(**kw) -> TrainConfig:
    base = dict(
        model="nano",
        max_steps=10,
        batch_size=16,
        eval_every=5,
        eval_per_epoch=False,
        eval_test_n=40,
        eval_train_n=20,
        lr=3e-3,
        seed=2,
    )
    return TrainConfig(**{**base, **kw})


def _close(a, b, rel):
    for ma, mb in zip(a.history, b.history, strict=True):
        for key in set(ma) - VOLATILE:
            assert mb[key] == pytest.approx(ma[key], rel=rel), key


def test_collate_pads_to_a_multiple_without_changing_targets(small_ds):
    enc = small_ds.encoded("train")
    idx = np.arange(7)
    x1, y1 = collate(enc, idx, 0)
    x8, y8 = collate(enc, idx, 0, multiple=8)
    assert x8.shape[1] % 8 == 0 and x8.shape[1] >= x1.shape[1] > x8.shape[1] - 8
    w = x1.shape[1]
    assert (x8[:, :w] == x1).all() and (y8[:, :w] == y1).all()
    # Past the old width: no targets, and inputs only pad (after the longest row's last token).
    assert (y8[:, w:] == IGNORE).all() and (x8[:, w + 1 :] == 0).all()


def test_padding_to_a_multiple_trains_the_same_model(small_ds):
    plain = train(_cfg(), small_ds)
    padded = train(_cfg(pad_multiple=16), small_ds)
    _close(plain, padded, rel=1e-4)


def test_prefetch_and_the_optimizer_kernel_leave_the_numbers_alone(small_ds):
    base = train(_cfg(), small_ds)
    no_prefetch = train(_cfg(prefetch=False), small_ds)
    assert [{k: v for k, v in m.items() if k not in VOLATILE} for m in no_prefetch.history] == [
        {k: v for k, v in m.items() if k not in VOLATILE} for m in base.history
    ]
    foreach = train(_cfg(fused_optimizer=False), small_ds)
    _close(base, foreach, rel=1e-4)


def test_speed_knobs_are_validated(small_ds):
    with pytest.raises(ConfigError, match="cuda_graphs: needs compile=True"):
        _cfg(cuda_graphs=True)
    with pytest.raises(ConfigError, match="cuda_graphs: CUDA graphs need CUDA"):
        _cfg(cuda_graphs=True, compile=True, device="cpu")
    with pytest.raises(ConfigError, match="pad_multiple"):
        _cfg(pad_multiple=0)
    longest = int(np.diff(small_ds.encoded("train").offsets).max())
    with pytest.raises(ConfigError, match="pad_multiple: 64 pads the widest batch to 64"):
        train(_cfg(pad_multiple=64, n_positions=max(longest, 40)), small_ds)
