"""Batched greedy decoding with a KV cache, identical to one-example-at-a-time `generate`.

Two things make a batched decoder disagree with decoding one example at a time, and both would
flip an argmax on a near-tie (an untrained model's logits are almost uniform):

1. **Padding.** Left-padding shifts positions and adds masked columns. We never pad: prompts are
   grouped by exact length, so every row of a batch sees the same positions and attention as it
   would alone.
2. **Matrix-multiply kernels depend on the row count.** On CPU (MKL), ``addmm`` with one row runs a
   matrix-vector kernel, while many rows run a blocked GEMM whose summation order differs, so
   ``linear(x)[i] != linear(x[i:i+1])`` in the last bit (measured: ~5e-7 apart). The reference
   decodes one row at a time, so every decode step and the final logits there are one-row
   products. `row_exact_linears` makes batched decode steps use ``baddbmm`` with a single row
   per batch entry, which runs the same one-row kernel and reproduces those bits exactly; GEMMs
   with many rows (the prompt pass) already agree row for row.

   One-row kernels re-read every weight matrix per row, which is several times slower. So
   `greedy_decode` first decodes everything with fast batched kernels while recording, per
   example, how close its argmaxes came to a tie (relative gap between the best two logits). A
   last-bit difference can only change a prediction through such a near-tie, so only examples
   whose gap ever fell below `TIE_MARGIN` (1e-3, vs ~1e-7 differences) are decoded again with
   one-row kernels. Tests check equality with `generate(do_sample=False)` on hundreds of
   examples of an untrained, a trained and an adversarial all-ties model.

For plain GPT-2 models, decode steps go through `_Gpt2Stepper`, which skips the generic Hugging
Face forward's per-call overhead (masks, cache objects, output classes) while running the same
operations; other architectures (and peft-wrapped models) use the model's own forward.

Example::

    >>> outs = greedy_decode(model, [np.array([5, 6, 3, 7, 4])], eos_id=1, max_new_tokens=8)
    >>> outs[0]          # generated ids, ending with eos unless the cap was hit   # doctest: +SKIP
    [7, 1]
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def _one_row_matmul(x: torch.Tensor, weight_in_out: torch.Tensor, bias: torch.Tensor | None):
    """``x @ W + b`` for x of shape (R, 1, C), each row through the one-row kernel."""
    r = x.shape[0]
    w = weight_in_out.expand(r, *weight_in_out.shape)  # (R, C, N), a view: no copy
    if bias is None:
        return torch.bmm(x, w)
    return torch.baddbmm(bias.expand(r, 1, bias.shape[-1]), x, w)


def _patched_forward(module: nn.Module, original: Callable[..., Any], conv1d: bool):
    def forward(x: torch.Tensor) -> torch.Tensor:
        # Only single-position inputs with several rows need it (decode steps, last logits).
        if x.dim() < 2 or x.shape[-2] != 1 or x.numel() == x.shape[-1]:
            return original(x)
        lead, c = x.shape[:-1], x.shape[-1]
        weight = cast(torch.Tensor, module.weight)
        bias = cast(torch.Tensor | None, module.bias)
        w = weight if conv1d else weight.t()  # (C, N): Conv1D stores (in, out), Linear (out, in)
        out = _one_row_matmul(x.reshape(-1, 1, c), w, bias)
        return out.reshape(*lead, w.shape[-1])

    return forward


@contextmanager
def row_exact_linears(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, linear layers give each row the bits of a one-row call."""
    if not enabled:
        yield
        return
    from transformers.pytorch_utils import Conv1D

    patched: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, Conv1D | nn.Linear) and "forward" not in vars(m):
            m.forward = _patched_forward(m, m.forward, isinstance(m, Conv1D))  # type: ignore[method-assign]
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _fast_gpt2(model: nn.Module) -> bool:
    """Whether `_Gpt2Stepper` reproduces ``model``'s own forward (plain GPT-2 with SDPA)."""
    from transformers import GPT2LMHeadModel

    cfg = cast(Any, model.config)
    return (
        type(model) is GPT2LMHeadModel
        and cfg._attn_implementation == "sdpa"
        and not cfg.add_cross_attention
        and not model.training
    )


class _Gpt2Stepper:
    """One decode step of a GPT-2 without the generic HF forward's per-call overhead.

    The HF forward spends milliseconds per call building masks, caches and output objects, which
    dominates decoding small models in small batches. This step calls the model's own modules
    (embeddings, layer norms, Conv1D projections, MLP, head) and mirrors `GPT2Attention` with the
    SDPA backend op for op (split, view/transpose, cache concatenation as `DynamicCache` does, the
    same `scaled_dot_product_attention` arguments, the same residual order), so the numbers are
    the same; tests compare the predictions with `generate`.
    """

    def __init__(self, model: nn.Module, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.lm = cast(Any, model)
        self.keys, self.values = keys, values  # per layer (B, H, T, D)

    def select(self, keep: torch.Tensor) -> None:
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]

    def __call__(self, tok: torch.Tensor, pos: int) -> torch.Tensor:
        tf = self.lm.transformer
        b = tok.shape[0]
        position = torch.full((1, 1), pos, dtype=torch.long, device=tok.device)
        h = tf.wte(tok[:, None]) + tf.wpe(position)  # (B, 1, C)
        for i, blk in enumerate(tf.h):
            att = blk.attn
            q, k, v = att.c_attn(blk.ln_1(h)).split(att.split_size, dim=2)
            shape = (b, 1, -1, att.head_dim)
            q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))  # (B, H, 1, D)
            # Concatenate like DynamicCache: SDPA on CPU is several times slower on the strided
            # views a preallocated buffer would give (measured), and this keeps the same layout.
            self.keys[i] = torch.cat([self.keys[i], k], dim=-2)
            self.values[i] = torch.cat([self.values[i], v], dim=-2)
            o = torch.nn.functional.scaled_dot_product_attention(
                q,
                self.keys[i],
                self.values[i],
                attn_mask=None,
                dropout_p=0.0,
                scale=att.scaling,
                is_causal=False,
            )
            o = o.reshape(b, -1, 1, o.shape[-1]).transpose(1, 2).contiguous()
            o = o.reshape(b, 1, -1).contiguous()
            h = att.c_proj(o) + h
            h = h + blk.mlp(blk.ln_2(h))
        return self.lm.lm_head(tf.ln_f(h))[:, -1]  # (B, V)


def _batch_greedy(
    model: nn.Module, ids: torch.Tensor, eos_id: int, max_new_tokens: int
) -> tuple[list[list[int]], list[float]]:
    """Greedy continuation of equal-length prompts ``ids`` (B, T); finished rows leave early.

    Returns the generated ids per row and, per row, the smallest relative margin between the
    best and second-best logit over its steps (how close its argmaxes came to a tie).
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=cast(Any, model.config))
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1]  # (B, V)
    stepper = None
    if _fast_gpt2(model):
        layers = cast(Any, cache).layers
        stepper = _Gpt2Stepper(model, [c.keys for c in layers], [c.values for c in layers])
    rows = list(range(ids.shape[0]))  # original row of each live batch entry
    gen: list[list[int]] = [[] for _ in rows]
    margin = [float("inf")] * len(rows)
    for step in range(max_new_tokens):
        top = logits.float().topk(2, dim=-1).values  # (B, 2)
        rel = ((top[:, 0] - top[:, 1]) / top[:, 0].abs().clamp_min(1.0)).tolist()
        tok = logits.argmax(-1)
        for r, t, m in zip(rows, tok.tolist(), rel, strict=True):
            gen[r].append(t)
            margin[r] = min(margin[r], m)
        if step == max_new_tokens - 1:
            break
        live = tok != eos_id
        if not bool(live.all()):
            keep = live.nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            if stepper is not None:
                stepper.select(keep)
            else:
                cache.batch_select_indices(keep)
            tok = tok[keep]
            rows = [rows[k] for k in keep.tolist()]
        if stepper is not None:
            logits = stepper(tok, ids.shape[1] + step)  # position of the token fed in
        else:
            logits = model(
                input_ids=tok[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1
            ).logits[:, -1]
    return gen, margin


# Batched and one-row products differ by ~1e-7 relative (measured), and the difference grows
# little over a few layers and steps; an argmax whose runner-up is within this relative margin
# is re-decoded with one-row kernels. 1e-3 leaves orders of magnitude of headroom.
TIE_MARGIN = 1e-3


@torch.inference_mode()
def greedy_decode(
    model: nn.Module,
    prompts: Sequence[np.ndarray],
    eos_id: int,
    max_new_tokens: int,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    exact: bool | None = None,
    autocast_dtype: torch.dtype | None = None,
    tie_margin: float = TIE_MARGIN,
) -> list[list[int]]:
    """Greedy completions (token ids, eos included when produced) of every prompt.

    With ``exact`` (default: on for CPU) the result equals one-example-at-a-time decoding:
    batches run with fast batched kernels, and every example whose argmax ever came within
    ``tie_margin`` of a tie is decoded again under `row_exact_linears` (``tie_margin=inf``
    decodes everything that way). Without it, near-ties may resolve differently.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    exact = (device.type == "cpu") if exact is None else exact
    n_pos = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    results: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()

    def run(todo: Sequence[int], row_exact: bool) -> list[int]:
        """Decode prompts ``todo`` into ``results``; return those that came close to a tie."""
        by_len: dict[int, list[int]] = defaultdict(list)
        for i in todo:
            by_len[len(prompts[i])].append(i)
        close: list[int] = []
        with row_exact_linears(model, row_exact):
            for length, idx in sorted(by_len.items()):
                cap = max_new_tokens if n_pos is None else min(max_new_tokens, n_pos - length)
                if cap <= 0:
                    continue
                for s in range(0, len(idx), batch_size):
                    chunk = idx[s : s + batch_size]
                    ids = torch.from_numpy(np.stack([prompts[i] for i in chunk]).astype(np.int64))
                    gen, margin = _batch_greedy(model, ids.to(device), eos_id, cap)
                    for i, g, m in zip(chunk, gen, margin, strict=True):
                        results[i] = g
                        if m < tie_margin:
                            close.append(i)
        return close

    try:
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ):
            everything = range(len(prompts))
            if exact and tie_margin == float("inf"):
                run(everything, row_exact=True)
            else:
                close = run(everything, row_exact=False)
                if exact and close:
                    log.debug("re-decoding %d of %d near-tie examples", len(close), len(prompts))
                    run(close, row_exact=True)
    finally:
        model.train(was_training)
    return results
