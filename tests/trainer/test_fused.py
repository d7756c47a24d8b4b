"""Fused training (`trainer.fused`): K members trained as one equal K separate runs."""

from __future__ import annotations

import pytest
import torch

from data import generate
from trainer import ConfigError, TrainConfig, train
from trainer.checkpoint import find_checkpoint
from trainer.fused import FusedGPT2, fusable, train_fused
from trainer.model import build_model

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


def test_forward_matches_each_member_model(members):
    cfgs, dss = members
    models = [build_model(c, d.vocab) for c, d in zip(cfgs, dss, strict=True)]
    fused = FusedGPT2(models)
    ids = torch.randint(1, dss[0].vocab.size, (3, 5, 17))
    with torch.no_grad():
        got = fused(ids)
        tail = fused(ids[1:], first=1)  # members 1 and 2 alone: their own weights still
        want = torch.stack([m(input_ids=ids[k]).logits for k, m in enumerate(models)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tail, want[1:], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def separate(members):
    cfgs, dss = members
    return [train(c, d) for c, d in zip(cfgs, dss, strict=True)]


# None: the CPU default (all 3 members in one pass); 2: passes of 2 and 1 members.
@pytest.mark.parametrize("chunk", [None, 2])
def test_fused_run_equals_separate_runs(members, separate, chunk):
    cfgs, dss = members
    reports: list[list[dict]] = []
    fused = train_fused(cfgs, dss, report=lambda ms, ckpt: reports.append(ms), member_chunk=chunk)
    assert [[m["step"] for m in ms] for ms in reports] == [[6, 6, 6], [12, 12, 12]]
    assert all(m["fused_members"] == 3 for ms in reports for m in ms)
    for alone, together in zip(separate, fused, strict=True):
        a, b = _strip(alone.history), _strip(together.history)
        assert [m.keys() for m in a] == [m.keys() for m in b]
        for ma, mb in zip(a, b, strict=True):
            for key in ma:
                # Losses to float32 rounding; counts, accuracies and lr exactly.
                if key.endswith("loss"):
                    assert mb[key] == pytest.approx(ma[key], rel=1e-4), key
                else:
                    assert mb[key] == ma[key], key
        for (name, pa), pb in zip(
            alone.model.state_dict().items(), together.model.state_dict().values(), strict=True
        ):
            # Float32 rounding of batched vs one-model products, through 12 AdamW steps: the
            # largest gap seen was 8.8e-6 (an attention bias, GELU activation; 2026-12-03).
            torch.testing.assert_close(pb, pa, rtol=1e-4, atol=3e-5, msg=name)
    # The members really differ from one another (no member trained another's data).
    assert _strip(fused[0].history) != _strip(fused[1].history)


def test_fused_run_resumes_exactly(members, tmp_path):
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
    # A member's checkpoint is a plain run's: `train` picks member 1 up and finishes it alone.
    alone = train(
        cfgs[1].model_copy(update={"max_steps": 12}), dss[1], checkpoint_dir=tmp_path / "cut" / "m1"
    )
    assert alone.history[-1]["step"] == 12


def test_what_cannot_be_fused():
    assert fusable([_cfg(0), _cfg(1)]) is None
    assert "more than its seed" in fusable([_cfg(0), _cfg(1, lr=1e-2)])
    assert "dropout" in fusable([_cfg(0, dropout=0.1)])
    assert "batch_tokens" in fusable([_cfg(0, batch_size=None, batch_tokens=500)])
    with pytest.raises(ConfigError, match="fuse: cannot fuse these trials: member 1"):
        train_fused([_cfg(0), _cfg(1, lr=1e-2)], [None, None])


def test_members_with_different_step_counts_are_refused(make_spec):
    cfgs = [_cfg(0, max_steps=None, epochs=1), _cfg(1, max_steps=None, epochs=1)]
    dss = [generate(make_spec(seed=0)), generate(make_spec(seed=1, examples_per_instruction=100))]
    with pytest.raises(ConfigError, match="member 1 trains 25 steps, member 0 63"):
        train_fused(cfgs, dss)
