"""Encoding examples to token ids: the ragged ``EncodedSplit`` layout.

The rewrite example ``x=ab, y=c, z=zzabz`` (output ``zzcz``) becomes, with the default vocab::

    a  b  →  c  |  z  z  a  b  z  =  z  z  c  z  <eos>
    5  6  2  7  3  30 30 5  6  30 4  30 30 7  30 1        prompt_len = 11, length = 16

Splits are encoded without a per-example Python loop. Freshly generated data arrives already
encoded (``PreEncoded`` chunks from :mod:`data.generate`); a loaded table is joined row by row by
Arrow's C++ kernels and mapped through a byte lookup table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.errors import DataError
from data.vocab import Vocab


@dataclass(frozen=True)
class EncodedSplit:
    """A split's sequences, concatenated: sequence ``i`` is ``tokens[offsets[i]:offsets[i+1]]``."""

    tokens: np.ndarray  # (T,) int32
    offsets: np.ndarray  # (N + 1,) int64
    prompt_lens: np.ndarray  # (N,) int32; the prompt ends with "="

    def __len__(self) -> int:
        return len(self.prompt_lens)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) sequence lengths."""
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def prompt(self, i: int) -> np.ndarray:
        start = self.offsets[i]
        return self.tokens[start : start + self.prompt_lens[i]]

    def completion(self, i: int) -> np.ndarray:
        """Output tokens followed by ``<eos>``."""
        return self.tokens[self.offsets[i] + self.prompt_lens[i] : self.offsets[i + 1]]


@dataclass(frozen=True)
class PreEncoded:
    """Token ids of a chunk of examples as generated (``uint8``), kept until ``encoded()``."""

    seq: np.ndarray  # (T,) uint8, sequences concatenated
    lengths: np.ndarray  # (n,) sequence lengths
    prompt_lens: np.ndarray  # (n,)


def from_pre_encoded(chunks: Sequence[PreEncoded]) -> EncodedSplit:
    """Widen generated chunks into one ``EncodedSplit`` (one int32 buffer, written in place)."""
    n = sum(len(c.lengths) for c in chunks)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.concatenate([c.lengths for c in chunks]), out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), dtype=np.int32)
    pos = 0
    for c in chunks:
        tokens[pos : pos + len(c.seq)] = c.seq
        pos += len(c.seq)
    prompt_lens = np.concatenate([c.prompt_lens for c in chunks]).astype(np.int32)
    return EncodedSplit(tokens=tokens, offsets=offsets, prompt_lens=prompt_lens)


# One-byte stand-ins for the specials while sequences are joined as bytes.
_STAND_INS = {"→": "\x02", "|": "\x03", "=": "\x04", "<eos>": "\x01"}
JOIN_ROWS = 1 << 20


def encode_rewrite_table(table: pa.Table, vocab: Vocab) -> EncodedSplit:
    """Encode a rewrite split (columns x, y, z, output) as ``x → y | z = output <eos>``.

    Arrow joins the columns row by row in C++ with one-byte stand-ins for the specials; a
    256-entry lookup table then maps every byte to its token id.
    """
    lut = vocab.byte_to_id.astype(np.int32)
    lut[lut == 255] = -1
    for token, byte in _STAND_INS.items():
        lut[ord(byte)] = vocab.tokens.index(token)
    special = {t: pa.scalar(b, type=pa.large_string()) for t, b in _STAND_INS.items()}
    empty = pa.scalar("", type=pa.large_string())
    n = table.num_rows
    parts: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    prompt_lens: list[np.ndarray] = []
    for start in range(0, n, JOIN_ROWS):
        chunk = table.slice(start, JOIN_ROWS)
        x, y, z, out = (
            chunk.column(c).combine_chunks().cast(pa.large_string())
            for c in ("x", "y", "z", "output")
        )
        joined = pc.binary_join_element_wise(
            x, special["→"], y, special["|"], z, special["="], out, special["<eos>"], empty
        )
        if joined.null_count:
            raise DataError("rewrite columns must not hold nulls")
        offs = np.frombuffer(joined.buffers()[1], dtype=np.int64)[
            joined.offset : joined.offset + len(joined) + 1
        ]
        raw = np.frombuffer(joined.buffers()[2], dtype=np.uint8)[offs[0] : offs[-1]]
        ids = lut[raw]
        if (ids < 0).any():
            bad = bytes(raw[ids < 0][:8]).decode("utf-8", "replace")
            raise DataError(f"characters {bad!r} are not single-byte tokens of the vocabulary")
        parts.append(ids)
        lengths.append(np.diff(offs))
        prompt_lens.append(
            sum((pc.binary_length(a).to_numpy() for a in (x, y, z)), start=np.full(len(chunk), 3))
        )
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return EncodedSplit(
        tokens=tokens.astype(np.int32, copy=False),
        offsets=offsets,
        prompt_lens=np.concatenate(prompt_lens).astype(np.int32)
        if n
        else np.zeros(0, dtype=np.int32),
    )


def encode_texts(prompts: Sequence[str], completions: Sequence[str], vocab: Vocab) -> EncodedSplit:
    """Per-example encoding of ``prompt + completion + <eos>`` (used for Markov programs)."""
    seqs = [
        vocab.encode(p) + vocab.encode(c) + [vocab.eos_id]
        for p, c in zip(prompts, completions, strict=True)
    ]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
    prompt_lens = np.fromiter((len(p) for p in prompts), dtype=np.int32, count=len(seqs))
    return EncodedSplit(tokens=tokens, offsets=offsets, prompt_lens=prompt_lens)
