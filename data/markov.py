"""Markov algorithms: ordered rewrite rules applied until the program halts.

A program is an ordered list of rules ``x → y``; some are *terminal* (rendered ``x→.y``). One
step scans the rules in order, takes the **first rule whose x occurs** in the string and replaces
the **leftmost** occurrence of that x (``s.replace(x, y, 1)``). A run stops when no rule applies,
right after a terminal rule fires, or after ``max_steps`` steps (then ``halted`` is false).
Targets: ``single_step`` (the string after at most one step) or ``halt`` (the string where the run
stops).

Worked example, program ``ab→b;b→.c`` (rendered with ``;`` between rules, ``.`` = terminal),
input ``aab``::

    aab  --rule 0 (ab→b)-->  ab  --rule 0-->  b  --rule 1 (b→.c, terminal)-->  c   halted
    single_step: output "ab", n_steps 1, halted False
    halt:        output "c",  n_steps 3, halted True
    prompt "ab→b;b→.c|aab="  completion "c"  tokens: a b → b ; b → . c | a a b = c <eos>

Data: ``n_instructions`` programs with ``MarkovSpec.n_rules`` rules each, all rules distinct
(test-program rules are disjoint from every training rule at ``test.disjoint``). A has-op example
plants the x of one uniformly chosen rule of its program ``c`` times (so some rule applies); a
no-op example's z contains no rule's x. The table's ``x``/``y`` hold the program's first rule and
``occurrences`` is ``z.count(x)`` of that first rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from data.counting import occurrence_counts, rule_ids, train_composition
from data.dataset import RewriteDataset
from data.errors import SpecError
from data.examples import draw_inputs
from data.rules import RuleSet, draw_rules
from data.spec import DataSpec
from data.vocab import LETTER0, Vocab

MAX_NOOP_ROUNDS = 1000


@dataclass(frozen=True)
class MarkovRule:
    x: str
    y: str
    terminal: bool = False


@dataclass(frozen=True)
class Run:
    """Result of running a program on one input."""

    output: str
    n_steps: int
    halted: bool


def render(program: Sequence[MarkovRule]) -> str:
    """``x→y;x→.y`` text of a program (``.`` marks a terminal rule)."""
    return ";".join(f"{r.x}→{'.' if r.terminal else ''}{r.y}" for r in program)


def first_applicable(program: Sequence[MarkovRule], s: str) -> int | None:
    """Index of the first rule whose x occurs in ``s``, or None."""
    for i, rule in enumerate(program):
        if rule.x in s:
            return i
    return None


def run(program: Sequence[MarkovRule], z: str, max_steps: int, target: str = "halt") -> Run:
    """Run ``program`` on ``z`` (see the module docstring for the exact semantics)."""
    limit = 1 if target == "single_step" else max_steps
    s, steps = z, 0
    while steps < limit:
        i = first_applicable(program, s)
        if i is None:
            return Run(s, steps, True)
        s = s.replace(program[i].x, program[i].y, 1)
        steps += 1
        if program[i].terminal:
            return Run(s, steps, True)
    return Run(s, steps, first_applicable(program, s) is None)


def generate_markov(spec: DataSpec, progress: bool = False) -> RewriteDataset:
    """Generate a Markov-task dataset (called by ``data.generate`` for ``task="markov"``)."""
    assert spec.markov is not None  # validated by DataSpec
    seeds = np.random.SeedSequence(spec.seed).spawn(4)
    streams = [np.random.Generator(np.random.PCG64(s)) for s in seeds]
    n_letters = len(spec.alphabet)
    vocab = Vocab.build(spec.alphabet, markov=True)
    lo, hi = spec.markov.n_rules

    def programs(
        rng: np.random.Generator, n: int, exclude: RuleSet | None, field: str
    ) -> tuple[RuleSet, np.ndarray, list[list[MarkovRule]]]:
        sizes = rng.integers(lo, hi + 1, size=n)
        family = spec.family if exclude is None else spec.test_family
        pool = draw_rules(
            rng,
            family,
            int(sizes.sum()),
            spec.x_len,
            spec.y_len,
            n_letters,
            exclude=exclude,
            level=spec.test.disjoint,
            field=field,
        )
        assert spec.markov is not None
        terminal = rng.random(len(pool)) < spec.markov.terminal_prob
        xs, ys = (a.to_pylist() for a in pool.strings(vocab))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        progs = [
            [MarkovRule(xs[j], ys[j], bool(terminal[j])) for j in range(starts[i], starts[i + 1])]
            for i in range(n)
        ]
        return pool, starts, progs

    train_pool, train_starts, train_progs = programs(
        streams[0], spec.n_instructions, None, "n_instructions"
    )
    _, test_starts, test_progs = programs(
        streams[1], spec.test.n_rules, train_pool, "test.n_instructions"
    )
    del test_starts
    rng = streams[2]
    ids, counts = train_composition(rng, spec)
    train = _split(rng, spec, train_progs, ids, counts, vocab)
    rng = streams[3]
    ids = rule_ids(rng, spec.test.n_test, spec.test.n_rules, "uniform", None)
    counts = occurrence_counts(
        rng, spec.test.n_test, spec.test_noop_fraction, spec.test_occurrences
    )
    test = _split(rng, spec, test_progs, ids, counts, vocab)
    del train_starts
    return RewriteDataset(spec, train, test)


def _split(
    rng: np.random.Generator,
    spec: DataSpec,
    progs: list[list[MarkovRule]],
    ids: np.ndarray,
    counts: np.ndarray,
    vocab: Vocab,
) -> pa.Table:
    """Inputs and runs for one split; per-example Python (Markov sets are small)."""
    assert spec.markov is not None
    n = len(ids)
    chosen = np.array([rng.integers(len(progs[i])) for i in ids.tolist()], dtype=np.int64)
    width = spec.x_len[1]
    x = np.zeros((n, width), dtype=np.uint8)
    x_len = np.zeros(n, dtype=np.int32)
    for row, (pid, j) in enumerate(zip(ids.tolist(), chosen.tolist(), strict=True)):
        enc = vocab.encode(progs[pid][j].x)
        x[row, : len(enc)] = enc
        x_len[row] = len(enc)
    zs: list[str] = [""] * n
    todo = np.arange(n)
    for _ in range(MAX_NOOP_ROUNDS):
        if not len(todo):
            break
        inputs = draw_inputs(
            rng,
            x[todo],
            x_len[todo],
            counts[todo],
            spec.z_len,
            n_letters=len(spec.alphabet),
            letter0=LETTER0,
        )
        retry = []
        for k, row in enumerate(todo.tolist()):
            z = vocab.decode(inputs.z[k])
            # a no-op must avoid every rule's x, not only the one it was drawn for
            if counts[row] == 0 and first_applicable(progs[ids[row]], z) is not None:
                retry.append(row)
            zs[row] = z
        todo = np.array(retry, dtype=np.int64)
    if len(todo):
        raise SpecError(
            f"noop_fraction: {len(todo)} no-op inputs still contained some rule's x after "
            f"{MAX_NOOP_ROUNDS} rounds; the programs' rules cover too much of the alphabet",
            ("noop_fraction",),
        )
    runs = [
        run(progs[pid], z, spec.markov.max_steps, spec.markov.target)
        for pid, z in zip(ids.tolist(), zs, strict=True)
    ]
    firsts = [progs[pid][0] for pid in ids.tolist()]
    return pa.table(
        {
            "rule_id": pa.array(ids, type=pa.int32()),
            "program": pa.array([render(progs[pid]) for pid in ids.tolist()], type=pa.string()),
            "x": pa.array([r.x for r in firsts], type=pa.string()),
            "y": pa.array([r.y for r in firsts], type=pa.string()),
            "z": pa.array(zs, type=pa.string()),
            "output": pa.array([r.output for r in runs], type=pa.string()),
            "is_noop": pa.array([r.n_steps == 0 for r in runs], type=pa.bool_()),
            "occurrences": pa.array(
                [z.count(r.x) for z, r in zip(zs, firsts, strict=True)], type=pa.int32()
            ),
            "n_steps": pa.array([r.n_steps for r in runs], type=pa.int32()),
            "halted": pa.array([r.halted for r in runs], type=pa.bool_()),
        }
    )
