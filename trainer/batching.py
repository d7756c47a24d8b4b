"""Length-bucketed batches from a ragged encoded split, deterministic per (seed, epoch).

Padding is wasted compute, so each epoch shuffles the examples, cuts them into large chunks
(``chunk`` batches' worth), sorts every chunk by length and slices it into batches, then shuffles
the batch order. Rows of a batch therefore have nearly equal lengths while the data order stays
random. The plan of epoch ``e`` is a pure function of ``(lengths, seed, e, sizes)``, so resuming a
run needs only the step number.

Example::

    >>> lengths = np.array([5, 9, 6, 9, 5, 7])
    >>> plan = epoch_plan(lengths, seed=0, epoch=0, batch_size=2, chunk=3)
    >>> [sorted(lengths[b].tolist()) for b in plan]     # doctest: +SKIP
    [[5, 5], [6, 7], [9, 9]]

`collate` turns a batch of indices into right-padded ``(inputs, targets)`` tensors; with causal
attention, right padding never influences real positions, so no attention mask is needed.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

IGNORE = -100  # target value ignored by the loss


class Sequences(Protocol):
    """The ragged layout of `data.EncodedSplit` (anything with these arrays works)."""

    @property
    def tokens(self) -> np.ndarray: ...  # int32, all sequences concatenated
    @property
    def offsets(self) -> np.ndarray: ...  # int64, N + 1
    @property
    def prompt_lens(self) -> np.ndarray: ...  # int32, N


def seq_lengths(split: Sequences) -> np.ndarray:
    """Length of every sequence, shape (N,)."""
    return np.diff(np.asarray(split.offsets)).astype(np.int64)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's order; independent streams per (seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x5EED]))


def epoch_plan(
    lengths: np.ndarray,
    seed: int,
    epoch: int,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    chunk: int = 64,
    order_seed: int | None = None,
) -> list[np.ndarray]:
    """Batches (arrays of example indices) of one epoch; exactly one of the two sizes is set.

    ``order_seed`` seeds the shuffle of the batch order (default: ``seed``). The trainer passes
    one fixed value, so that every run with the same number of examples and batch size steps
    through its chunks' length ranks in the same order: a run's own examples and batches still
    follow its seed, and runs trained together as one fused model (`trainer.fused`) meet
    batches of similar widths at each step instead of padding to the widest of random ones.
    """
    if (batch_size is None) == (batch_tokens is None):
        raise ValueError("set exactly one of batch_size and batch_tokens")
    rng = epoch_rng(seed, epoch)
    order = rng.permutation(len(lengths))
    # Chunk size in examples: `chunk` batches' worth (token budgets use the mean length).
    per_batch = batch_size or max(1, int(batch_tokens // max(1.0, float(lengths.mean()))))  # type: ignore[operator]
    step = per_batch * chunk
    batches: list[np.ndarray] = []
    for start in range(0, len(order), step):
        part = order[start : start + step]
        part = part[np.argsort(lengths[part], kind="stable")]
        if batch_size is not None:
            batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        else:
            batches.extend(_pack_tokens(part, lengths, batch_tokens))  # type: ignore[arg-type]
    order_rng = rng if order_seed is None else epoch_rng(order_seed, epoch)
    perm = order_rng.permutation(len(batches))
    return [batches[i] for i in perm]


def _pack_tokens(sorted_idx: np.ndarray, lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Greedy packing of length-sorted examples so that rows * max_len <= budget (>= 1 row)."""
    out: list[np.ndarray] = []
    begin = 0
    for i in range(1, len(sorted_idx) + 1):
        rows = i - begin
        # Sorted ascending, so the newest row is the longest of the batch.
        if i == len(sorted_idx) or (rows + 1) * lengths[sorted_idx[i]] > budget:
            out.append(sorted_idx[begin:i])
            begin = i
    return out


def collate(
    split: Sequences, idx: np.ndarray, pad_id: int, loss_on: str = "output", multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(inputs, targets)`` of shape (B, T-1) for next-token prediction.

    ``targets[b, t]`` is token ``t+1`` of row ``b``, or IGNORE where it is padding or (with
    ``loss_on="output"``) still part of the prompt. ``multiple``: T-1 is rounded up to a
    multiple of it (fewer distinct shapes for torch.compile and CUDA graphs).
    """
    offsets = np.asarray(split.offsets)
    starts = offsets[idx]
    lens = offsets[idx + 1] - starts
    width = -(-(int(lens.max()) - 1) // multiple) * multiple + 1
    pos = np.arange(width)
    valid = pos[None, :] < lens[:, None]  # (B, T)
    seq = np.where(
        valid, np.asarray(split.tokens)[np.where(valid, starts[:, None] + pos, 0)], pad_id
    )
    inputs = seq[:, :-1]
    targets = seq[:, 1:].copy()
    first_target = np.asarray(split.prompt_lens)[idx] if loss_on == "output" else np.ones_like(lens)
    keep = valid[:, 1:] & (pos[None, 1:] >= first_target[:, None])
    targets[~keep] = IGNORE
    return torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))
