"""The batched evaluator predicts exactly what HF `generate(do_sample=False)` does one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer import TrainConfig
from trainer.decode import greedy_decode
from trainer.evaluate import accuracy_metrics, evaluate
from trainer.model import build_model


def _prompts(ds, split, n):
    enc = ds.encoded(split)
    m = min(n, len(enc))
    return [np.asarray(enc.prompt(i)) for i in range(m)], int(max(enc.lengths - enc.prompt_lens))


def hf_one_at_a_time(model, prompts, eos_id, pad_id, max_new_tokens):
    """The reference: `generate` on each prompt alone (no padding anywhere)."""
    out = []
    model.eval()
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor(np.asarray(p, dtype=np.int64))[None]
            g = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            )
            out.append(g[0, ids.shape[1] :].tolist())
    return out


def _check_equal(model, ds, n=300):
    prompts, max_new = _prompts(ds, "test", n)
    ours = greedy_decode(model, prompts, ds.vocab.eos_id, max_new, batch_size=64)
    ref = hf_one_at_a_time(model, prompts, ds.vocab.eos_id, ds.vocab.pad_id, max_new)
    mismatches = [i for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a != b]
    assert not mismatches, (
        f"{len(mismatches)} differ, e.g. {ours[mismatches[0]]} vs {ref[mismatches[0]]}"
    )
    return ours


def test_untrained_model_matches_generate(small_ds):
    model = build_model(TrainConfig(model="nano", max_steps=1, seed=3), small_ds.vocab)
    _check_equal(model, small_ds)


def test_trained_model_matches_generate(small_ds, trained):
    _, result = trained
    ours = _check_equal(result.model, small_ds)
    assert sum(small_ds.vocab.eos_id in g for g in ours) > 200  # it has learned to stop


def test_near_tie_model_matches_generate(small_ds):
    """All token embeddings equal up to ~1e-7: every argmax is decided in the last bits."""
    model = build_model(TrainConfig(model="nano", max_steps=1, seed=1), small_ds.vocab)
    v = small_ds.vocab
    with torch.no_grad():
        wte = model.transformer.wte.weight  # tied: input embeddings and output rows
        base = wte[1].clone()
        gen = torch.Generator().manual_seed(0)
        for t in range(1, v.size):
            wte[t] = base + 1e-7 * torch.randn(base.shape, generator=gen)
    prompts, _ = _prompts(small_ds, "test", 200)
    ours = greedy_decode(model, prompts, v.eos_id, 8, batch_size=64)
    ref = hf_one_at_a_time(model, prompts, v.eos_id, v.pad_id, 8)
    assert ours == ref
    # Plain batched products differ from one-row products in the last bits; on this model that
    # flips many predictions (83 of 200 when measured). Printed, not asserted: it depends on
    # the BLAS kernels of the machine.
    loose = greedy_decode(model, prompts, v.eos_id, 8, batch_size=64, exact=False)
    print(
        f"near-tie model: {sum(a != b for a, b in zip(loose, ref, strict=True))} of "
        f"{len(ref)} differ without row-exact decoding"
    )


def test_batch_size_does_not_change_predictions(small_ds, trained):
    _, result = trained
    prompts, max_new = _prompts(small_ds, "test", 300)
    eos = small_ds.vocab.eos_id
    a = greedy_decode(result.model, prompts, eos, max_new, batch_size=1)
    b = greedy_decode(result.model, prompts, eos, max_new, batch_size=300)
    assert a == b


def test_evaluate_metrics_consistent(small_ds, trained):
    _, result = trained
    res = evaluate(result.model, small_ds, "test", n=200, n_failures=3)
    m = res.metrics
    assert m["test_n"] == 200 == len(res.predictions)
    assert m["test_acc"] == pytest.approx(res.correct.mean())
    noop = small_ds.test.column("is_noop").to_numpy(zero_copy_only=False)[res.indices]
    assert m["test_acc_noop"] == pytest.approx(res.correct[noop].mean())
    assert m["test_acc_op"] == pytest.approx(res.correct[~noop].mean())
    assert len(res.failures) == min(3, int((~res.correct).sum()))
    for f in res.failures:
        assert (
            set(f) == {"x", "y", "z", "expected", "predicted"} and f["expected"] != f["predicted"]
        )
    expected = small_ds.test.column("output").take(res.indices).to_pylist()
    assert [p == e for p, e in zip(res.predictions, expected, strict=True)] == res.correct.tolist()


def test_accuracy_metrics_omit_empty_groups():
    m = accuracy_metrics(np.array([True, False]), np.array([False, False]), np.array([1, 2]), "t")
    assert m == {
        "t_n": 2,
        "t_acc": 0.5,
        "t_acc_op": 1.0 * 0.5,
        "t_acc_occ_1": 1.0,
        "t_acc_occ_2": 0.0,
    }
    assert "t_acc_noop" not in m
