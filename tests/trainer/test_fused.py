"""Fused training (`trainer.fused`): K members trained as one equal K separate runs."""

from __future__ import annotations

import shutil

import pytest
import torch

from data import generate
from trainer import ConfigError, TrainConfig
from trainer.checkpoint import find_checkpoint
from trainer.config import fusable
from trainer.fused import train_fused
from trainer.loop import train

# Figures that depend on the clock or on which other members shared the step.
VOLATILE = {"wall_s", "tokens_per_s", "fused_members"}


def _cfg(seed: int, **kw) -> TrainConfig:
    base = dict(
        model="nano",
        max_steps=12,
        batch_size=16,
        eval_every=6,
        eval_per_epoch=False,
        eval_test_n=60,
        eval_train_n=40,
        lr=3e-3,
        warmup_steps=2,
        grad_clip=0.5,  # small enough to clip: per-member clipping is part of what is checked
        seed=seed,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def members(make_spec):
    """Three members with their own seeds and their own data sets (same size)."""
    seeds = (3, 7, 11)
    return [_cfg(s) for s in seeds], [generate(make_spec(seed=s)) for s in seeds]


def _strip(history):
    return [{k: v for k, v in m.items() if k not in VOLATILE} for m in history]


@pytest.fixture(scope="module")
def separate(members):
    cfgs, dss = members
    return [train(c, d) for c, d in zip(cfgs, dss, strict=True)]


def _assert_like_separate(alone, other):
    """``other`` (a fused member, or a run resumed from one) equals the separate run ``alone``:
    losses and weights to float32 rounding, counts, accuracies and lr exactly."""
    a, b = _strip(alone.history), _strip(other.history)
    assert [m.keys() for m in a] == [m.keys() for m in b]
    for ma, mb in zip(a, b, strict=True):
        for key in ma:
            if key.endswith("loss"):
                assert mb[key] == pytest.approx(ma[key], rel=1e-4), key
            else:
                assert mb[key] == ma[key], key
    for (name, pa), pb in zip(
        alone.model.state_dict().items(), other.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=3e-5, msg=name)


# None: the CPU default (all 3 members in one pass); 2: passes of 2 and 1 members.
@pytest.mark.parametrize("chunk", [None, 2])
def test_fused_run_equals_separate_runs(members, separate, chunk):
    cfgs, dss = members
    reports: list[list[dict]] = []
    fused = train_fused(cfgs, dss, report=lambda ms, ckpt: reports.append(ms), member_chunk=chunk)
    assert [[m["step"] for m in ms] for ms in reports] == [[6, 6, 6], [12, 12, 12]]
    assert all(m["fused_members"] == 3 for ms in reports for m in ms)
    for alone, together in zip(separate, fused, strict=True):
        _assert_like_separate(alone, together)
    # The members really differ from one another (no member trained another's data).
    assert _strip(fused[0].history) != _strip(fused[1].history)


def test_gradient_clipping_changes_these_runs(members, separate):
    """grad_clip=0.5 fires in these runs (so the equalities above check per-member clipping):
    without it, the same run ends elsewhere."""
    cfgs, dss = members
    unclipped = train(cfgs[0].model_copy(update={"grad_clip": 0.0}), dss[0])
    assert unclipped.history[0]["train_loss"] != separate[0].history[0]["train_loss"]
    diffs = [
        (pa - pb).abs().max().item()
        for pa, pb in zip(
            separate[0].model.state_dict().values(),
            unclipped.model.state_dict().values(),
            strict=True,
        )
    ]
    assert max(diffs) > 1e-3  # far beyond the 1e-4 / 1e-5 the equalities allow


def test_fused_run_resumes_exactly(members, separate, tmp_path):
    cfgs, dss = members
    full = train_fused(cfgs, dss, checkpoint_dir=tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_at_6(ms, ckpt):
        if ms[0]["step"] == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_fused(cfgs, dss, report=stop_at_6, checkpoint_dir=tmp_path / "cut")
    for k in range(3):
        assert find_checkpoint(tmp_path / "cut" / f"m{k}").name == "ckpt-000000006"
    shutil.copytree(tmp_path / "cut" / "m1", tmp_path / "m1-at-6")  # for the test below
    later: list[list[dict]] = []
    resumed = train_fused(
        cfgs, dss, report=lambda ms, c: later.append(ms), checkpoint_dir=tmp_path / "cut"
    )
    assert [ms[0]["step"] for ms in later] == [12]
    for a, b in zip(full, resumed, strict=True):
        assert _strip(b.history) == _strip(a.history)
        for pa, pb in zip(
            a.model.state_dict().values(), b.model.state_dict().values(), strict=True
        ):
            assert pa.equal(pb)

    # A member's checkpoint is a plain run's: `train` picks member 1 up at step 6 (mid-run) and
    # finishes it alone, like the separate run of member 1. It trains steps 7-12 only: one
    # report, at 12 (a `train` that missed the checkpoint would report at 6 and 12).
    seen: list[int] = []
    alone = train(
        cfgs[1],
        dss[1],
        report=lambda m, c: seen.append(m["step"]),
        checkpoint_dir=tmp_path / "m1-at-6",
    )
    assert seen == [12]
    _assert_like_separate(separate[1], alone)


def test_what_cannot_be_fused(members):
    cfgs, dss = members
    specs = [d.spec for d in dss]
    assert fusable([_cfg(0), _cfg(1)]) is None
    assert fusable(cfgs, specs) is None
    assert "more than its seed" in fusable([_cfg(0), _cfg(1, lr=1e-2)])
    assert "dropout" in fusable([_cfg(0, dropout=0.1)])
    assert "batch_tokens" in fusable([_cfg(0, batch_size=None, batch_tokens=500)])
    other_letters = specs[1].model_copy(update={"alphabet": "abce"})
    assert "vocabulary" in fusable(cfgs[:2], [specs[0], other_letters])
    with pytest.raises(ConfigError, match="fuse: cannot fuse these trials: member 1"):
        train_fused([_cfg(0), _cfg(1, lr=1e-2)], dss[:2])


def test_members_with_different_step_counts_are_refused(make_spec):
    cfgs = [_cfg(0, max_steps=None, epochs=1), _cfg(1, max_steps=None, epochs=1)]
    dss = [generate(make_spec(seed=0)), generate(make_spec(seed=1, examples_per_instruction=100))]
    with pytest.raises(ConfigError, match="member 1's data set has 400 training examples, member"):
        train_fused(cfgs, dss)
