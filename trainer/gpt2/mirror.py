"""A mirror of Hugging Face's GPT-2 forward, op for op, for `trainer.decode`'s fast paths.

The decoder's fast paths run GPT-2's modules themselves instead of calling the model, so that
they can skip work nobody reads and reuse preallocated caches. That reaches into transformers'
``GPT2Model`` internals (``transformer.h[i].attn.c_attn``, ``ln_1``, ``mlp.c_fc``,
``NewGELUActivation``'s formula), as the fused forward (`trainer.gpt2.fused`) does: both live in
`trainer.gpt2`, the one place a transformers upgrade can break, and
``tests/trainer/test_gpt2_parity.py`` compares them with HF's own forward:

- `Gpt2Prompt`: the prompt pass, bit-identical to ``model.transformer`` per prompt length;
- `Gpt2Stepper`: HF's decode step with a preallocated cache, exact or with a cheaper gelu;
- `Gpt2Start`: restarts decoding of chosen rows from the prompt pass's keys and values;
- `row_exact_linears`: one-row kernels for batched steps (see `trainer.decode`'s docstring);
- `is_plain_gpt2`: whether a model is one this mirror covers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from transformers import GPT2LMHeadModel
from transformers.activations import NewGELUActivation
from transformers.pytorch_utils import Conv1D


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


def is_plain_gpt2(model: nn.Module) -> bool:
    """Whether `Gpt2Prompt` and `Gpt2Stepper` reproduce ``model``'s own forward.

    That is plain GPT-2 with SDPA in eval mode (no dropout, no cross-attention).
    """
    cfg = cast(Any, model.config)
    return (
        type(model) is GPT2LMHeadModel
        and cfg._attn_implementation == "sdpa"
        and not cfg.add_cross_attention
        and not model.training
    )


def _qkv(att: Any, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values (B, H, T, D) of normalised ``x`` (B, T, C), as `GPT2Attention`."""
    b, t = x.shape[:2]
    q, k, v = att.c_attn(x).split(att.split_size, dim=2)
    shape = (b, t, -1, att.head_dim)
    return tuple(z.view(shape).transpose(1, 2) for z in (q, k, v))


def _attend(att: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention output (B, T, C) before ``c_proj``, with HF's SDPA arguments and layout."""
    o = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=None, dropout_p=0.0, scale=att.scaling, is_causal=q.shape[-2] > 1
    )
    b, _, t, _ = o.shape
    return o.transpose(1, 2).contiguous().reshape(b, t, -1).contiguous()


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_new_(x: torch.Tensor) -> torch.Tensor:
    """`NewGELUActivation` computed in place: the same ops on the same values, so the same bits.

    HF evaluates ``0.5 * x * (1.0 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))`` with a fresh
    tensor per op; on a prompt pass's (rows, 4C) activations that is eight passes over memory
    that does not fit in cache. Each op here is the same elementwise kernel (scalar operands
    commute exactly), only written into a buffer that stays in cache.
    """
    y = torch.pow(x, 3.0)
    y.mul_(0.044715).add_(x).mul_(_SQRT_2_OVER_PI).tanh_().add_(1.0)
    return x.mul_(0.5).mul_(y)


def _gelu_new_close_(x: torch.Tensor) -> torch.Tensor:
    """`NewGELUActivation` in place to within a few float32 ulps, about 3x faster: for the fast
    pass only, whose last bits need not match (the tie margin covers them).

    ``0.5 * x * (1 + tanh(u)) == x * sigmoid(2u)`` exactly in real numbers, and torch's CPU
    ``tanh`` is a slow kernel (3.2 ns an element here, ``sigmoid`` 1.1 ns, measured). The
    sigmoid form has no cancellation: its relative error stays near float32 rounding.
    """
    u = torch.pow(x, 3.0)
    u.mul_(0.044715).add_(x).mul_(2.0 * _SQRT_2_OVER_PI).sigmoid_()
    return x.mul_(u)


def mlp(mlp: Any, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
    """``mlp(x)`` of a `GPT2MLP` in eval mode, with the activation in place when it is gelu_new
    (bit for bit, or with ``exact=False`` to within rounding: `_gelu_new_close_`)."""
    h = mlp.c_fc(x)
    if type(mlp.act) is not NewGELUActivation:
        return mlp.c_proj(mlp.act(h))
    return mlp.c_proj(gelu_new_(h) if exact else _gelu_new_close_(h))


# Rows per chunk of a prompt pass's position-wise ops: (512, 4C) activations stay in L2.
_CHUNK_ROWS = 512


def _after_attention(blk: Any, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The rest of a `GPT2Block` (projection, residuals, MLP) on attention output ``o``.

    Every op here is position by position, so it runs in chunks of about `_CHUNK_ROWS` whole
    rows whose intermediates stay in cache (a prompt pass's MLP runs 30 % faster, measured).
    A chunk has fewer rows than the whole only when it has at least `_CHUNK_ROWS`, so every
    product keeps at least `MIN_GEMM_ROWS` rows and the bits of an unchunked pass.
    """
    shape, c = h.shape, h.shape[-1]
    o, h = o.reshape(-1, c), h.reshape(-1, c)
    out = torch.empty_like(h)
    n, k = len(h), max(1, len(h) // _CHUNK_ROWS)
    bounds = [n * i // k for i in range(k + 1)]
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        x = blk.attn.c_proj(o[s:e]) + h[s:e]
        torch.add(x, mlp(blk.mlp, blk.ln_2(x)), out=out[s:e])
    return out.view(shape)


def _split_rows(sizes: list[int], rows: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Sorted batch rows ``rows`` of parts with ``sizes`` rows each, as (part index, rows within
    that part); parts with none of them are left out."""
    bounds = np.cumsum([0, *sizes])
    cut = np.searchsorted(rows.cpu().numpy(), bounds).tolist()
    return [
        (i, rows[cut[i] : cut[i + 1]] - int(bounds[i]))
        for i in range(len(sizes))
        if cut[i] < cut[i + 1]
    ]


class _KV:
    """Key and value buffers of one prompt length: per layer (B, H, T + room, D), ``filled``
    positions written so far (the position of the next token fed in)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], filled: int):
        self.keys, self.values, self.filled = keys, values, filled

    def __len__(self) -> int:
        return self.keys[0].shape[0]

    def select(self, keep: torch.Tensor) -> _KV:
        return _KV([k[keep] for k in self.keys], [v[keep] for v in self.values], self.filled)


class Gpt2Stepper:
    """One decode step of a GPT-2 without the generic HF forward's per-call overhead.

    The HF forward spends milliseconds per call building masks, caches and output objects, which
    dominates decoding small models in small batches. This step calls the model's own modules
    (embeddings, layer norms, Conv1D projections, MLP, head) and mirrors `GPT2Attention` with the
    SDPA backend op for op (split, view/transpose, the same `scaled_dot_product_attention`
    arguments, the same residual order), so the numbers are the same; tests compare the
    predictions with `generate`.

    **Prompts of several lengths step together.** Only attention needs rows of equal length
    (same positions, same number of cached keys: no mask, no padding); every other op is row by
    row. So the rows of all lengths of a batch go through each projection, layer norm, MLP and
    the head as one product, and only attention runs per length (`_KV` part). A data set's
    prompts spread over dozens of lengths, a few dozen rows each: stepping them apart ran every
    op on a few dozen rows, where per-call overhead weighs more (stepping them together made the
    whole decode of the evaluation benchmark 1.2x faster, measured).

    Keys and values live in buffers with room for every step, filled by the prompt pass
    (`Gpt2Prompt`); a step writes its column and attends over a view of the filled part.
    `DynamicCache` instead concatenates, copying the whole cache every step, which took over
    half of a step's time at batch 256 (measured). The view is strided, but SDPA's CPU kernel
    reads strides as they are and computes the same bits (tests compare with `generate`).
    """

    def __init__(self, model: nn.Module, parts: list[_KV], exact: bool):
        self.lm = cast(Any, model)
        # Exact: the reference's gelu (and, from `row_exact_linears`, its one-row products).
        # Else the fast pass: `_gelu_new_close_`, a few ulps off, like the batched products.
        self.exact = exact
        self.parts = parts  # rows of the batch are the parts' rows in order
        # Position of each row's next token. A batch's token cap keeps every part's positions
        # inside the model's table (`_batches`), finished rows included.
        self.positions = torch.cat(
            [torch.full((len(p),), p.filled, dtype=torch.long) for p in parts]
        ).to(parts[0].keys[0].device)

    def select(self, keep: torch.Tensor) -> None:
        """Keep rows ``keep`` (sorted batch indices) only."""
        split = _split_rows([len(p) for p in self.parts], keep)
        self.parts = [self.parts[i].select(local) for i, local in split]
        self.positions = self.positions[keep]

    def __call__(self, tok: torch.Tensor) -> torch.Tensor:
        tf = self.lm.transformer
        h = tf.wte(tok[:, None]) + tf.wpe(self.positions[:, None])  # (B, 1, C)
        for i, blk in enumerate(tf.h):
            q, k, v = _qkv(blk.attn, blk.ln_1(h))  # (B, H, 1, D)
            outs, a = [], 0
            for part in self.parts:
                b, n = a + len(part), part.filled
                keys, values = part.keys[i], part.values[i]
                keys[:, :, n : n + 1] = k[a:b]
                values[:, :, n : n + 1] = v[a:b]
                outs.append(_attend(blk.attn, q[a:b], keys[:, :, : n + 1], values[:, :, : n + 1]))
                a = b
            o = outs[0] if len(outs) == 1 else torch.cat(outs)
            h = blk.attn.c_proj(o) + h
            h = h + mlp(blk.mlp, blk.ln_2(h), self.exact)
        for part in self.parts:
            part.filled += 1
        self.positions += 1
        return self.lm.lm_head(tf.ln_f(h))[:, -1]  # (B, V)


# BLAS libraries multiply matrices with very few rows with other kernels (MKL here: fewer than 4
# rows give other bits; 4 to 6,000 rows give every row the same bits, measured), so products
# that must match a prompt pass run on at least this many rows. (A prompt shorter than 4 tokens
# gets the small kernels in the reference itself, which no batched prompt pass reproduces.)
MIN_GEMM_ROWS = 16


class Gpt2Prompt:
    """The prompt pass of equal-length GPT-2 prompts, kept so that any rows can restart from it.

    It mirrors `GPT2Model.forward` (no mask, causal SDPA) op for op, with one saving: the last
    layer only feeds the head and the cache, so after its attention it runs on the last
    position(s) only (about 30 % of the prompt pass of a 2-layer model). Every op after
    attention is row by row, and products with at least `MIN_GEMM_ROWS` rows give each row the
    bits it gets in the reference's T-row product, so the kept rows are bit-identical (tested
    against ``model.transformer``).

    Its keys, values and last hidden state serve the fast pass and the one-row re-decode alike:
    a near-tie row is re-decoded without running its prompt again; only the head (the first
    logits) is recomputed, under the kernels active then (`Gpt2Start`). Keys and values
    go straight into `Gpt2Stepper` buffers with ``room`` more positions (SDPA reads the strided
    view of the prompt part with the same bits).
    """

    def __init__(self, model: nn.Module, ids: torch.Tensor, room: int):
        self.lm = cast(Any, model)
        tf = self.lm.transformer
        b, t = ids.shape
        self.length = t
        h = tf.wte(ids) + tf.wpe(torch.arange(t, device=ids.device)[None])  # (B, T, C)
        self.keys: list[torch.Tensor] = []  # per layer (B, H, T + room, D)
        self.values: list[torch.Tensor] = []
        for i, blk in enumerate(tf.h):
            q, k, v = _qkv(blk.attn, blk.ln_1(h))
            for z, bufs in ((k, self.keys), (v, self.values)):
                bufs.append(z.new_empty(b, z.shape[1], t + room, z.shape[-1]))
                bufs[-1][:, :, :t] = z
            o = _attend(blk.attn, q, self.keys[-1][:, :, :t], self.values[-1][:, :, :t])
            if i == len(tf.h) - 1:
                keep = min(t, -(-MIN_GEMM_ROWS // b))  # last positions, >= MIN_GEMM_ROWS rows
                o, h = o[:, -keep:], h[:, -keep:]
            h = _after_attention(blk, o, h)
        # What `GPT2LMHeadModel.forward(logits_to_keep=1)` feeds its head: (B, 1, C).
        self.hidden = tf.ln_f(h)[:, -1:]


class Gpt2Start:
    """Where decoding some GPT-2 rows starts: their prompts' keys and values (per-length `_KV`
    parts) and the prompts' last hidden states (what the head reads for the first logits).

    Rows are numbered across the parts in order. `rows` keeps some of them (copies), `concat`
    joins starts of different batches (near-tie rows of several batches re-decode together),
    `start` gives a stepper over all rows and their first logits. The stepper writes into the
    parts' own buffers, but only past the prompts: a later `rows` or `start` still finds the
    prompts intact.
    """

    def __init__(self, model: nn.Module, parts: list[_KV], hidden: list[torch.Tensor]):
        self.lm, self.parts, self.hidden = cast(Any, model), parts, hidden

    @classmethod
    def prompts(cls, model: nn.Module, groups: list[torch.Tensor], room: int) -> Gpt2Start:
        passes = [Gpt2Prompt(model, ids, room) for ids in groups]
        return cls(
            model, [_KV(p.keys, p.values, p.length) for p in passes], [p.hidden for p in passes]
        )

    @classmethod
    def concat(cls, starts: list[Gpt2Start]) -> Gpt2Start:
        parts = [p for s in starts for p in s.parts]
        return cls(starts[0].lm, parts, [h for s in starts for h in s.hidden])

    def rows(self, rows: torch.Tensor) -> Gpt2Start:
        """Rows ``rows`` (sorted) only."""
        split = _split_rows([len(p) for p in self.parts], rows)
        parts = [self.parts[i].select(local) for i, local in split]
        return Gpt2Start(self.lm, parts, [self.hidden[i][local] for i, local in split])

    def start(self, exact: bool) -> tuple[Gpt2Stepper, torch.Tensor]:
        """A stepper over all rows and their first logits; ``exact``: every op as the reference
        computes it (products too, under `row_exact_linears`), else faster ones, a few ulps
        off."""
        parts = [_KV(p.keys, p.values, p.filled) for p in self.parts]
        h = self.hidden[0] if len(self.hidden) == 1 else torch.cat(self.hidden)
        return Gpt2Stepper(self.lm, parts, exact), self.lm.lm_head(h)[:, -1]
