"""Batched greedy decoding with a KV cache, identical to one-example-at-a-time `generate`.

Two things make a batched decoder disagree with decoding one example at a time, and both would
flip an argmax on a near-tie (an untrained model's logits are almost uniform):

1. **Padding.** Left-padding shifts positions and adds masked columns. We never pad: attention
   runs per group of equal-length prompts, so every row sees the same positions and attention
   as it would alone (the other ops are row by row and run on the whole batch).
2. **Matrix-multiply kernels depend on the row count.** On CPU (MKL), ``addmm`` with one row runs a
   matrix-vector kernel, while many rows run a blocked GEMM whose summation order differs, so
   ``linear(x)[i] != linear(x[i:i+1])`` in the last bit (measured: ~5e-7 apart). The reference
   decodes one row at a time, so every decode step and the final logits there are one-row
   products. `row_exact_linears` makes batched decode steps use ``baddbmm`` with a single row
   per batch entry, which runs the same one-row kernel and reproduces those bits exactly. GEMMs
   with many rows (the prompt pass) already agree row for row (measured: any count from 4 to
   6,000 rows gives each row the same bits; 1 to 3 rows do not, hence `_MIN_GEMM_ROWS`).

One-row kernels re-read every weight matrix per row, which is slower, so each batch (prompts
taken in order of length, several lengths per batch for GPT-2, `_batches`) goes through three
phases:

1. **Prompt pass**, once. For plain GPT-2, `_Gpt2Prompt` runs the model's modules op for op
   (bit-identical to ``model.transformer``, tested) per prompt length, but skips work whose
   results nobody reads: after its attention, the last layer only runs on each prompt's last
   position (more of them in batches of under `_MIN_GEMM_ROWS` prompts), which saves about 30 %
   of the pass for 2 layers; position-wise ops run in cache-sized chunks with gelu in place
   (same ops, same bits; the MLP 30 % faster). Keys and values go straight into the decode
   buffers. Other models (other architectures, peft wrappers) use their own forward
   (`_HfStart`), one prompt length per batch.
2. **Fast pass**: every row decodes with batched kernels (`_Gpt2Stepper`: HF's decode step
   without its per-call overhead, with a preallocated cache instead of one concatenation per
   step, all prompt lengths of the batch in each product, and a gelu 3x cheaper than the
   reference's that agrees to a few ulps), watching how close each argmax comes to a tie
   (relative gap between the best two logits). A last-bit difference can only change a
   prediction through such a near-tie, so a row whose gap falls below `TIE_MARGIN` stops there
   and is marked; the others are final. Bookkeeping stays in tensors, and finished rows leave
   the batch only once half of it is done (dropping rows copies the cache).
3. **Exact re-decode** of the marked rows only (`_Redo`), with one-row kernels and the
   reference's gelu, restarting from the prompt pass's keys, values and last hidden state (the
   prompt's bits are the reference's, so only the head and the steps are recomputed). Marked
   rows of several batches re-decode together.

How far apart can the fast pass and the exact computation drift? Measured over 74,000 decode
steps (2,000 prompts of the benchmark, up to 37 steps each; untrained `tiny` and `paper` GPT-2s
and a trained `tiny`): the relative gap between the best two logits moved by at most 3.5e-6.
`TIE_MARGIN` (1e-3) is 280 times that; it marks 7 % of the trained model's examples.

``tie_margin=inf`` skips phase 2 and decodes everything with one-row kernels. Tests check
equality with `generate(do_sample=False)` on hundreds of examples of an untrained, a trained and
an adversarial all-ties model, and the GPT-2 prompt pass bit for bit against the model's own.

Where the time goes (benchmarks/bench_eval.py: tiny GPT-2 trained to copy its input, 2,000
prompts of 16 to 49 tokens, about 20 generated tokens each, one thread, 2.5 s in all): 30 % in
the prompt pass, whose products already run near the core's peak FLOP rate (the floor of any
exact decoder: the reference computes the same prompt); 58 % in the fast pass, most of it
attention over the cache (memory-bound: every step reads every row's keys and values) and
products at peak; 12 % re-decoding the 7 % of examples with a near-tie.

Example::

    >>> outs = greedy_decode(model, [np.array([5, 6, 3, 7, 4])], eos_id=1, max_new_tokens=8)
    >>> outs[0]          # generated ids, ending with eos unless the cap was hit   # doctest: +SKIP
    [7, 1]
"""

from __future__ import annotations

import logging
import math
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
    """Whether `_Gpt2Prompt` and `_Gpt2Stepper` reproduce ``model``'s own forward.

    That is plain GPT-2 with SDPA in eval mode (no dropout, no cross-attention).
    """
    from transformers import GPT2LMHeadModel

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


def _gelu_new_(x: torch.Tensor) -> torch.Tensor:
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


def _mlp(mlp: Any, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
    """``mlp(x)`` of a `GPT2MLP` in eval mode, with the activation in place when it is gelu_new
    (bit for bit, or with ``exact=False`` to within rounding: `_gelu_new_close_`)."""
    from transformers.activations import NewGELUActivation

    h = mlp.c_fc(x)
    if type(mlp.act) is not NewGELUActivation:
        return mlp.c_proj(mlp.act(h))
    return mlp.c_proj(_gelu_new_(h) if exact else _gelu_new_close_(h))


# Rows per chunk of a prompt pass's position-wise ops: (512, 4C) activations stay in L2.
_CHUNK_ROWS = 512


def _after_attention(blk: Any, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The rest of a `GPT2Block` (projection, residuals, MLP) on attention output ``o``.

    Every op here is position by position, so it runs in chunks of about `_CHUNK_ROWS` whole
    rows whose intermediates stay in cache (a prompt pass's MLP runs 30 % faster, measured).
    A chunk has fewer rows than the whole only when it has at least `_CHUNK_ROWS`, so every
    product keeps at least `_MIN_GEMM_ROWS` rows and the bits of an unchunked pass.
    """
    shape, c = h.shape, h.shape[-1]
    o, h = o.reshape(-1, c), h.reshape(-1, c)
    out = torch.empty_like(h)
    n, k = len(h), max(1, len(h) // _CHUNK_ROWS)
    bounds = [n * i // k for i in range(k + 1)]
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        x = blk.attn.c_proj(o[s:e]) + h[s:e]
        torch.add(x, _mlp(blk.mlp, blk.ln_2(x)), out=out[s:e])
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


class _Gpt2Stepper:
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
    (`_Gpt2Prompt`); a step writes its column and attends over a view of the filled part.
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
            h = h + _mlp(blk.mlp, blk.ln_2(h), self.exact)
        for part in self.parts:
            part.filled += 1
        self.positions += 1
        return self.lm.lm_head(tf.ln_f(h))[:, -1]  # (B, V)


# BLAS libraries multiply matrices with very few rows with other kernels (MKL here: fewer than 4
# rows give other bits; 4 to 6,000 rows give every row the same bits, measured), so products
# that must match a prompt pass run on at least this many rows. (A prompt shorter than 4 tokens
# gets the small kernels in the reference itself, which no batched prompt pass reproduces.)
_MIN_GEMM_ROWS = 16


class _Gpt2Prompt:
    """The prompt pass of equal-length GPT-2 prompts, kept so that any rows can restart from it.

    It mirrors `GPT2Model.forward` (no mask, causal SDPA) op for op, with one saving: the last
    layer only feeds the head and the cache, so after its attention it runs on the last
    position(s) only (about 30 % of the prompt pass of a 2-layer model). Every op after
    attention is row by row, and products with at least `_MIN_GEMM_ROWS` rows give each row the
    bits it gets in the reference's T-row product, so the kept rows are bit-identical (tested
    against ``model.transformer``).

    Its keys, values and last hidden state serve the fast pass and the one-row re-decode alike:
    a near-tie row is re-decoded without running its prompt again; only the head (the first
    logits) is recomputed, under the kernels active then (`_Gpt2Start`). Keys and values
    go straight into `_Gpt2Stepper` buffers with ``room`` more positions (SDPA reads the strided
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
                keep = min(t, -(-_MIN_GEMM_ROWS // b))  # last positions, >= _MIN_GEMM_ROWS rows
                o, h = o[:, -keep:], h[:, -keep:]
            h = _after_attention(blk, o, h)
        # What `GPT2LMHeadModel.forward(logits_to_keep=1)` feeds its head: (B, 1, C).
        self.hidden = tf.ln_f(h)[:, -1:]


class _Gpt2Start:
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
    def prompts(cls, model: nn.Module, groups: list[torch.Tensor], room: int) -> _Gpt2Start:
        passes = [_Gpt2Prompt(model, ids, room) for ids in groups]
        return cls(
            model, [_KV(p.keys, p.values, p.length) for p in passes], [p.hidden for p in passes]
        )

    @classmethod
    def concat(cls, starts: list[_Gpt2Start]) -> _Gpt2Start:
        parts = [p for s in starts for p in s.parts]
        return cls(starts[0].lm, parts, [h for s in starts for h in s.hidden])

    def rows(self, rows: torch.Tensor) -> _Gpt2Start:
        """Rows ``rows`` (sorted) only."""
        split = _split_rows([len(p) for p in self.parts], rows)
        parts = [self.parts[i].select(local) for i, local in split]
        return _Gpt2Start(self.lm, parts, [self.hidden[i][local] for i, local in split])

    def start(self, exact: bool) -> tuple[_Gpt2Stepper, torch.Tensor]:
        """A stepper over all rows and their first logits; ``exact``: every op as the reference
        computes it (products too, under `row_exact_linears`), else faster ones, a few ulps
        off."""
        parts = [_KV(p.keys, p.values, p.filled) for p in self.parts]
        h = self.hidden[0] if len(self.hidden) == 1 else torch.cat(self.hidden)
        return _Gpt2Stepper(self.lm, parts, exact), self.lm.lm_head(h)[:, -1]


class _HfStepper:
    """Decode steps through the model's own forward and `DynamicCache` (any causal LM)."""

    def __init__(self, model: nn.Module):
        from transformers import DynamicCache

        self.lm = cast(Any, model)
        self.cache = DynamicCache(config=self.lm.config)
        self.cache_kw = _cache_keyword(model)

    def prompt(self, ids: torch.Tensor) -> torch.Tensor:
        return self._logits(ids)

    def select(self, keep: torch.Tensor) -> None:
        self.cache.batch_select_indices(keep)

    def __call__(self, tok: torch.Tensor) -> torch.Tensor:
        return self._logits(tok[:, None])

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        kw = {self.cache_kw: self.cache}
        out = self.lm(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
        return cast(torch.Tensor, out.logits[:, -1])


def _cache_keyword(model: nn.Module) -> str:
    """``cache`` where the (peft-unwrapped) model's forward takes it, else ``past_key_values``.

    transformers 5.x renamed the argument and warns on the old name for some architectures
    (Llama's forward did, through a peft wrapper: a FutureWarning the test suite turns into an
    error); older versions only know ``past_key_values``.
    """
    import inspect

    lm = cast(Any, model)
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class _HfStart:
    """`_Gpt2Start` for other models, equal-length prompts ``ids`` (B, T) only: each start runs
    the prompt pass again.

    A generic forward updates its cache in place and does not portably expose the hidden state
    its head reads, so re-decoded rows pay for their prompt twice (bit-identical both times).
    """

    def __init__(self, model: nn.Module, ids: torch.Tensor):
        self.lm, self.ids = model, ids

    def rows(self, rows: torch.Tensor) -> _HfStart:
        return _HfStart(self.lm, self.ids[rows])

    def start(self, exact: bool) -> tuple[_HfStepper, torch.Tensor]:
        stepper = _HfStepper(self.lm)
        return stepper, stepper.prompt(self.ids)


def _pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy token per row, and how close it came to a tie (relative gap of the best two)."""
    scores = logits.float()
    top = scores.topk(2, dim=-1).values  # (B, 2)
    rel = (top[:, 0] - top[:, 1]) / top[:, 0].abs().clamp_min(1.0)
    return scores.argmax(-1), rel


# Finished rows stay in the batch (computing tokens nobody reads) until at most this fraction of
# its entries is live: dropping rows copies the whole cache, which every row finishing one step
# apart would repeat almost every step.
COMPACT_BELOW = 0.5


def _greedy_steps(
    stepper: _Gpt2Stepper | _HfStepper,
    logits: torch.Tensor,
    eos_id: int,
    cap: int,
    tie_margin: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy continuation from the first ``logits`` (B, V) for at most ``cap`` tokens.

    Returns the tokens (B, cap) and, per row, the step at which it came within ``tie_margin``
    of a tie (`_pick`), or -1. Such a row stops there, its tokens from then on meaningless: it
    will be decoded again. Whatever follows a row's first eos is meaningless too.

    All bookkeeping stays in tensors: no per-row Python work per step. Rows never interact
    (every op is row by row), so finished rows left in the batch do not change the others'
    numbers.
    """
    b = logits.shape[0]
    tokens = torch.full((b, cap), eos_id, dtype=torch.long, device=logits.device)
    tie_at = torch.full((b,), -1, dtype=torch.long, device=logits.device)
    rows = torch.arange(b, device=logits.device)  # batch row of each entry
    live = torch.ones(b, dtype=torch.bool, device=logits.device)
    for step in range(cap):
        tok, rel = _pick(logits)
        tokens[rows, step] = tok
        tie = live & (rel < tie_margin)
        tie_at[rows] = torch.where(tie, step, tie_at[rows])
        live &= (tok != eos_id) & ~tie
        n_live = int(live.sum())
        if n_live == 0 or step == cap - 1:
            break
        if n_live <= COMPACT_BELOW * len(live):
            keep = live.nonzero().squeeze(1)
            stepper.select(keep)
            tok, rows, live = tok[keep], rows[keep], live[keep]
        logits = stepper(tok)
    return tokens, tie_at


def _cut_at_eos(tokens: torch.Tensor, eos_id: int) -> list[list[int]]:
    """Rows of ``tokens`` as lists, each ending at its first eos (kept) or at the cap."""
    is_eos = tokens == eos_id
    n = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, tokens.shape[1])
    return [row[:k] for row, k in zip(tokens.tolist(), n.tolist(), strict=True)]


class _Redo:
    """Near-tie rows waiting to be decoded again, exactly: one-row products (under
    `row_exact_linears`) and the reference's gelu, restarting from their prompt pass.

    Rows of several batches wait together (GPT-2 starts can be joined), up to ``batch_size``
    rows of one token cap, so that a re-decode runs on a full batch rather than a handful of
    rows per batch: each step then costs one set of ops instead of one per batch.
    """

    def __init__(self, model: nn.Module, eos_id: int, results: list[list[int]], batch_size: int):
        self.model, self.eos_id, self.results, self.batch_size = model, eos_id, results, batch_size
        self.gpt2 = _fast_gpt2(model)
        self.waiting: list[tuple[list[int], _Gpt2Start | _HfStart]] = []
        self.cap, self.size, self.count = 0, 0, 0

    def add(self, cap: int, rows: list[int], start: _Gpt2Start | _HfStart) -> None:
        """Rows ``rows`` (indices into the results) of ``start``, token cap ``cap``."""
        if self.waiting and (
            not self.gpt2 or cap != self.cap or self.size + len(rows) > self.batch_size
        ):
            self.flush()
        self.waiting.append((rows, start))
        self.cap, self.size, self.count = cap, self.size + len(rows), self.count + len(rows)

    def flush(self) -> None:
        if not self.waiting:
            return
        starts = [s for _, s in self.waiting]
        start = starts[0] if len(starts) == 1 else _Gpt2Start.concat(cast(Any, starts))
        rows = [i for r, _ in self.waiting for i in r]
        with row_exact_linears(self.model):
            stepper, logits = start.start(exact=True)
            tokens, _ = _greedy_steps(stepper, logits, self.eos_id, self.cap)
        for i, g in zip(rows, _cut_at_eos(tokens, self.eos_id), strict=True):
            self.results[i] = g
        self.waiting, self.size = [], 0


def _batches(
    prompts: Sequence[np.ndarray], batch_size: int, cap_of: Callable[[int], int], mix: bool
) -> Iterator[tuple[int, list[list[int]]]]:
    """Batches of at most ``batch_size`` prompt indices, each as (cap, groups of equal length).

    Prompts are taken in order of length, so a batch holds few lengths. With ``mix`` a batch
    spans lengths that share a token cap (all of them, unless prompts come near the model's
    position limit); otherwise each batch has one length. Prompts with no room for a token
    (cap <= 0) are left out.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batch: list[list[int]] = []
    batch_cap, size = 0, 0
    for i in order:
        length, cap = len(prompts[i]), cap_of(len(prompts[i]))
        if cap <= 0:
            continue
        same_length = bool(batch) and len(prompts[batch[-1][-1]]) == length
        if batch and (size == batch_size or cap != batch_cap or not (mix or same_length)):
            yield batch_cap, batch
            batch, size = [], 0
        if batch and len(prompts[batch[-1][-1]]) == length:
            batch[-1].append(i)
        else:
            batch.append([i])
        batch_cap, size = cap, size + 1
    if batch:
        yield batch_cap, batch


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

    Prompts go in order of length into batches of at most ``batch_size`` (see the module
    docstring for the three phases of a batch). With ``exact`` (default: on for CPU) the result
    equals one-example-at-a-time decoding: every example whose argmax comes within
    ``tie_margin`` of a tie is decoded again under `row_exact_linears` (``tie_margin=inf``
    decodes everything that way). Without it, near-ties may resolve differently.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    exact = (device.type == "cpu") if exact is None else exact
    n_pos = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    results: list[list[int]] = [[] for _ in prompts]

    def cap_of(length: int) -> int:
        return max_new_tokens if n_pos is None else min(max_new_tokens, n_pos - length)

    was_training = model.training
    model.eval()

    redo = _Redo(model, eos_id, results, batch_size)
    try:
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ):
            for cap, groups in _batches(prompts, batch_size, cap_of, mix=redo.gpt2):
                ids = [
                    torch.from_numpy(np.stack([prompts[i] for i in g]).astype(np.int64)).to(device)
                    for g in groups
                ]
                rows = [i for g in groups for i in g]
                start = (
                    _Gpt2Start.prompts(model, ids, cap) if redo.gpt2 else _HfStart(model, ids[0])
                )
                if exact and tie_margin == float("inf"):
                    redo.add(cap, rows, start)  # no fast pass: every row exact
                    continue
                # The fast pass; near-tie rows stop early and wait for their exact re-decode.
                stepper, logits = start.start(exact=False)
                margin = tie_margin if exact else 0.0
                tokens, tie_at = _greedy_steps(stepper, logits, eos_id, cap, margin)
                for i, g in zip(rows, _cut_at_eos(tokens, eos_id), strict=True):
                    results[i] = g
                marked = (tie_at >= 0).nonzero().squeeze(1)
                if marked.numel():
                    rows_marked = [rows[j] for j in marked.tolist()]
                    redo.add(cap, rows_marked, start.rows(marked))
            redo.flush()
    finally:
        model.train(was_training)
    log.debug("re-decoded %d of %d near-tie examples", redo.count, len(prompts))
    return results
