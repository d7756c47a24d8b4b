"""Markov algorithms: the run semantics against an independent oracle, and generated data."""

from __future__ import annotations

from data_helpers import small_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from data import generate
from data.markov import MarkovRule, render, run


def oracle(
    rules: list[tuple[str, str, bool]], z: str, max_steps: int, single: bool
) -> tuple[str, int, bool]:
    """Straightforward re-statement: first applicable rule, leftmost occurrence, until stop."""
    s, steps = z, 0
    while True:
        applicable = [r for r in rules if s.find(r[0]) >= 0]
        if not applicable:
            return s, steps, True
        if steps == (1 if single else max_steps):
            return s, steps, False
        x, y, terminal = applicable[0]
        i = s.find(x)
        s = s[:i] + y + s[i + len(x) :]
        steps += 1
        if terminal:
            return s, steps, True


def test_worked_example() -> None:
    program = [MarkovRule("ab", "b"), MarkovRule("b", "c", terminal=True)]
    assert render(program) == "ab→b;b→.c"
    assert run(program, "aab", 8, "single_step") == run(program, "aab", 8, "single_step")
    r1 = run(program, "aab", 8, "single_step")
    assert (r1.output, r1.n_steps, r1.halted) == ("ab", 1, False)
    r2 = run(program, "aab", 8, "halt")
    assert (r2.output, r2.n_steps, r2.halted) == ("c", 3, True)
    r3 = run([MarkovRule("a", "aa")], "a", 4, "halt")  # never halts: stopped by the step limit
    assert (r3.output, r3.n_steps, r3.halted) == ("aaaaa", 4, False)
    r4 = run(program, "xyz", 4, "halt")
    assert (r4.output, r4.n_steps, r4.halted) == ("xyz", 0, True)


rule = st.tuples(st.text("abc", min_size=1, max_size=3), st.text("abc", max_size=3), st.booleans())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(rule, min_size=1, max_size=4),
    st.text("abc", max_size=10),
    st.integers(1, 6),
    st.booleans(),
)
def test_run_matches_oracle(
    rules: list[tuple[str, str, bool]], z: str, steps: int, single: bool
) -> None:
    program = [MarkovRule(*r) for r in rules]
    got = run(program, z, steps, "single_step" if single else "halt")
    assert (got.output, got.n_steps, got.halted) == oracle(rules, z, steps, single)


def test_generated_markov_data() -> None:
    spec = small_spec(
        task="markov",
        markov={"target": "halt", "max_steps": 5, "n_rules": (2, 3)},
        noop_fraction=0.2,
        n_instructions=15,
        examples_per_instruction=8,
        x_len=(1, 3),
        test={"n_test": 40, "n_instructions": 10},
    )
    ds = generate(spec)
    assert ds.vocab.tokens[-2:] == (";", ".")
    train_rules: set[tuple[str, str]] = set()
    for split in ("train", "test"):
        rows = ds.split(split).to_pylist()  # type: ignore[arg-type]
        for r in rows:
            rules = [
                (p.split("→")[0], p.split("→")[1].lstrip("."), "→." in p)
                for p in r["program"].split(";")
            ]
            assert 2 <= len(rules) <= 3
            assert (r["output"], r["n_steps"], r["halted"]) == oracle(rules, r["z"], 5, False)
            assert r["is_noop"] == (r["n_steps"] == 0)
            assert (r["x"], r["y"]) == rules[0][:2] and r["occurrences"] == r["z"].count(r["x"])
            if split == "train":
                train_rules |= {ru[:2] for ru in rules}
            else:
                assert not train_rules & {ru[:2] for ru in rules}
        assert sum(r["is_noop"] for r in rows) == round(0.2 * len(rows))
        enc = ds.encoded(split)  # type: ignore[arg-type]
        prompts, completions = ds.texts(split)  # type: ignore[arg-type]
        assert ds.vocab.decode(enc.sequence(0)) == prompts[0] + completions[0]
        assert prompts[0] == f"{rows[0]['program']}|{rows[0]['z']}="


def test_single_step_target() -> None:
    spec = small_spec(task="markov", markov={"target": "single_step"}, x_len=(1, 3))
    for r in generate(spec).train.to_pylist():
        assert r["n_steps"] == (0 if r["is_noop"] else 1)
