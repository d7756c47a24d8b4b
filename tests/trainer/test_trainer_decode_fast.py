"""The decoder's fast paths: each is checked bit for bit or against `generate` one at a time.

`test_trainer_decode.py` checks the end result on three models; these tests pin the pieces that
make it fast, so that a broken piece fails here by name rather than as a rare mismatch:

* (the GPT-2 prompt pass, gelu in place and the decode step against HF's own modules are in
  ``test_gpt2_parity.py``, with the rest of `trainer.gpt2`;)
* prompts longer than `_MIN_GEMM_ROWS` in batches of 1 to 3 (where the last-layer cut keeps
  several positions per row) against `generate`;
* the step loop's bookkeeping (near-tie rows stop and are marked, eos rows stop, finished rows
  stay or leave the batch) with a scripted stepper;
* the generic (non-GPT-2) path, the all-one-row path and the compaction policy, which must not
  change predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_trainer_decode import hf_one_at_a_time

import trainer.decode as decode
from trainer import TrainConfig
from trainer.decode import greedy_decode
from trainer.gpt2 import mirror
from trainer.model import build_model


class _Vocab:
    size, pad_id, eos_id = 40, 0, 1


def _prompts(ds, n):
    enc = ds.encoded("test")
    return [np.asarray(enc.prompt(i)) for i in range(min(n, len(enc)))]


def test_long_prompts_in_tiny_batches_match_generate(make_spec):
    """Prompts longer than _MIN_GEMM_ROWS, one to three per batch: the last-layer cut keeps
    several positions per row there, and the products must still match the reference."""
    from data import generate

    ds = generate(make_spec(z_len=(20, 30), test={"n_test": 60}))
    model = build_model(TrainConfig(model="nano", max_steps=1, seed=4), ds.vocab)
    prompts = _prompts(ds, 60)
    assert min(map(len, prompts)) > mirror.MIN_GEMM_ROWS
    ref = hf_one_at_a_time(model, prompts, ds.vocab.eos_id, ds.vocab.pad_id, 6)
    for batch_size in (1, 2, 3):
        assert greedy_decode(model, prompts, ds.vocab.eos_id, 6, batch_size=batch_size) == ref


class _ScriptedStepper:
    """Logits from a table (row, step, V), following rows through `select`."""

    def __init__(self, table: torch.Tensor):
        self.table, self.rows, self.calls = table, torch.arange(table.shape[0]), 0
        self.step = 0
        self.selects: list[list[int]] = []

    def select(self, keep: torch.Tensor) -> None:
        self.rows = self.rows[keep]
        self.selects.append(self.rows.tolist())

    def __call__(self, tok: torch.Tensor) -> torch.Tensor:
        assert len(tok) == len(self.rows)
        self.calls += 1
        self.step += 1
        return self.table[self.rows, self.step]


def _script(plans: list[list[tuple[int, bool]]], cap: int, vocab: int = 6) -> torch.Tensor:
    """Logits for (token, near_tie) per row and step: a clear winner, or one 1e-5 ahead."""
    table = torch.zeros(len(plans), cap, vocab)
    for r, plan in enumerate(plans):
        for s, (tok, tie) in enumerate(plan):
            table[r, s, tok] = 10.0
            table[r, s, (tok + 1) % vocab] = 10.0 - (1e-4 if tie else 5.0)
    return table


@pytest.mark.parametrize("compact_below", [0.0, 0.5, 1.0])
def test_step_loop_stops_rows_at_eos_and_near_ties(monkeypatch, compact_below):
    monkeypatch.setattr(decode, "COMPACT_BELOW", compact_below)
    eos, cap = 1, 5
    plans = [
        [(2, False), (3, False), (1, False)],  # ends with eos at step 2
        [(4, False), (2, True)],  # near-tie at step 1: stops, marked
        [(2, False)] * cap,  # runs to the cap
        [(1, False)],  # eos at once
    ]
    plans = [p + [(0, False)] * (cap - len(p)) for p in plans]
    table = _script(plans, cap)
    stepper = _ScriptedStepper(table)
    tokens, tie_at = decode._greedy_steps(stepper, table[:, 0], eos, cap, tie_margin=1e-3)
    assert tie_at.tolist() == [-1, 1, -1, -1]
    assert decode._cut_at_eos(tokens[[0, 2, 3]], eos) == [[2, 3, 1], [2] * cap, [1]]
    assert tokens[1, :2].tolist() == [4, 2]
    assert stepper.calls == cap - 1  # row 2 keeps the batch going to the cap
    if compact_below == 0.0:
        assert stepper.selects == []
    else:
        assert stepper.selects[-1] == [2]  # only the running row is left in the end
    # Without a margin nothing is marked and the near-tie row decodes on.
    tokens, tie_at = decode._greedy_steps(_ScriptedStepper(table), table[:, 0], eos, cap)
    assert (tie_at == -1).all() and tokens[1].tolist() == [4, 2, 0, 0, 0]


@pytest.fixture(scope="module")
def prompts_and_models(small_ds, trained):
    untrained = build_model(TrainConfig(model="nano", max_steps=1, seed=3), small_ds.vocab)
    _, result = trained
    return _prompts(small_ds, 200), [untrained, result.model]


def test_paths_and_policies_agree(monkeypatch, small_ds, prompts_and_models):
    """Exact decoding gives the same predictions whichever way it gets there."""
    prompts, models = prompts_and_models
    eos = small_ds.vocab.eos_id
    for model in models:
        base = greedy_decode(model, prompts, eos, 8, batch_size=64)
        assert greedy_decode(model, prompts, eos, 8, batch_size=64, tie_margin=float("inf")) == base
        with monkeypatch.context() as m:
            m.setattr(decode, "COMPACT_BELOW", 1.0)  # drop finished rows at every step
            assert greedy_decode(model, prompts, eos, 8, batch_size=64) == base
        with monkeypatch.context() as m:
            m.setattr(decode, "COMPACT_BELOW", 0.0)  # never drop them
            assert greedy_decode(model, prompts, eos, 8, batch_size=64) == base
        with monkeypatch.context() as m:
            m.setattr(decode, "is_plain_gpt2", lambda model: False)  # the model's own forward
            assert greedy_decode(model, prompts, eos, 8, batch_size=64) == base


def test_some_rows_redecoded_from_the_prompt_pass_match_generate(caplog, small_ds):
    """A wide margin marks some rows of each batch (not all): re-decoding just those, from the
    shared prompt pass, still gives exactly what `generate` gives one at a time."""
    model = build_model(TrainConfig(model="nano", max_steps=1, seed=3), small_ds.vocab)
    prompts, v = _prompts(small_ds, 200), small_ds.vocab
    with caplog.at_level("DEBUG", logger="trainer.decode"):
        ours = greedy_decode(model, prompts, v.eos_id, 8, batch_size=64, tie_margin=0.1)
    (msg,) = [r.getMessage() for r in caplog.records if "re-decoded" in r.getMessage()]
    assert 0 < int(msg.split()[1]) < len(prompts), msg
    assert ours == hf_one_at_a_time(model, prompts, v.eos_id, v.pad_id, 8)


def test_batches_mix_lengths_that_share_a_cap():
    """Batches take prompts in order of length, several lengths at once (GPT-2 steps them
    together) but never two token caps; without mixing, one length per batch."""
    lengths = [5, 3, 9, 3, 5, 7, 9, 9, 4, 11, 3]
    prompts = [np.zeros(n, dtype=np.int64) for n in lengths]

    def cap_of(n: int) -> int:
        return min(4, 12 - n)  # lengths 9 and 11 come near a 12-position limit; 12+ none

    for mix in (True, False):
        batches = list(decode._batches(prompts, 4, cap_of, mix))
        seen = [i for _, groups in batches for g in groups for i in g]
        assert sorted(seen) == list(range(len(prompts)))
        assert [lengths[i] for i in seen] == sorted(lengths)
        for cap, groups in batches:
            assert sum(map(len, groups)) <= 4
            assert all(len({lengths[i] for i in g}) == 1 for g in groups)
            assert {cap_of(lengths[i]) for g in groups for i in g} == {cap}
            assert mix or len(groups) == 1
    mixed = [
        [lengths[g[0]] for g in groups] for _, groups in decode._batches(prompts, 4, cap_of, True)
    ]
    assert mixed == [[3, 4], [5, 7], [9], [11]]  # 3 x3 + 4 | 5 x2 + 7 | cap 3: 9 x3 | cap 1: 11
    assert list(decode._batches(prompts, 4, lambda n: 0, True)) == []


def test_prompts_near_the_position_limit_match_generate(small_ds):
    """A 16-position model: each prompt gets only the tokens that fit, and batches of
    different caps, stepped together per cap, still match `generate`."""
    model = build_model(
        TrainConfig(model="nano", n_positions=16, max_steps=1, seed=6), small_ds.vocab
    )
    v, prompts = small_ds.vocab, _prompts(small_ds, 120)
    caps = {len(p): min(8, 16 - len(p)) for p in prompts}
    assert len(set(caps.values())) > 2
    ours = greedy_decode(model, prompts, v.eos_id, 8, batch_size=32)
    for i, p in enumerate(prompts):
        (ref,) = hf_one_at_a_time(model, [p], v.eos_id, v.pad_id, caps[len(p)])
        assert ours[i] == ref, i
