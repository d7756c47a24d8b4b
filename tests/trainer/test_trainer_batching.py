"""Length-bucketed batching: complete, deterministic per (seed, epoch), little padding."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.batching import IGNORE, collate, epoch_plan, seq_lengths
from trainer.config import TrainConfig
from trainer.member import EpochPlans
from trainer.step import lr_at


def _lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(10, 120, size=n)


@pytest.mark.parametrize("sizes", [{"batch_size": 32}, {"batch_tokens": 2000}])
def test_each_example_once_per_epoch(sizes):
    lengths = _lengths()
    plan = epoch_plan(lengths, seed=0, epoch=3, chunk=8, **sizes)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    if "batch_tokens" in sizes:
        assert all(len(b) * lengths[b].max() <= 2000 for b in plan)


def test_order_is_a_function_of_seed_and_epoch():
    lengths = _lengths()
    a = epoch_plan(lengths, seed=1, epoch=2, batch_size=16)
    b = epoch_plan(lengths, seed=1, epoch=2, batch_size=16)
    c = epoch_plan(lengths, seed=1, epoch=3, batch_size=16)
    d = epoch_plan(lengths, seed=2, epoch=2, batch_size=16)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, d, strict=True))


def test_bucketing_wastes_little_padding():
    lengths = _lengths(4096)
    plan = epoch_plan(lengths, seed=0, epoch=0, batch_size=32, chunk=64)
    padded = sum(len(b) * lengths[b].max() for b in plan)
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(lengths)), len(lengths) // 32)
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    waste = padded / lengths.sum() - 1
    assert waste < 0.05, waste
    assert padded_random / lengths.sum() - 1 > 0.5  # what bucketing saves here


def test_steps_per_epoch_matches_plan():
    lengths = _lengths(1000)
    for bs, chunk in [(32, 4), (7, 64), (1000, 1), (64, 64)]:
        cfg = TrainConfig(model="nano", max_steps=1, batch_size=bs, bucket_chunk=chunk)
        plans = EpochPlans(lengths, cfg)
        assert plans.size(0) == len(plans.plan(0)) == plans.size(5)
    plans = EpochPlans(lengths, TrainConfig(model="nano", max_steps=1, batch_size=100))
    assert plans.locate(0) == (0, 0) and plans.locate(10) == (1, 0) and plans.locate(25) == (2, 5)


class _Split:
    # tokens of 3 sequences: prompt lens 3, 2, 4
    tokens = np.array([5, 6, 7, 8, 1, 5, 6, 7, 1, 5, 6, 7, 8, 9, 1], dtype=np.int32)
    offsets = np.array([0, 5, 9, 15], dtype=np.int64)
    prompt_lens = np.array([3, 2, 4], dtype=np.int32)


def test_collate_masks_prompt_and_padding():
    inputs, targets = collate(_Split, np.array([0, 1, 2]), pad_id=0, loss_on="output")
    assert inputs.tolist() == [[5, 6, 7, 8, 1], [5, 6, 7, 1, 0], [5, 6, 7, 8, 9]]
    # seq 0: prompt 5 6 7 | completion 8 1 -> targets for positions 2, 3 only
    I = IGNORE  # noqa: E741
    assert targets.tolist() == [[I, I, 8, 1, I], [I, 7, 1, I, I], [I, I, I, 9, 1]]
    _, t_all = collate(_Split, np.array([1]), pad_id=0, loss_on="all")
    assert t_all.tolist() == [[6, 7, 1]]
    assert seq_lengths(_Split).tolist() == [5, 4, 6]


def test_lr_schedule():
    cfg = TrainConfig(model="nano", max_steps=100, lr=1e-3, warmup_steps=10)
    assert lr_at(0, cfg, 100) == pytest.approx(1e-4)
    assert lr_at(9, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(10, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(55, cfg, 100) == pytest.approx(0.5e-3)
    assert lr_at(100, cfg, 100) == 0.0
    cos = TrainConfig(model="nano", max_steps=100, schedule="cosine")
    assert lr_at(50, cos, 100) == pytest.approx(0.5e-3)
    const = TrainConfig(model="nano", max_steps=100, schedule="constant")
    assert lr_at(99, const, 100) == 1e-3
