"""The one parity test of `trainer.gpt2` (all our code that reaches into Hugging Face's GPT-2
internals) against HF's own GPT-2: a transformers upgrade that changes a module, a parameter name
or the forward fails here, by piece.

Tolerances: the decoder's mirror is checked bit for bit (it computes HF's ops in HF's order);
its decode step and the fused forward sum products in another order, so they are checked to
float32 rounding (atol 1e-5 on logits of size ~1, 1e-6 on gradients).
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache
from transformers.activations import NewGELUActivation

from trainer import TrainConfig
from trainer.gpt2 import mirror
from trainer.gpt2.fused import FusedGPT2, param_names
from trainer.model import build_model


class _Vocab:
    size, pad_id, eos_id = 40, 0, 1


def _model(preset: str, seed: int):
    return build_model(TrainConfig(model=preset, max_steps=1, seed=seed), _Vocab())


def _prompt_pass(model, gen):
    """`mirror.Gpt2Prompt` against ``model.transformer``: hidden state, keys, values, bit for bit
    (1-3 rows: the last layer keeps several positions; 40 x 31 rows: several chunks)."""
    for b, t in [(1, 1), (1, 5), (1, 20), (2, 3), (2, 20), (3, 17), (16, 9), (40, 31)]:
        ids = torch.randint(2, _Vocab.size, (b, t), generator=gen)
        cache = DynamicCache(config=model.config)
        ref = model.transformer(input_ids=ids, past_key_values=cache, use_cache=True)
        ours = mirror.Gpt2Prompt(model, ids, room=4)
        assert torch.equal(ours.hidden, ref.last_hidden_state[:, -1:]), (b, t)
        for layer, k, v in zip(cache.layers, ours.keys, ours.values, strict=True):
            assert k.shape[-2] == t + 4
            assert torch.equal(k[:, :, :t], layer.keys)
            assert torch.equal(v[:, :, :t], layer.values)


def _gelu_and_mlp(model, gen):
    x = torch.randn(300, 256, generator=gen) * 4
    x[0, :4] = torch.tensor([0.0, -0.0, 1e-30, -50.0])
    assert torch.equal(mirror.gelu_new_(x.clone()), NewGELUActivation()(x))
    mlp = model.transformer.h[0].mlp
    h = torch.randn(7, 33, model.config.n_embd, generator=gen)
    assert torch.equal(mirror.mlp(mlp, h), mlp(h))


def _decode_steps(model, gen):
    """Two decode steps from the prompt pass against HF's forward over the longer sequence."""
    ids = torch.randint(2, _Vocab.size, (6, 12), generator=gen)
    start = mirror.Gpt2Start.prompts(model, [ids], room=4)
    for exact in (True, False):
        stepper, first = start.start(exact=exact)
        torch.testing.assert_close(first, model(input_ids=ids).logits[:, -1], rtol=0, atol=1e-5)
        nxt = first.argmax(-1)
        got = stepper(nxt)
        want = model(input_ids=torch.cat([ids, nxt[:, None]], dim=1)).logits[:, -1]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def _fused_forward(preset, gen):
    """`FusedGPT2` against each member's own forward: logits, and gradients of a masked loss."""
    models = [_model(preset, seed).train() for seed in (3, 4, 5)]
    ids = torch.randint(1, _Vocab.size, (3, 5, 17), generator=gen)
    fused = FusedGPT2(models)
    got, tail = fused(ids), fused(ids[1:], first=1)  # members 1 and 2 alone: their own weights
    want = torch.stack([m(input_ids=ids[k]).logits for k, m in enumerate(models)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(tail, want[1:], rtol=0, atol=1e-5)
    got.logsumexp(-1).mean(dim=(1, 2)).sum().backward()
    want.logsumexp(-1).mean(dim=(1, 2)).sum().backward()
    for name, stacked in zip(fused.names, fused.stack, strict=True):
        own = torch.stack([dict(m.named_parameters())[name].grad for m in models])
        torch.testing.assert_close(stacked.grad, own, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("preset", ["nano", "tiny"])
def test_trainer_gpt2_matches_hf_gpt2(preset):
    model = _model(preset, seed=5).eval()
    gen = torch.Generator().manual_seed(0)
    # The parameter-name table the fused forward reads.
    assert [n for n, _ in model.named_parameters()] == param_names(model.config.n_layer)
    assert mirror.is_plain_gpt2(model)
    with torch.inference_mode():
        _prompt_pass(model, gen)
        _gelu_and_mlp(model, gen)
        _decode_steps(model, gen)
    _fused_forward(preset, gen)
