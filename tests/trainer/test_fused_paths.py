"""The fused step's CUDA-side paths, run on the CPU so that a GPU's first run is not theirs:
bf16 autocast and torch.compile.

- **bf16**: `TrainConfig` keeps bf16 for CUDA (on a CPU it is slow and pointless), so these
  tests switch the members' autocast dtype to bf16 after setup: the same step code then runs
  under ``torch.autocast("cpu", torch.bfloat16)`` as it runs under CUDA's. Fused and separate
  runs round differently in bf16 (other product shapes), and AdamW turns rounding noise in
  near-zero gradients into whole steps, so they agree to bf16's precision, not weight for
  weight: losses within 0.2 % (relative; measured 0.01-0.03 %), and the distance between the
  two runs' final weights under 10 % of how far training moved them (measured 4 %, as far as
  a bf16 run lands from the fp32 one).
- **compile**: `compile=True` runs the fused model through torch.compile (TorchDynamo's graph
  capture of `FusedGPT2`, AOTAutograd's forward and backward graphs, recompiles as batch widths
  change); it must train like the eager fused model: losses within 1e-4 (relative), weights
  within 1e-5. The test compiles with the ``aot_eager`` backend: TorchInductor's C++ code
  generation took over 10 minutes on this shared 2-core machine, and on a GPU Inductor writes
  Triton kernels instead, another code generator (that one runs in `gpu_check`'s CUDA tests).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from data import generate
from trainer import TrainConfig
from trainer.fused import FusedStepper, train_fused
from trainer.loop import ModelStepper
from trainer.model import build_model
from trainer.run import run

SEEDS = (3, 7)


def _cfg(seed: int, **kw) -> TrainConfig:
    base = dict(
        model="nano",
        max_steps=6,
        batch_size=16,
        eval_per_epoch=False,
        eval_test_n=20,
        eval_train_n=0,
        lr=3e-3,
        seed=seed,
    )
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def datasets(make_spec):
    return [generate(make_spec(seed=s)) for s in SEEDS]


def _bf16(stepper):
    stepper.members = [replace(m, amp_dtype=torch.bfloat16) for m in stepper.members]
    return stepper


def _distance(a, b) -> float:
    """Euclidean distance between two state dicts."""
    sq = sum(((p - q) ** 2).sum() for p, q in zip(a.values(), b.values(), strict=True))
    return float(sq) ** 0.5


def _close(a, b, loss_rel, weight_atol):
    assert [m["step"] for m in a.history] == [m["step"] for m in b.history]
    for ma, mb in zip(a.history, b.history, strict=True):
        assert mb["train_loss"] == pytest.approx(ma["train_loss"], rel=loss_rel)
    for (name, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(pb, pa, rtol=0, atol=weight_atol, msg=name)


def test_fused_bf16_autocast_trains_like_separate_bf16_runs(datasets):
    cfgs = [_cfg(s) for s in SEEDS]
    fused = run(_bf16(FusedStepper(cfgs, datasets)))
    alone = [run(_bf16(ModelStepper(c, d)))[0] for c, d in zip(cfgs, datasets, strict=True)]
    fp32 = train_fused(cfgs, datasets)
    for cfg, ds, a, f, plain in zip(cfgs, datasets, alone, fused, fp32, strict=True):
        for ma, mf in zip(a.history, f.history, strict=True):
            assert ma.keys() | {"fused_members"} == mf.keys() and ma["step"] == mf["step"]
            assert mf["train_loss"] == pytest.approx(ma["train_loss"], rel=2e-3)
        start = build_model(cfg, ds.vocab).state_dict()
        moved = _distance(a.model.state_dict(), start)
        assert _distance(f.model.state_dict(), a.model.state_dict()) < 0.1 * moved
        # bf16 really ran: the fp32 run lands elsewhere.
        assert _distance(plain.model.state_dict(), a.model.state_dict()) > 0.005 * moved


def test_compiled_fused_model_trains_like_the_eager_one(datasets, monkeypatch):
    calls, real = [], torch.compile

    def aot_eager(model, **kw):
        calls.append(kw)
        return real(model, backend="aot_eager", **kw)

    monkeypatch.setattr("trainer.step.torch.compile", aot_eager)
    eager = train_fused([_cfg(s) for s in SEEDS], datasets)
    compiled = train_fused([_cfg(s, compile=True) for s in SEEDS], datasets)
    assert calls == [{"mode": None}]  # the fused model went through torch.compile, once
    for a, b in zip(eager, compiled, strict=True):
        _close(a, b, loss_rel=1e-4, weight_atol=1e-5)
