"""CUDA code paths: bf16 autocast, torch.compile, MFU and peak memory (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from trainer import TrainConfig, train
from trainer.decode import greedy_decode


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
