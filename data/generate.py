"""``generate(spec)``: the rewrite task, end to end.

One example of the rewrite task, worked through (rule ``ab → c``, one occurrence)::

    rule      x = "ab", y = "c"
    input     z = "zzabz"        (x planted at position 2; z.count(x) == 1)
    output        "zzcz"         (z.replace(x, y, 1): leftmost occurrence, once)
    text      "ab→c|zzabz=" + "zzcz"
    tokens    5 6 2 7 3 30 30 5 6 30 4 | 30 30 7 30 1      (prompt | completion + <eos>)

Randomness: ``np.random.SeedSequence(spec.seed)`` spawns one PCG64 stream per stage (train rules,
test rules, train examples, test examples), so the data is a pure function of the spec.

Split composition (exact, not sampled):
- rule ids: ``uniform`` gives every rule ``n // I`` or ``n // I + 1`` examples (the first
  ``n % I`` rules get one more), shuffled; ``power`` draws ``floor(I * v ** (1 / alpha))`` with
  ``v`` uniform, i.e. ``u = v**(1/alpha)`` has density ``alpha * u**(alpha - 1)`` on [0, 1];
- no-ops: exactly ``floor(noop_fraction * n + 0.5)`` examples, at random positions;
- occurrences: the has-op examples cycle through the ``occurrences`` list (counts differ by at
  most one), then are shuffled.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.counting import occurrence_counts, rule_ids, train_composition
from data.dataset import RewriteDataset, load_dataset
from data.encode import PreEncoded
from data.examples import Inputs, draw_inputs
from data.families import KINDS
from data.io import is_complete
from data.markov import generate_markov
from data.rules import RuleSet, draw_rules, member, row_hashes
from data.spec import DataSpec, content_hash
from data.vocab import LETTER0, Vocab

log = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 16


def generate(spec: DataSpec, progress: bool = False) -> RewriteDataset:
    """Generate the train and test splits of ``spec`` (a pure function of ``spec``).

    >>> ds = generate(DataSpec(n_instructions=10, examples_per_instruction=5, seed=1))
    >>> ds.train.num_rows, ds.test.num_rows
    (50, 1000)
    """
    if spec.task == "markov":
        return generate_markov(spec, progress=progress)
    # One stream per stage; a SeedSequence's i-th child does not depend on how many are spawned.
    streams = [
        np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(spec.seed).spawn(5)
    ]
    n_letters = len(spec.alphabet)
    train_rules = draw_rules(
        streams[0], spec.family, spec.n_instructions, spec.x_len, spec.y_len, n_letters
    )
    test_rules = draw_rules(
        streams[1],
        spec.test_family,
        spec.test.n_rules,
        spec.x_len,
        spec.y_len,
        n_letters,
        exclude=train_rules,
        level=spec.test.disjoint,
        field="test.n_instructions",
    )
    vocab = Vocab.build(spec.alphabet)
    rng = streams[2]
    train_ids, train_counts = train_composition(rng, spec)
    train = build_split(rng, spec, train_rules, train_ids, train_counts, vocab, progress, "train")
    rng = streams[3]
    test_ids = rule_ids(rng, spec.test.n_test, spec.test.n_rules, "uniform", None)
    counts = occurrence_counts(
        rng, spec.test.n_test, spec.test_noop_fraction, spec.test_occurrences
    )
    test = build_split(rng, spec, test_rules, test_ids, counts, vocab, progress, "test")
    seen = seen_columns(test_rules, test_ids, train_rules.take(np.unique(train_ids)))
    test_table = test.table
    for name, column in seen.items():
        test_table = test_table.append_column(name, pa.array(column))
    fresh = fresh_split(streams[4], spec, train_rules, train_ids, train_counts, train, vocab)
    log.info(
        "generated %d train / %d test / %d fresh examples (hash %s)",
        train.table.num_rows,
        test_table.num_rows,
        fresh.table.num_rows,
        spec.content_hash[:12],
    )
    encoded = {"train": train.encoded, "test": test.encoded, "fresh": fresh.encoded}
    return RewriteDataset(spec, train.table, test_table, fresh.table, pre_encoded=encoded)


def seen_columns(rules: RuleSet, ids: np.ndarray, trained: RuleSet) -> dict[str, np.ndarray]:
    """Per example of ``rules[ids]``: whether its ``x`` (``y``) is the ``x`` (``y``) of a rule
    that has training examples (``trained``). A test rule with ``x_seen=False`` asks the model to
    find a pattern it never saw as one: the paper's unseen instruction in the strict sense.

    >>> from data.vocab import LETTER0
    >>> def rs(x, y):
    ...     a = lambda v: np.array(v, dtype=np.uint8) + LETTER0
    ...     n = len(x)
    ...     return RuleSet(a(x), np.full(n, 1, np.int32), a(y), np.full(n, 1, np.int32),
    ...                    np.zeros(n, np.int8), np.ones(n, np.int32))
    >>> cols = seen_columns(rs([[0], [1]], [[2], [3]]), np.array([0, 1, 1]), rs([[0]], [[3]]))
    >>> cols["x_seen"].tolist(), cols["y_seen"].tolist()
    ([True, False, False], [False, True, True])
    """
    x_seen = member(rules.x_keys(), np.sort(trained.x_keys()))
    y_seen = member(rules.y_keys(), np.sort(trained.y_keys()))
    return {"x_seen": x_seen[ids], "y_seen": y_seen[ids]}


#: Rounds of redrawing a fresh input that happens to be a training input of its rule.
FRESH_ROUNDS = 64


def fresh_split(
    rng: np.random.Generator,
    spec: DataSpec,
    rules: RuleSet,
    train_ids: np.ndarray,
    train_counts: np.ndarray,
    train: Split,
    vocab: Vocab,
) -> Split:
    """``spec.test.n_fresh`` examples of training rules on inputs no training example of that
    rule has. The rows copy the rule and occurrence count of randomly drawn training rows (so
    rules, no-ops and counts follow the training split); only ``z`` is drawn anew. Where a rule
    has no unused input left (tiny ``z`` spaces) its rows are dropped, so the split can be
    shorter than asked (``fresh_n`` in the metrics says how long)."""
    n = spec.test.n_fresh
    rows = rng.choice(len(train_ids), size=n, replace=n > len(train_ids))
    assert train.keys is not None  # build_split keeps the training split's keys
    return build_split(
        rng, spec, rules, train_ids[rows], train_counts[rows], vocab, False, "fresh", train.keys
    )


def example_keys(rule_ids: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(n,) uint64 hash of each example's (rule, z): equal examples always hash alike."""
    head = rule_ids.astype("<u4").view(np.uint8).reshape(-1, 4)
    return row_hashes(np.concatenate([head, z], axis=1))


def _avoiding(
    rng: np.random.Generator,
    inp: Inputs,
    avoid: np.ndarray,
    rid: np.ndarray,
    x: np.ndarray,
    lx: np.ndarray,
    counts: np.ndarray,
    spec: DataSpec,
) -> tuple[Inputs, np.ndarray]:
    """``inp`` with every row whose (rule, z) key is in ``avoid`` (sorted) drawn again, and a
    mask of the rows kept: a row still clashing after `FRESH_ROUNDS` is dropped (its rule has
    (nearly) no input left that training did not use, e.g. ``|z| == |x|``)."""
    clash = np.zeros(0, dtype=np.int64)
    for _ in range(FRESH_ROUNDS):
        clash = np.flatnonzero(member(example_keys(rid, inp.z), avoid))
        if len(clash) == 0:
            break
        redo = draw_inputs(
            rng, x[clash], lx[clash], counts[clash], spec.z_len, len(spec.alphabet), LETTER0
        )
        inp.z[clash], inp.z_len[clash], inp.first[clash] = redo.z, redo.z_len, redo.first
    keep = np.ones(len(rid), dtype=bool)
    if len(clash):
        log.warning(
            "fresh split: %d of %d examples dropped: their rules have no input left that "
            "the training split does not use",
            len(clash),
            len(rid),
        )
        keep[clash] = False
    return inp, keep


@dataclass(frozen=True)
class _Grid:
    """Column layout of the per-chunk grid (see ``build_split``); widths are the length maxima."""

    x: int
    y: int
    z: int

    @property
    def width(self) -> int:
        return self.x + 1 + self.y + 1 + self.z + 1 + (self.z + self.y + self.z) + 1

    def fill(
        self,
        grid: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        inp: Inputs,
        lx: np.ndarray,
        op: np.ndarray,
        vocab: Vocab,
    ) -> None:
        """Write every column of ``grid`` (rows = examples); 0 is padding."""
        o_y = self.x + 1
        o_z = o_y + self.y + 1
        o_out = o_z + self.z + 1
        grid[:, : self.x] = x
        grid[:, self.x] = vocab.arrow_id
        grid[:, o_y : o_y + self.y] = y
        grid[:, o_z - 1] = vocab.sep_id
        grid[:, o_z : o_out - 1] = inp.z
        grid[:, o_out - 1] = vocab.eq_id
        # output = z[:first] + y + z[first + len(x):]; no-ops have first == len(z).
        # (Multiplying by a 0/1 mask is several times faster than copyto(where=...).)
        cols = np.arange(self.z)[None, :]
        first = inp.first[:, None]
        after = first + np.where(op, lx, 0)[:, None]
        o_y2, o_z2 = o_out + self.z, o_out + self.z + self.y
        np.multiply(inp.z, cols < first, out=grid[:, o_out:o_y2])
        np.multiply(y, op[:, None], out=grid[:, o_y2:o_z2])
        np.multiply(inp.z, cols >= after, out=grid[:, o_z2 : o_z2 + self.z])
        grid[:, -1] = vocab.eos_id


def build_split(
    rng: np.random.Generator,
    spec: DataSpec,
    rules: RuleSet,
    ids: np.ndarray,
    counts: np.ndarray,
    vocab: Vocab,
    progress: bool,
    name: str,
    avoid: np.ndarray | None = None,
) -> Split:
    """Draw inputs and outputs for every example, chunk by chunk, into one Arrow table.

    ``avoid``: sorted `example_keys` that no example may have (a fresh split avoids the
    training examples). The training split keeps its own keys for that (``Split.keys``).

    Each chunk lays its examples out as a 0-padded grid of token ids, one row per example,
    ``[x | → | y | '|' | z | = | z[:first] | y | z[first+len(x):] | <eos>]``, and squeezes the
    zeros out: that yields every encoded sequence at once. The table's string columns are then
    cut from the same bytes (one Arrow string per piece, 8 pieces per example).
    """
    layout = _Grid(spec.x_len[1], spec.y_len[1], spec.z_len[1])
    rows = min(len(ids), CHUNK_ROWS)
    # Every column is rewritten for each chunk, so one buffer serves them all (fresh
    # zero-filled pages for each chunk cost more than the work itself).
    grid_buf = np.empty((rows, layout.width), dtype=np.uint8)
    mask_buf = np.empty((rows, layout.width), dtype=bool)
    columns = _Columns(vocab, rules)
    bar = _progress(len(ids), name) if progress else None
    batches, encoded, keys = [], [], []
    for start in range(0, len(ids), CHUNK_ROWS):
        rid = ids[start : start + CHUNK_ROWS]
        c = counts[start : start + CHUNK_ROWS]
        r = len(rid)
        lx, ly = rules.x_len[rid], rules.y_len[rid]
        x, y = rules.x[rid], rules.y[rid]
        inp = draw_inputs(rng, x, lx, c, spec.z_len, len(spec.alphabet), LETTER0)
        if avoid is not None:
            inp, keep = _avoiding(rng, inp, avoid, rid, x, lx, c, spec)
            if not keep.all():
                rid, c, lx, ly, x, y = rid[keep], c[keep], lx[keep], ly[keep], x[keep], y[keep]
                inp = Inputs(inp.z[keep], inp.z_len[keep], inp.first[keep])
                r = len(rid)
        if name == "train":
            keys.append(example_keys(rid, inp.z))
        op = c > 0
        layout.fill(grid_buf[:r], x, y, inp, lx, op, vocab)
        np.not_equal(grid_buf[:r], 0, out=mask_buf[:r])
        seq = grid_buf[:r][mask_buf[:r]]  # (T,) the chunk's sequences, concatenated
        out_len = np.where(op, inp.z_len - lx + ly, inp.z_len)
        one = np.ones(r, dtype=np.int64)
        piece_len = np.stack([lx, one, ly, one, inp.z_len, one, out_len, one], axis=1)  # (r, 8)
        batches.append(columns.batch(seq, piece_len, rid, c))
        encoded.append(PreEncoded(seq, piece_len.sum(axis=1), lx + ly + inp.z_len + 3))
        if bar is not None:
            bar.update(r)
    if bar is not None:
        bar.close()
    if not batches:  # an empty split (test.n_fresh=0) still has every column
        none = np.zeros(0, dtype=np.int32)
        batches.append(columns.batch(np.zeros(0, np.uint8), np.zeros((0, 8), np.int64), none, none))
    table = pa.Table.from_batches(batches)
    return Split(table, encoded, np.sort(np.concatenate(keys)) if keys else None)


@dataclass(frozen=True)
class Split:
    """A generated split: its table, its token ids, and (training split) its example keys."""

    table: pa.Table
    encoded: list[PreEncoded]
    keys: np.ndarray | None = None  # sorted `example_keys` of the training split


class _Columns:
    """Builds a chunk's Arrow columns from its encoded bytes, without Python strings."""

    def __init__(self, vocab: Vocab, rules: RuleSet) -> None:
        self.vocab = vocab
        self.rules = rules
        self.kinds = pa.array(KINDS)
        # piece i of every example, as a filter mask (filter, a sequential scan, beats take)
        self.masks = {i: pa.array(np.tile(np.arange(8) == i, CHUNK_ROWS)) for i in (0, 2, 4, 6)}

    def batch(
        self, seq: np.ndarray, piece_len: np.ndarray, rid: np.ndarray, counts: np.ndarray
    ) -> pa.RecordBatch:
        r = len(rid)
        offsets = np.zeros(8 * r + 1, dtype=np.int32)
        np.cumsum(piece_len.reshape(-1), out=offsets[1:])
        # Letters' ASCII bytes; the specials turn into junk bytes, but no column reads them.
        delta = self.vocab.ascii_delta
        text = seq + np.uint8(delta) if delta is not None else self.vocab.id_to_byte[seq]
        pieces = pa.StringArray.from_buffers(8 * r, pa.py_buffer(offsets), pa.py_buffer(text))

        def piece(i: int) -> pa.Array:
            mask = self.masks[i] if r == CHUNK_ROWS else self.masks[i].slice(0, 8 * r)
            return pc.filter(pieces, mask)

        kind = pa.array(self.rules.kind[rid], type=pa.int32())
        return pa.record_batch(
            {
                "rule_id": pa.array(rid, type=pa.int32()),
                "x": piece(0),
                "y": piece(2),
                "z": piece(4),
                "output": piece(6),
                "is_noop": pa.array(counts == 0),
                "occurrences": pa.array(counts, type=pa.int32()),
                "family": pc.take(self.kinds, kind),
                "k": pa.array(self.rules.k[rid], type=pa.int32()),
            }
        )


def _progress(total: int, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"generating {name}", unit="ex", unit_scale=True)


def cached_generate(spec: DataSpec, cache_dir: str | Path) -> RewriteDataset:
    """Load ``cache_dir/<content_hash>/`` or generate it there (atomic and race-safe)."""
    root = Path(cache_dir)
    final = root / content_hash(spec)
    if is_complete(final):
        return load_dataset(final, expect=spec)
    ds = generate(spec)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{final.name}.tmp-{uuid.uuid4().hex}"
    ds.save(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        # Another process finished first (the target exists and is not empty): keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_complete(final):
            raise
        log.info("dataset %s was generated concurrently; reusing it", final.name[:12])
        return load_dataset(final, expect=spec)
    return ds
