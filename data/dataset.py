"""``RewriteDataset``: the generated splits plus everything derived from them.

>>> ds = generate(spec)                      # doctest: +SKIP
>>> ds.train.column("output")[0]             # doctest: +SKIP
>>> enc = ds.encoded("train")                # doctest: +SKIP
>>> prompts, completions = ds.texts("test")  # doctest: +SKIP

(pyarrow tables, one row per example; the encoded split is cached on the object; texts are
``("ab→c|zzabz=", "zzcz")`` pairs.)
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import pyarrow as pa

from data.encode import (
    EncodedSplit,
    PreEncoded,
    encode_rewrite_table,
    encode_texts,
    from_pre_encoded,
)
from data.errors import DataError
from data.io import read_splits, write_splits
from data.spec import DataSpec, content_hash
from data.vocab import Vocab

Split = Literal["train", "test", "fresh"]


class RewriteDataset:
    """The tables of one spec; immutable by convention.

    ``train``: the training examples; ``test``: unseen rules (with ``x_seen``/``y_seen``: did the
    rule's x / y occur in training); ``fresh``: training rules on inputs never seen in training
    (``test.n_fresh`` rows; empty for the Markov task).
    """

    def __init__(
        self,
        spec: DataSpec,
        train: pa.Table,
        test: pa.Table,
        fresh: pa.Table | None = None,
        pre_encoded: dict[str, list[PreEncoded]] | None = None,
    ) -> None:
        self.spec = spec
        self.train = train
        self.test = test
        self.fresh = fresh if fresh is not None else train.slice(0, 0)
        self._encoded: dict[str, EncodedSplit] = {}
        # token ids the generator produced anyway; widened to int32 only when asked for
        self._pre_encoded = dict(pre_encoded or {})

    def __repr__(self) -> str:
        return (
            f"RewriteDataset(task={self.spec.task!r}, train={self.train.num_rows}, "
            f"test={self.test.num_rows}, fresh={self.fresh.num_rows}, "
            f"hash={self.content_hash[:12]})"
        )

    @cached_property
    def content_hash(self) -> str:
        """sha256 over the spec and the generator version (see ``data.spec.content_hash``)."""
        return content_hash(self.spec)

    @cached_property
    def vocab(self) -> Vocab:
        return Vocab.build(self.spec.alphabet, markov=self.spec.task == "markov")

    def split(self, name: Split) -> pa.Table:
        if name == "train":
            return self.train
        if name == "test":
            return self.test
        if name == "fresh":
            return self.fresh
        raise DataError(f"split must be 'train', 'test' or 'fresh', not {name!r}")

    def encoded(self, split: Split) -> EncodedSplit:
        """Token arrays of a split (``x → y | z = output <eos>``), computed once."""
        if split not in self._encoded:
            table = self.split(split)
            if split in self._pre_encoded:
                self._encoded[split] = from_pre_encoded(self._pre_encoded.pop(split))
            elif self.spec.task == "markov":
                self._encoded[split] = encode_texts(*self.texts(split), self.vocab)
            else:
                self._encoded[split] = encode_rewrite_table(table, self.vocab)
        return self._encoded[split]

    def texts(self, split: Split) -> tuple[list[str], list[str]]:
        """``(prompts, completions)`` as text, e.g. ``("ab→c|zzabz=", "zzcz")``; no eos."""
        table = self.split(split)
        zs = table.column("z").to_pylist()
        if self.spec.task == "markov":
            heads = table.column("program").to_pylist()
        else:
            heads = [
                f"{x}→{y}"
                for x, y in zip(
                    table.column("x").to_pylist(), table.column("y").to_pylist(), strict=True
                )
            ]
        prompts = [f"{h}|{z}=" for h, z in zip(heads, zs, strict=True)]
        return prompts, table.column("output").to_pylist()

    def save(self, path: str | Path) -> Path:
        """Write the splits as Parquet with spec and hash in the metadata (see ``data.io``)."""
        tables = {"train": self.train, "test": self.test, "fresh": self.fresh}
        return write_splits(path, self.spec, tables)


def load_dataset(path: str | Path, expect: DataSpec | None = None) -> RewriteDataset:
    """Load a directory written by ``RewriteDataset.save``; with ``expect``, insist it was made
    for that spec (`data.io.read_splits`)."""
    spec, tables = read_splits(path, expect)
    return RewriteDataset(spec, tables["train"], tables["test"], tables["fresh"])
