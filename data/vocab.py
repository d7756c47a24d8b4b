"""``Vocab``: character tokens plus specials, a pure function of the spec.

Layout: ``<pad> <eos> → | =`` (ids 0..4), then the alphabet in order, then ``;`` and ``.`` for the
Markov task (rule separator and terminal marker). For the default alphabet::

    >>> v = Vocab.build("abcdefghijklmnopqrstuvwxyz")
    >>> v.encode("ab→c|zzabz=zzcz"), v.size
    ([5, 6, 2, 7, 3, 30, 30, 5, 6, 30, 4, 30, 30, 7, 30], 31)
    >>> v.decode([5, 6, 1, 7])     # stops at <eos>
    'ab'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from data.errors import DataError

PAD, EOS, ARROW, SEP, EQ = "<pad>", "<eos>", "→", "|", "="
SPECIALS: tuple[str, ...] = (PAD, EOS, ARROW, SEP, EQ)
MARKOV_TOKENS: tuple[str, ...] = (";", ".")
#: Token id of the first alphabet letter.
LETTER0 = len(SPECIALS)


@dataclass(frozen=True)
class Vocab:
    """Token table; ``pad_id == 0`` and specials come first."""

    tokens: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, alphabet: str, markov: bool = False) -> Vocab:
        return cls(SPECIALS + tuple(alphabet) + (MARKOV_TOKENS if markov else ()))

    pad_id: int = field(default=0, init=False)
    eos_id: int = field(default=1, init=False)
    arrow_id: int = field(default=2, init=False)
    sep_id: int = field(default=3, init=False)
    eq_id: int = field(default=4, init=False)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """One id per character; unknown characters raise ``DataError``."""
        try:
            return [self._index[c] for c in text]
        except KeyError as exc:
            raise DataError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: object) -> str:
        """Text of ``ids``: stops at ``<eos>``, skips ``<pad>``."""
        out: list[str] = []
        for i in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if i == self.eos_id:
                break
            if i != self.pad_id:
                out.append(self.tokens[i])
        return "".join(out)

    @cached_property
    def ascii_delta(self) -> int | None:
        """``ord(letter) - id`` when the alphabet is a run of consecutive ASCII codes, else None.

        Then a buffer of letter ids becomes text by one addition instead of a table lookup.
        """
        letters = [t for t in self.tokens[LETTER0:] if t not in MARKOV_TOKENS]
        codes = [ord(c) for c in letters]
        if codes and codes == list(range(codes[0], codes[0] + len(codes))) and codes[-1] < 128:
            return (codes[0] - LETTER0) % 256
        return None

    @cached_property
    def byte_to_id(self) -> np.ndarray:
        """(256,) uint8 lookup from an ASCII byte to its token id; 255 marks "not a token"."""
        lut = np.full(256, 255, dtype=np.uint8)
        for i, t in enumerate(self.tokens):
            if len(t) == 1 and t.isascii():
                lut[ord(t)] = i
        return lut

    @cached_property
    def id_to_byte(self) -> np.ndarray:
        """(256,) uint8 lookup from a single-ASCII-character token id to its byte (else 0)."""
        lut = np.zeros(256, dtype=np.uint8)
        for i, t in enumerate(self.tokens):
            if len(t) == 1 and t.isascii():
                lut[i] = ord(t)
        return lut
