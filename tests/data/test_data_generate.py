"""Generated rewrite data against exact oracles: str.replace, str.count, exact shares, families."""

from __future__ import annotations

import string
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from data_helpers import small_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data import DataSpec, RewriteDataset, generate
from data.counting import n_noops
from data.encode import encode_rewrite_table

REQUIRED = {
    "x": pa.string(),
    "y": pa.string(),
    "z": pa.string(),
    "output": pa.string(),
    "rule_id": pa.int32(),
    "is_noop": pa.bool_(),
    "occurrences": pa.int32(),
}


def check_split(ds: RewriteDataset, split: str) -> None:
    """Every invariant a split must satisfy, checked row by row with plain Python."""
    spec = ds.spec
    table = ds.split(split)  # type: ignore[arg-type]
    for name, typ in REQUIRED.items():
        assert table.schema.field(name).type == typ, name
    cols = {
        c: table.column(c).to_pylist()
        for c in ("x", "y", "z", "output", "rule_id", "is_noop", "occurrences")
    }
    noop_f = spec.noop_fraction if split == "train" else spec.test_noop_fraction
    occ = spec.occurrences if split == "train" else spec.test_occurrences
    n = table.num_rows
    assert n == (spec.n_train if split == "train" else spec.test.n_test)
    by_rule: dict[int, tuple[str, str]] = {}
    for x, y, z, out, rid, noop, count in zip(*cols.values(), strict=True):
        assert out == z.replace(x, y, 1)
        assert count == z.count(x)
        assert noop == (x not in z) == (count == 0)
        assert spec.z_len[0] <= len(z) <= spec.z_len[1]
        assert spec.x_len[0] <= len(x) <= spec.x_len[1] and spec.y_len[0] <= len(y) <= spec.y_len[1]
        assert x != y
        assert set(x + y + z) <= set(spec.alphabet)
        assert by_rule.setdefault(rid, (x, y)) == (x, y)  # one rule per id
        if not noop:
            assert count in occ
    on_top = split == "train" and spec.noops_on_top
    assert sum(cols["is_noop"]) == (spec.n_noops_on_top if on_top else n_noops(n, noop_f))
    hist = Counter(c for c in cols["occurrences"] if c)
    if n - n_noops(n, noop_f) >= len(occ):
        assert set(hist) == set(occ)
    assert max(hist.values(), default=0) - min(hist.values(), default=0) <= 1
    assert len(set(by_rule.values())) == len(by_rule)  # distinct rules


def check_fresh(ds: RewriteDataset) -> None:
    """Fresh rows: training rules (same x, y, rule id), correct outputs, and no (rule, z) pair
    that the training split holds."""
    train_rules = {
        r["rule_id"]: (r["x"], r["y"]) for r in ds.train.select(["rule_id", "x", "y"]).to_pylist()
    }
    train_pairs = set(zip(ds.train["rule_id"].to_pylist(), ds.train["z"].to_pylist(), strict=True))
    rows = ds.fresh.to_pylist()
    assert len(rows) <= ds.spec.test.n_fresh
    for r in rows:
        assert train_rules[r["rule_id"]] == (r["x"], r["y"])
        assert (r["rule_id"], r["z"]) not in train_pairs
        assert r["output"] == r["z"].replace(r["x"], r["y"], 1)
        assert r["occurrences"] == r["z"].count(r["x"]) and r["is_noop"] == (r["occurrences"] == 0)


def check_seen(ds: RewriteDataset) -> None:
    """``x_seen``/``y_seen`` of each test row against the training split, in plain Python."""
    xs, ys = set(ds.train["x"].to_pylist()), set(ds.train["y"].to_pylist())
    for r in ds.test.select(["x", "y", "x_seen", "y_seen"]).to_pylist():
        assert r["x_seen"] == (r["x"] in xs) and r["y_seen"] == (r["y"] in ys)


def test_fresh_inputs_avoid_every_training_input_even_when_they_are_scarce() -> None:
    # 4 letters, |z| = 4, |x| = 2: a rule has at most 3 * 16 = 48 inputs and 120 training
    # examples each, so most random draws clash with training and must be drawn again.
    spec = small_spec(
        alphabet="abcd",
        z_len=(4, 4),
        x_len=(2, 2),
        y_len=(2, 2),
        n_instructions=2,
        examples_per_instruction=120,
        test={"n_test": 20, "n_instructions": 2, "n_fresh": 200},
    )
    ds = generate(spec)
    check_fresh(ds)
    train_z = Counter(ds.train["rule_id"].to_pylist())
    assert sum(train_z.values()) == 240 and ds.fresh.num_rows > 100
    fresh_ids = Counter(ds.fresh["rule_id"].to_pylist())
    assert set(fresh_ids) == {0, 1}  # both training rules, in the training split's proportions


def test_fresh_rows_are_dropped_when_a_rule_has_no_input_left() -> None:
    # |z| == |x|: the only has-op input of a rule is x itself, which training already holds.
    spec = small_spec(
        alphabet="abc",
        z_len=(2, 2),
        x_len=(2, 2),
        y_len=(2, 2),
        n_instructions=3,
        examples_per_instruction=4,
        test={"n_test": 6, "n_instructions": 2, "n_fresh": 10},
    )
    ds = generate(spec)
    assert ds.fresh.num_rows == 0
    assert ds.fresh.schema.names == ds.train.schema.names


def test_seen_columns_mark_test_rules_whose_strings_occurred_in_training() -> None:
    # 3 letters, |x| = |y| = 1: 6 rules in all, 2 per letter; 5 for training cover every
    # letter as an x and as a y, so the one test rule's strings were both seen.
    spec = small_spec(
        alphabet="abc",
        z_len=(3, 3),
        x_len=(1, 1),
        y_len=(1, 1),
        n_instructions=5,
        examples_per_instruction=5,
        test={"n_test": 8, "n_instructions": 1},
    )
    ds = generate(spec)
    check_seen(ds)
    assert all(ds.test["x_seen"].to_pylist()) and all(ds.test["y_seen"].to_pylist())
    strict = generate(spec.with_updates(**{"test.disjoint": "x", "n_instructions": 2}))
    check_seen(strict)
    assert not any(strict.test["x_seen"].to_pylist())  # x-disjoint: every test x is new


def test_seen_counts_only_rules_that_have_training_examples() -> None:
    # A steep power law over many rules leaves some rules without any example: their strings
    # were never shown, so a test rule sharing them is new.
    spec = small_spec(
        n_instructions=200,
        n_examples=50,
        examples_per_instruction=None,
        distribution="power",
        alpha=0.1,
        test={"n_test": 200, "n_instructions": 100},
    )
    ds = generate(spec)
    assert len(set(ds.train["rule_id"].to_pylist())) < 200
    check_seen(ds)


@st.composite
def specs(draw: st.DrawFn) -> DataSpec:
    letters = draw(st.integers(3, 6))
    kind = draw(st.sampled_from(["free", "free", "repeated", "periodic", "mirror", "mix"]))
    x_lo = draw(st.integers(1 if letters >= 4 else 2, 3))
    # structured families need an even length for k=2: keep 4 in both ranges
    x_hi = 4 if kind != "free" else draw(st.integers(x_lo, 4))
    y_lo = draw(st.integers(1, 3))
    y_hi = 4 if kind != "free" else draw(st.integers(y_lo, 4))
    occurrences = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True))
    z_hi = max(occurrences) * x_hi + draw(st.integers(0, 8))
    power = draw(st.booleans())
    on_top = draw(st.booleans())
    return DataSpec(
        alphabet=string.ascii_lowercase[:letters],
        z_len=(draw(st.integers(1, z_hi)), z_hi),
        x_len=(x_lo, x_hi),
        y_len=(y_lo, y_hi),
        n_instructions=draw(st.integers(1, 6)),
        n_examples=draw(st.integers(6, 80)),
        distribution="power" if power else "uniform",
        alpha=draw(st.sampled_from([0.1, 0.5, 2.0])) if power else None,
        noop_fraction=draw(st.sampled_from([0.0, 0.1, 0.37, 0.5, 0.9 if not on_top else 0.6])),
        noops_on_top=on_top,
        occurrences=occurrences,
        family={"kind": kind, "k": None if kind == "free" else (1, 2)},
        test={
            "n_test": draw(st.integers(1, 40)),
            "n_instructions": 1,
            "noop_fraction": draw(st.sampled_from([None, 0.0, 0.25])),
            "disjoint": draw(st.sampled_from(["rule", "x"])),
        },
        seed=draw(st.integers(0, 2**32)),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_generated_rows_match_oracles(spec: DataSpec) -> None:
    ds = generate(spec)
    check_split(ds, "train")
    check_split(ds, "test")
    check_fresh(ds)
    check_seen(ds)
    rules = {}
    for split in ("train", "test"):
        rows = ds.split(split).select(["x", "y", "family", "k"]).to_pylist()  # type: ignore[arg-type]
        rules[split] = {(r["x"], r["y"]) for r in rows}
        for r in rows:
            assert shape_ok(r["x"], r["family"], r["k"]) and shape_ok(r["y"], r["family"], r["k"])
    assert not rules["train"] & rules["test"]
    if spec.test.disjoint == "x":
        assert not {x for x, _ in rules["train"]} & {x for x, _ in rules["test"]}


def test_paper_like_mix_of_occurrences_and_noops() -> None:
    spec = DataSpec(
        z_len=(10, 50),
        x_len=(2, 5),
        y_len=(1, 5),
        occurrences=(1, 5, 10),
        noop_fraction=0.3,
        n_instructions=50,
        examples_per_instruction=41,
        seed=3,
        test={"n_test": 333, "n_instructions": 30, "occurrences": [2, 3]},
    )
    ds = generate(spec)
    check_split(ds, "train")
    check_split(ds, "test")
    assert sum(ds.train.column("is_noop").to_pylist()) == round(0.3 * 2050)


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_noops_on_top_keep_the_has_op_budget_of_every_rule(share: float) -> None:
    spec = small_spec(
        n_instructions=8,
        examples_per_instruction=25,
        noop_fraction=share,
        noops_on_top=True,
        test={"n_test": 20, "n_instructions": 4},
    )
    ds = generate(spec)
    check_split(ds, "train")
    noop = np.asarray(ds.train["is_noop"].to_pylist())
    ids = ds.train["rule_id"].to_numpy()
    assert np.bincount(ids[~noop], minlength=8).tolist() == [25] * 8  # the has-op budget, exact
    assert noop.sum() == round(share / (1 - share) * 200)  # no-ops on top: that share of all
    within = generate(spec.with_updates(noops_on_top=False))
    assert within.train.num_rows == 200  # the default: no-ops are part of the budget


def test_uniform_distribution_counts_are_equal() -> None:
    ds = generate(small_spec(n_instructions=7, n_examples=52, examples_per_instruction=None))
    counts = np.bincount(ds.train.column("rule_id").to_numpy(), minlength=7)
    assert sorted(counts.tolist()) == [7, 7, 7, 7, 8, 8, 8]


def test_same_spec_same_bytes_other_seed_differs(tmp_path: object) -> None:
    spec = small_spec(noop_fraction=0.25, occurrences=(1, 2))
    a, b = generate(spec), generate(spec)
    assert a.train.equals(b.train) and a.test.equals(b.test)
    ea, eb = a.encoded("train"), b.encoded("train")
    assert ea.tokens.tobytes() == eb.tokens.tobytes()
    c = generate(spec.with_updates(seed=1))
    assert not a.train.equals(c.train)
    assert ea.tokens.tobytes() != c.encoded("train").tokens.tobytes()


@pytest.mark.parametrize("level", ["rule", "x"])
def test_test_rules_disjoint_from_training(level: str) -> None:
    # A crowded rule space (3 letters, short strings) makes accidental overlap likely.
    spec = small_spec(
        alphabet="abc",
        x_len=(1, 3),
        y_len=(1, 1),
        z_len=(3, 9),
        n_instructions=20,
        test={"n_test": 30, "n_instructions": 5, "disjoint": level},
    )
    ds = generate(spec)
    train_pairs = set(
        zip(ds.train.column("x").to_pylist(), ds.train.column("y").to_pylist(), strict=True)
    )
    test_pairs = set(
        zip(ds.test.column("x").to_pylist(), ds.test.column("y").to_pylist(), strict=True)
    )
    assert len(train_pairs) == 20 and len(test_pairs) == 5
    assert not train_pairs & test_pairs
    if level == "x":
        assert not {x for x, _ in train_pairs} & {x for x, _ in test_pairs}


def test_rule_level_allows_shared_x() -> None:
    """With level 'rule', a test x may reuse a training x (with another y): the levels differ."""
    spec = small_spec(
        alphabet="abc",
        x_len=(1, 2),
        y_len=(1, 2),
        z_len=(2, 8),
        n_instructions=40,
        test={"n_test": 40, "n_instructions": 40},
    )
    ds = generate(spec)
    train_x = set(ds.train.column("x").to_pylist())
    assert train_x & set(ds.test.column("x").to_pylist())


def shape_ok(s: str, kind: str, k: int) -> bool:
    """Independent check that ``s`` has the family shape with copy count ``k``."""
    if len(s) % k:
        return False
    b = len(s) // k
    base = s[:b] if kind != "repeated" else s[::k]
    if kind == "free":
        return k == 1
    if kind == "repeated":
        return s == "".join(ch * k for ch in base)
    if kind == "periodic":
        return s == base * k
    return s == "".join(base if i % 2 == 0 else base[::-1] for i in range(k))  # mirror


@pytest.mark.parametrize(
    ("family", "k_range"),
    [
        ("repeated", (3, 3)),
        ("periodic", (2, 3)),
        ("mirror", (3, 4)),
        ("mix", (1, 2)),
        ("mix", (3, 6)),
    ],
)
def test_family_shapes_match_k(family: str, k_range: tuple[int, int]) -> None:
    spec = DataSpec(
        x_len=(2, 20),
        y_len=(1, 20),
        z_len=(20, 50),
        n_instructions=60,
        examples_per_instruction=1,
        seed=5,
        family={"kind": family, "k": k_range},
        test={"n_test": 40},
    )
    ds = generate(spec)
    rows = ds.train.select(["x", "y", "family", "k"]).to_pylist()
    kinds = spec.family.kinds
    assert {r["family"] for r in rows} <= set(kinds)
    if family == "mix":
        assert {r["family"] for r in rows} == set(kinds)  # 60 rules cover 3 kinds
    for r in rows:
        assert k_range[0] <= r["k"] <= k_range[1]
        assert shape_ok(r["x"], r["family"], r["k"]), r
        assert shape_ok(r["y"], r["family"], r["k"]), r


def test_paper_examples_of_family_shapes() -> None:
    assert shape_ok("aaabbbccc", "repeated", 3)
    assert shape_ok("abcabc", "periodic", 2)
    assert shape_ok("abccbaabc", "mirror", 3)
    assert not shape_ok("abcabd", "periodic", 2) and not shape_ok("abcabc", "mirror", 2)


def test_test_family_override_gives_unseen_k() -> None:
    spec = DataSpec(
        n_instructions=50,
        examples_per_instruction=2,
        seed=2,
        family={"kind": "mix", "k": (3, 4)},
        test={"n_test": 60, "family": {"kind": "mix", "k": (1, 2)}},
    )
    ds = generate(spec)
    assert set(ds.train.column("k").to_pylist()) <= {3, 4}
    assert set(ds.test.column("k").to_pylist()) <= {1, 2}


@pytest.mark.parametrize("alphabet", ["zyxw", "ab01CD", "qwertyuiop"])
def test_any_ascii_alphabet(alphabet: str) -> None:
    """Non-contiguous alphabets take the lookup-table path instead of the ASCII shift."""
    ds = generate(small_spec(alphabet=alphabet, noop_fraction=0.3, occurrences=(1, 2)))
    check_split(ds, "train")
    enc = ds.encoded("train")
    prompts, completions = ds.texts("train")
    assert ds.vocab.decode(enc.sequence(5)) == prompts[5] + completions[5]
    # the loaded-table path (Arrow join + byte lookup) gives the same tokens
    again = encode_rewrite_table(ds.train, ds.vocab)
    assert (again.tokens == enc.tokens).all() and (again.offsets == enc.offsets).all()
    assert (again.prompt_lens == enc.prompt_lens).all()
