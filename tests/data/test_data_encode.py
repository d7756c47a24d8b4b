"""Vocab and EncodedSplit: layout, round trips, the worked example of the docs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from data_helpers import small_spec

from data import DataError, Vocab, generate
from data.encode import encode_rewrite_table


def test_vocab_layout() -> None:
    v = Vocab.build("abc")
    assert v.tokens == ("<pad>", "<eos>", "→", "|", "=", "a", "b", "c")
    assert (v.pad_id, v.eos_id, v.arrow_id, v.sep_id, v.eq_id, v.size) == (0, 1, 2, 3, 4, 8)
    m = Vocab.build("abc", markov=True)
    assert m.tokens[-2:] == (";", ".") and m.size == 10
    assert v.decode([5, 0, 6, 1, 7]) == "ab"
    with pytest.raises(DataError):
        v.encode("abd")


def test_worked_example_tokens() -> None:
    v = Vocab.build("abcdefghijklmnopqrstuvwxyz")
    table = pa.table({"x": ["ab"], "y": ["c"], "z": ["zzabz"], "output": ["zzcz"]})
    enc = encode_rewrite_table(table, v)
    assert enc.sequence(0).tolist() == [5, 6, 2, 7, 3, 30, 30, 5, 6, 30, 4, 30, 30, 7, 30, 1]
    assert enc.prompt(0).tolist()[-1] == v.eq_id and enc.prompt_lens[0] == 11
    assert enc.completion(0).tolist() == [30, 30, 7, 30, 1]


def test_encoded_split_matches_texts() -> None:
    ds = generate(small_spec(noop_fraction=0.5, occurrences=(1, 2)))
    for split in ("train", "test"):
        enc = ds.encoded(split)  # type: ignore[arg-type]
        prompts, completions = ds.texts(split)  # type: ignore[arg-type]
        assert len(enc) == len(prompts) == ds.split(split).num_rows  # type: ignore[arg-type]
        assert enc.tokens.dtype == np.int32 and enc.offsets.dtype == np.int64
        assert enc.prompt_lens.dtype == np.int32 and enc.offsets[0] == 0
        assert enc.offsets[-1] == len(enc.tokens)
        for i in range(len(enc)):
            assert ds.vocab.encode(prompts[i]) == enc.prompt(i).tolist()
            assert ds.vocab.encode(completions[i]) + [1] == enc.completion(i).tolist()
        assert (
            enc.lengths == [len(p) + len(c) + 1 for p, c in zip(prompts, completions, strict=True)]
        ).all()
    assert ds.encoded("train") is ds.encoded("train")  # cached


def test_texts_format() -> None:
    ds = generate(small_spec())
    prompts, completions = ds.texts("test")
    row = ds.test.slice(0, 1).to_pylist()[0]
    assert prompts[0] == f"{row['x']}→{row['y']}|{row['z']}="
    assert completions[0] == row["output"]


def test_encoding_handles_sliced_and_chunked_columns() -> None:
    ds = generate(small_spec())
    part = pa.concat_tables([ds.train.slice(3, 5), ds.train.slice(50, 7)])
    enc = encode_rewrite_table(part, ds.vocab)
    full = ds.encoded("train")
    for i, j in enumerate([3, 4, 5, 6, 7, 50, 51, 52, 53, 54, 55, 56]):
        assert enc.sequence(i).tolist() == full.sequence(j).tolist()


def test_max_seq_len_bounds_every_sequence() -> None:
    for spec in (
        small_spec(noop_fraction=0.5, occurrences=(1, 3)),
        small_spec(x_len=(1, 2), y_len=(4, 6), z_len=(3, 12)),
        small_spec(
            task="markov",
            markov={"target": "halt", "max_steps": 4},
            x_len=(1, 2),
            y_len=(2, 4),
            z_len=(3, 8),
        ),
    ):
        ds = generate(spec)
        for split in ("train", "test"):
            assert ds.encoded(split).lengths.max() <= spec.max_seq_len  # type: ignore[arg-type]
