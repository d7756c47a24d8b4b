"""Measured training memory (`trainer.memory`) and the GPU share `train` keeps within.

Most tests use a one-layer GPT-2 with hidden size 32 on sequences of 48 tokens: a fake-tensor
step costs the same whatever the size, and the measurements are cached, so runs are shared.
"""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

import trainer.memory as memory
from data import generate
from trainer import ConfigError, LoraSpec, TrainConfig
from trainer.batching import seq_lengths
from trainer.loop import train
from trainer.memory import (
    MemoryEstimate,
    MiB,
    estimate_train_memory,
    gpu_fraction_for,
    worst_batch_shape,
)
from trainer.model import build_model

VOCAB, LEN = 13, 48  # inputs are LEN - 1 = 47 tokens wide
WIDTH = LEN - 1


def cfg(n_layer: int = 1, batch_size: int = 8, **kw) -> TrainConfig:
    return TrainConfig(
        model=None,
        n_layer=n_layer,
        n_head=2,
        n_embd=32,
        n_positions=64,
        batch_size=batch_size,
        max_steps=1,
        **kw,
    )


def est(n_layer: int = 1, rows: int = 8, **kw) -> MemoryEstimate:
    measure = kw.pop("measure_rows", None)
    return estimate_train_memory(cfg(n_layer, rows, **kw), VOCAB, LEN, measure_rows=measure)


# --- what is counted ------------------------------------------------------------------------


def test_parameter_gradient_and_adamw_bytes_are_exact_counts():
    e = est()
    model = build_model(cfg(), memory._SizedVocab(VOCAB))
    params = list(model.parameters())  # tied wte/lm_head appear once
    n = sum(p.numel() for p in params)
    assert list(model.buffers()) == []
    assert e.parameters == 4 * n
    assert e.gradients == 4 * n
    assert e.optimizer == 4 * n * 2 + 4 * len(params)  # exp_avg, exp_avg_sq, fp32 step each
    assert e.rows == 8 and e.seq_len == WIDTH and e.dtype == "bf16"
    assert e.total == sum(
        getattr(e, f)
        for f in ("parameters", "gradients", "optimizer", "activations", "temporaries", "overhead")
    )
    assert e.overhead == memory.CUDA_OVERHEAD_BYTES
    line = e.describe()
    assert line.startswith("bf16, 8 rows x 47 tokens: parameters ") and "MiB" in line
    assert str(e) == line and f"= {e.total / MiB:.1f} MiB" in line


def test_activations_are_linear_in_batch_rows():
    a4, a8, a16 = (est(rows=r).activations for r in (4, 8, 16))
    # Saved tensors are per-row except the batch-independent bf16 weight casts: a straight line.
    assert abs((a16 - a8) - 2 * (a8 - a4)) <= 0.001 * a16
    assert a8 / a4 == pytest.approx(2, rel=0.05)
    assert a16 / a8 == pytest.approx(2, rel=0.05)


def test_activations_grow_linearly_with_layers():
    a1, a2, a3 = (est(n_layer=n).activations for n in (1, 2, 3))
    assert a1 < a2 < a3
    assert a3 - a2 == pytest.approx(a2 - a1, rel=0.01)  # every block saves the same
    assert est(n_layer=3).parameters > est(n_layer=1).parameters


def test_scaled_measurement_matches_the_direct_one():
    direct = est(rows=16)
    scaled = est(rows=16, measure_rows=8)  # runs 4 and 8 rows, extrapolates to 16
    assert direct.measured_rows == (16,) and scaled.measured_rows == (4, 8)
    assert "scaled from (4, 8)" in scaled.describe()
    assert scaled.activations == pytest.approx(direct.activations, rel=0.01)
    assert scaled.temporaries == pytest.approx(direct.temporaries, rel=0.03)
    assert scaled.total == pytest.approx(direct.total, rel=0.01)
    for part in ("parameters", "gradients", "optimizer"):
        assert getattr(scaled, part) == getattr(direct, part)


def test_fake_tensors_count_what_a_real_cpu_step_counts():
    c = memory._memory_config(cfg())
    fake = memory._measure(c, VOCAB, 4, WIDTH, True, True)
    real = memory._measure(c, VOCAB, 4, WIDTH, True, False)
    assert fake.saved == real.saved > 0
    assert max(fake.trace) == max(real.trace)
    assert (fake.parameters, fake.gradients, fake.optimizer) == (
        real.parameters,
        real.gradients,
        real.optimizer,
    )


def test_cuda_autocast_lists_are_applied_on_cpu(monkeypatch):
    # CUDA autocast runs pow in fp32; CPU autocast does not, so gelu_new's saved tensors differ.
    # Scratch models use torch's fused gelu (on neither list); GPT-2 checkpoints use gelu_new.
    from trainer import model as model_module

    monkeypatch.setattr(model_module, "ACTIVATION", "gelu_new")
    x = torch.ones(2, 3, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16), memory._cuda_autocast_policy(True):
        assert torch.pow(x, 3.0).dtype == torch.float32
        assert (x**3).dtype == torch.float32
        assert torch.softmax(x, -1).dtype == torch.float32
        assert torch.tanh(x).dtype == torch.bfloat16  # not on either list
    assert torch.pow(x, 3.0).dtype == torch.bfloat16  # only inside an autocast region
    c = memory._memory_config(cfg())
    with_policy = memory._measure.__wrapped__(c, VOCAB, 4, WIDTH, True, True)
    monkeypatch.setattr(memory, "_cuda_autocast_policy", lambda on: contextlib.nullcontext())
    plain = memory._measure.__wrapped__(c, VOCAB, 4, WIDTH, True, True)
    # Per MLP element CUDA saves pow's fp32 input, tanh's fp32 output and fp32 (1 + tanh) plus a
    # bf16 copy for c_proj (16 bytes); CPU autocast saves five bf16 tensors (10 bytes).
    assert with_policy.saved - plain.saved == 1 * 4 * WIDTH * (4 * 32) * 6


def test_fp32_precision_and_cpu_device_measure_without_autocast():
    e32 = est(precision="fp32")
    assert e32.dtype == "fp32" and e32.activations > est().activations
    assert est(device="cpu").dtype == "fp32"


def test_dropout_adds_cuda_bool_masks_not_attention_matrices():
    e0, e1 = est(), est(dropout=0.1)
    # embeddings + 2 per block, each (B, T, C) bytes; CPU SDPA with dropout would save (B, H, T, T)
    assert e1.activations - e0.activations == 8 * WIDTH * 32 * (1 + 2 * 1)
    assert e1.temporaries == e0.temporaries


def test_lora_counts_gradients_and_state_of_the_adapters_only(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"<unk>": 0, "<eos>": 1, "a": 2}, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    from trainer.model import ACTIVATION

    hf = GPT2Config(  # dropout 0.1 everywhere, as GPT-2 checkpoints have; the scratch activation
        vocab_size=3,  # so that activations compare with est()'s
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=1,
        eos_token_id=1,
        activation_function=ACTIVATION,
    )
    GPT2LMHeadModel(hf).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lora = TrainConfig(init=str(tmp_path), lora=LoraSpec(r=4), batch_size=8, max_steps=1)
    e = estimate_train_memory(lora, VOCAB, LEN)
    model = build_model(lora, None)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    assert 0 < n_train < n_all
    assert e.gradients == 4 * n_train
    assert e.optimizer == 8 * n_train + 4 * sum(1 for p in model.parameters() if p.requires_grad)
    assert e.parameters == 4 * n_all and list(model.buffers()) == []
    # Dropout was measured at zero (+ masks): CPU SDPA with dropout would have saved (B, H, T, T)
    # attention matrices, about +30 % here.
    assert e.activations < 1.1 * est().activations


# --- shapes, caching, validation ------------------------------------------------------------


def test_worst_batch_shape_by_examples_and_by_token_budget():
    assert worst_batch_shape(cfg(batch_size=8), LEN) == (8, 47)
    tokens = TrainConfig(model="nano", max_steps=1, batch_tokens=1000)
    assert worst_batch_shape(tokens, 300) == (4, 249)  # 3 x 300 holds 897 input tokens, 4 x 250 996
    assert worst_batch_shape(TrainConfig(model="nano", max_steps=1, batch_tokens=100), 300) == (
        1,
        299,
    )  # one row even past the budget
    assert worst_batch_shape(TrainConfig(model="nano", max_steps=1, batch_tokens=2560), 256) == (
        10,
        255,
    )


def test_estimate_is_deterministic_and_cached():
    c = memory._memory_config(cfg())
    again = memory._measure.__wrapped__(c, VOCAB, 8, WIDTH, True, True)  # bypasses the cache
    assert again == memory._measure(c, VOCAB, 8, WIDTH, True, True)
    # lr and seed do not shape memory: same cache entry, same object
    assert memory._memory_config(cfg(lr=0.5, seed=3)) == c
    assert estimate_train_memory(cfg(lr=0.5, seed=3), VOCAB, LEN) == est()
    hits = memory._measure_cached.cache_info().hits
    est()
    assert memory._measure_cached.cache_info().hits == hits + 1


def test_estimate_rejects_bad_arguments():
    with pytest.raises(ConfigError, match=r"n_positions: 64 is shorter than .* \(65\)"):
        estimate_train_memory(cfg(), VOCAB, 65)
    with pytest.raises(ValueError, match="vocab_size"):
        estimate_train_memory(cfg(), 1, LEN)
    with pytest.raises(ValueError, match="max_seq_len"):
        estimate_train_memory(cfg(), VOCAB, 1)
    with pytest.raises(ValueError, match="measure_rows"):
        estimate_train_memory(cfg(), VOCAB, LEN, measure_rows=3)


# --- gpu_fraction_for -----------------------------------------------------------------------


def _sized(total: int) -> MemoryEstimate:
    return MemoryEstimate(0, 0, 0, total, 0, 0, rows=1, seq_len=1, dtype="bf16", measured_rows=(1,))


def test_gpu_fraction_rounds_up_to_the_granularity():
    gpu = 80 * 10**9
    assert gpu_fraction_for(_sized(8 * 10**9), gpu) == 0.125  # 1.25 x 8 GB = 10 GB: exactly 1/8
    assert gpu_fraction_for(_sized(8 * 10**9 + 1), gpu) == 0.25  # a byte more: 2/8
    assert gpu_fraction_for(_sized(1), gpu) == 0.125  # never below one step
    assert gpu_fraction_for(_sized(40 * 10**9), gpu) == 0.625  # 50 GB -> 5/8
    assert gpu_fraction_for(_sized(64 * 10**9), gpu) == 1.0  # exactly the whole GPU
    assert gpu_fraction_for(_sized(10 * 10**9), gpu, headroom=1.0, granularity=100) == 0.13
    assert gpu_fraction_for(_sized(1), gpu, granularity=1) == 1.0
    assert gpu_fraction_for(_sized(6 * 10**9), gpu, headroom=1.0, granularity=3) == pytest.approx(
        1 / 3
    )


def test_gpu_fraction_errors_name_the_numbers():
    with pytest.raises(
        ValueError, match=r"needs 1.25 x 61036 MiB = 76295 MiB, more than the GPU.s 76294 MiB"
    ):
        gpu_fraction_for(_sized(64 * 10**9 + MiB), 80 * 10**9)
    with pytest.raises(ValueError, match="headroom"):
        gpu_fraction_for(_sized(1), 80 * 10**9, headroom=0.5)
    with pytest.raises(ValueError, match="granularity"):
        gpu_fraction_for(_sized(1), 80 * 10**9, granularity=0)
    with pytest.raises(ValueError, match="gpu_memory_bytes"):
        gpu_fraction_for(_sized(1), 0)


def test_tiny_preset_gets_an_eighth_of_an_80gb_gpu():
    e = estimate_train_memory(TrainConfig(model="tiny", max_steps=1), 31, 256)
    assert e.rows == 256 and e.seq_len == 255
    assert 1024 * MiB < e.total < 8 * 1024 * MiB
    assert gpu_fraction_for(e, 80 * 10**9) == 0.125


# --- train() and the CLI --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.5, 0.0, -0.25, float("nan")])
def test_train_rejects_a_fraction_outside_0_1(bad):
    with pytest.raises(ConfigError, match="gpu_memory_fraction: must be in \\(0, 1\\]"):
        train(cfg(), dataset=None, gpu_memory_fraction=bad)


def test_train_ignores_the_fraction_on_cpu(small_ds, caplog):
    c = cfg(eval_test_n=4, eval_train_n=0, eval_per_epoch=False, device="cpu")
    with caplog.at_level(logging.DEBUG, logger="trainer.member"):
        result = train(c, small_ds, gpu_memory_fraction=0.5)
    assert "gpu_memory_fraction=0.5 ignored on cpu" in caplog.text
    assert "mem_share_gb" not in result.metrics and "peak_mem_gb" not in result.metrics


def test_cli_estimate_memory_prints_estimate_and_fraction(tmp_path, small_ds, capsys):
    from trainer.cli import main

    small_ds.save(tmp_path / "ds")
    sets = ["model=null", "n_layer=1", "n_head=2", "n_embd=32", "n_positions=64", "max_steps=1"]
    argv = ["--data", str(tmp_path / "ds"), "--estimate-memory", "--gpu-memory-gb", "40"]
    argv += ["--log-level", "WARNING"]
    for s in sets + ["batch_size=8"]:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    longest = int(seq_lengths(small_ds.encoded("train")).max())
    expected = estimate_train_memory(cfg(), small_ds.vocab.size, longest)
    assert f"memory estimate: {expected}" in out
    assert "gpu fraction on a 40 GB GPU: 0.125 (headroom 1.25)" in out
    assert not (tmp_path / "run").exists()


def test_cli_hands_the_fraction_to_train_and_needs_out(tmp_path, small_ds, capsys):
    from trainer.cli import main

    small_ds.save(tmp_path / "ds")
    base = ["--data", str(tmp_path / "ds"), "--set", "model=nano", "--set", "max_steps=1"]
    bad = ["--gpu-memory-fraction", "1.5", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(base + bad) == 2
    assert "error: gpu_memory_fraction: must be in (0, 1], got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(base)  # no --out and no --estimate-memory
    assert exit_info.value.code == 2
    assert "--out is required unless --estimate-memory" in capsys.readouterr().err


# --- CUDA (skipped without a GPU) -----------------------------------------------------------


@pytest.fixture(scope="module")
def long_ds(make_spec):
    """Every sequence 128 tokens long, so each batch has exactly the estimated worst-case shape."""
    spec = make_spec(
        n_instructions=8,
        examples_per_instruction=160,
        z_len=(60, 60),
        x_len=(2, 2),
        y_len=(2, 2),
        noop_fraction=0.0,
        test={"n_test": 20},
    )
    return generate(spec)


def _gpu_cfg() -> TrainConfig:
    # ~65k tokens per step: activations (~1.8 GiB) dominate the 640 MiB overhead constant
    return TrainConfig(
        model="tiny",
        max_steps=4,
        batch_size=512,
        eval_per_epoch=False,
        eval_test_n=8,
        eval_train_n=0,
    )


@pytest.mark.gpu
def test_cuda_peak_is_within_the_estimate(long_ds):
    c = _gpu_cfg()
    longest = int(seq_lengths(long_ds.encoded("train")).max())
    e = estimate_train_memory(c, long_ds.vocab.size, longest)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = train(c, long_ds)
    peak = torch.cuda.max_memory_allocated()
    assert next(result.model.parameters()).device.type == "cuda"
    assert 0.5 * e.total <= peak <= e.total, f"peak {peak / MiB:.0f} MiB vs {e}"


@pytest.mark.gpu
def test_cuda_training_stays_within_its_fraction(long_ds):
    c = _gpu_cfg()
    longest = int(seq_lengths(long_ds.encoded("train")).max())
    e = estimate_train_memory(c, long_ds.vocab.size, longest)
    gpu = torch.cuda.get_device_properties(0).total_memory
    fraction = gpu_fraction_for(e, gpu, granularity=100)  # a tight cap: ~1.25x the estimate
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        result = train(c, long_ds, gpu_memory_fraction=fraction)
        assert torch.cuda.max_memory_reserved() <= fraction * gpu
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    m = result.metrics
    assert m["mem_share_gb"] == pytest.approx(fraction * gpu / 1e9)
    assert 0 < m["peak_mem_of_share"] <= 1
