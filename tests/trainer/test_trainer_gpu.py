"""CUDA code paths: bf16 autocast, torch.compile, MFU and peak memory (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from trainer import TrainConfig
from trainer.decode import greedy_decode
from trainer.loop import train


@pytest.mark.gpu
def test_bf16_compiled_training_reports_mfu_and_memory(small_ds):
    cfg = TrainConfig(
        model="tiny",
        max_steps=40,
        batch_size=64,
        lr=3e-3,
        compile=True,
        eval_every=20,
        eval_per_epoch=False,
        eval_test_n=100,
        eval_train_n=50,
    )
    result = train(cfg, small_ds)
    m = result.metrics
    assert next(result.model.parameters()).device.type == "cuda"
    assert 0 < m["mfu"] < 1 and m["peak_mem_gb"] > 0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] * 1.01


@pytest.mark.gpu
def test_cuda_decode_matches_batch_size_one(small_ds, trained):
    _, result = trained
    model = result.model.to("cuda")
    enc = small_ds.encoded("test")
    prompts = [enc.prompt(i) for i in range(200)]
    eos = small_ds.vocab.eos_id
    a = greedy_decode(model, prompts, eos, 10, batch_size=1, exact=True)
    b = greedy_decode(model, prompts, eos, 10, batch_size=128, exact=True)
    assert a == b
    model.to("cpu")


@pytest.mark.gpu
def test_bf16_precision_is_rejected_without_cuda_only_on_cpu():
    assert torch.cuda.is_available()
    TrainConfig(model="nano", max_steps=1, precision="bf16")  # fine when CUDA is present


def _watch_syncs(monkeypatch, module, name):
    """Run ``module.name`` (a stepper's step) with CUDA's sync debug mode set to error: any
    host-device synchronisation inside it raises."""
    inner = getattr(module, name)
    calls = []

    def strict(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return inner(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            calls.append(1)

    monkeypatch.setattr(module, name, strict)
    return calls


@pytest.mark.gpu
def test_training_steps_never_wait_for_the_gpu(small_ds, make_spec, monkeypatch):
    import trainer.fused as fused_mod
    import trainer.loop as loop_mod
    from data import generate
    from trainer.fused import train_fused

    cfg = TrainConfig(model="tiny", max_steps=12, batch_size=32, eval_test_n=20, eval_train_n=0)
    plain = _watch_syncs(monkeypatch, loop_mod.ModelStepper, "step")
    train(cfg, small_ds)
    assert len(plain) == 12
    fused = _watch_syncs(monkeypatch, fused_mod.FusedStepper, "step")
    train_fused([cfg, cfg.model_copy(update={"seed": 1})], [small_ds, generate(make_spec(seed=1))])
    assert len(fused) == 12


@pytest.mark.gpu
def test_compiled_steps_with_cuda_graphs_train(small_ds):
    cfg = TrainConfig(
        model="tiny",
        max_steps=30,
        batch_size=64,
        lr=3e-3,
        compile=True,
        cuda_graphs=True,
        pad_multiple=16,
        eval_every=15,
        eval_per_epoch=False,
        eval_test_n=50,
        eval_train_n=0,
    )
    result = train(cfg, small_ds)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.gpu
def test_fused_members_equal_separate_runs_on_cuda(make_spec):
    from data import generate
    from trainer.fused import train_fused

    cfgs = [
        TrainConfig(
            model="nano",
            max_steps=10,
            batch_size=16,
            precision="fp32",
            eval_per_epoch=False,
            eval_test_n=40,
            eval_train_n=0,
            seed=s,
        )
        for s in (0, 1, 2)
    ]
    dss = [generate(make_spec(seed=s)) for s in (0, 1, 2)]
    fused = train_fused(cfgs, dss)
    for cfg, ds, member in zip(cfgs, dss, fused, strict=True):
        alone = train(cfg, ds).metrics
        assert member.metrics["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-3)
        assert abs(member.metrics["test_acc"] - alone["test_acc"]) <= 1 / 40
