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
   6,000 rows gives each row the same bits; 1 to 3 rows do not, hence `MIN_GEMM_ROWS`).

One-row kernels re-read every weight matrix per row, which is slower, so each batch (prompts
taken in order of length, several lengths per batch for GPT-2, `_batches`) goes through three
phases:

1. **Prompt pass**, once. For plain GPT-2, `Gpt2Prompt` runs the model's modules op for op
   (bit-identical to ``model.transformer``, tested) per prompt length, but skips work whose
   results nobody reads: after its attention, the last layer only runs on each prompt's last
   position (more of them in batches of under `MIN_GEMM_ROWS` prompts), which saves about 30 %
   of the pass for 2 layers; position-wise ops run in cache-sized chunks with gelu in place
   (same ops, same bits; the MLP 30 % faster). Keys and values go straight into the decode
   buffers. Other models (other architectures, peft wrappers) use their own forward
   (`_HfStart`), one prompt length per batch.
2. **Fast pass**: every row decodes with batched kernels (`Gpt2Stepper`: HF's decode step
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

The GPT-2 pieces (`Gpt2Prompt`, `Gpt2Stepper`, `Gpt2Start`, `row_exact_linears`) live in
`trainer.gpt2.mirror` (`trainer.gpt2` is the one place that reaches into transformers' GPT-2
internals).

Example::

    >>> outs = greedy_decode(model, [np.array([5, 6, 3, 7, 4])], eos_id=1, max_new_tokens=8)
    >>> outs[0]          # generated ids, ending with eos unless the cap was hit   # doctest: +SKIP
    [7, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from trainer.gpt2.mirror import Gpt2Start, Gpt2Stepper, is_plain_gpt2, row_exact_linears

log = logging.getLogger(__name__)


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
    """`Gpt2Start` for other models, equal-length prompts ``ids`` (B, T) only: each start runs
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
    stepper: Gpt2Stepper | _HfStepper,
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
        self.gpt2 = is_plain_gpt2(model)
        self.waiting: list[tuple[list[int], Gpt2Start | _HfStart]] = []
        self.cap, self.size, self.count = 0, 0, 0

    def add(self, cap: int, rows: list[int], start: Gpt2Start | _HfStart) -> None:
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
        start = starts[0] if len(starts) == 1 else Gpt2Start.concat(cast(Any, starts))
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
                start = Gpt2Start.prompts(model, ids, cap) if redo.gpt2 else _HfStart(model, ids[0])
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
