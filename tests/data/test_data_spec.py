"""DataSpec validation: defaults, budgets, with_updates and one SpecError per broken rule."""

from __future__ import annotations

import pytest

from data import DataSpec, MarkovSpec, RuleFamily, SpecError, TestSpec

OK = {"n_instructions": 10, "examples_per_instruction": 3}


def test_paper_defaults_and_budget() -> None:
    spec = DataSpec(**OK)
    assert spec.alphabet == "abcdefghijklmnopqrstuvwxyz"
    assert (spec.z_len, spec.x_len, spec.y_len) == ((10, 50), (2, 20), (1, 20))
    assert spec.n_train == 30
    assert DataSpec(n_instructions=10, n_examples=55).n_train == 55


def test_frozen_and_extra_forbidden() -> None:
    spec = DataSpec(**OK)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(SpecError) as info:
        DataSpec(**OK, n_rules=3)
    assert info.value.fields == ("n_rules",)


def test_with_updates_revalidates_and_switches_budget() -> None:
    spec = DataSpec(n_instructions=10, n_examples=100)
    swept = spec.with_updates(n_instructions=50, examples_per_instruction=20)
    assert (swept.n_instructions, swept.n_train, swept.n_examples) == (50, 1000, None)
    back = swept.with_updates(n_examples=7000)
    assert back.examples_per_instruction is None and back.n_train == 7000
    nested = spec.with_updates(**{"test.n_test": 50, "family.kind": "mirror", "family.k": [2, 3]})
    assert nested.test.n_test == 50 and nested.family.k == (2, 3)
    assert spec.test.n_test == 1000  # the original is untouched
    with pytest.raises(SpecError) as info:
        spec.with_updates(noop_fraction=1.0)
    assert "noop_fraction" in info.value.fields


def test_hash_changes_with_any_field() -> None:
    a = DataSpec(**OK)
    assert a.content_hash == DataSpec(**OK).content_hash
    assert a.content_hash != a.with_updates(seed=1).content_hash
    assert a.content_hash != a.with_updates(**{"test.n_test": 99}).content_hash


BAD: list[tuple[dict[str, object], str, str]] = [
    ({"examples_per_instruction": None}, "examples_per_instruction", "exactly one budget"),
    ({"n_examples": 50}, "examples_per_instruction", "exactly one budget"),
    ({"occurrences": [3]}, "occurrences", "needs len(z) >= 3*len(x) = 60"),
    ({"occurrences": [1, 1]}, "occurrences", "distinct"),
    ({"occurrences": [0]}, "occurrences", ">= 1"),
    ({"occurrences": []}, "occurrences", "at least one"),
    ({"test": {"occurrences": [5]}}, "test.occurrences", "needs len(z)"),
    ({"noop_fraction": 1.0}, "noop_fraction", "[0, 1)"),
    ({"noop_fraction": -0.1}, "noop_fraction", "[0, 1)"),
    ({"test": {"noop_fraction": 1.5}}, "test.noop_fraction", "[0, 1)"),
    ({"distribution": "power"}, "alpha", "alpha > 0"),
    ({"distribution": "power", "alpha": 0}, "alpha", "alpha > 0"),
    ({"distribution": "power", "alpha": -1}, "alpha", "alpha > 0"),
    ({"alpha": 0.5}, "alpha", "only used with distribution='power'"),
    ({"x_len": (5, 3)}, "x_len", "out of order"),
    ({"z_len": (0, 3)}, "z_len", ">= 1"),
    ({"z_len": (10, 10**6)}, "z_len", "<= 10000"),
    ({"x_len": (2, 10_001)}, "x_len", "<= 10000"),
    ({"alphabet": "abca"}, "alphabet", "duplicate"),
    ({"alphabet": "ab|"}, "alphabet", "not allowed"),
    ({"alphabet": "ab c"}, "alphabet", "not allowed"),
    ({"alphabet": ""}, "alphabet", "empty"),
    ({"family": {"kind": "repeated"}}, "family.k", "needs a k range"),
    ({"family": {"kind": "free", "k": [1, 2]}}, "family.k", "left unset"),
    ({"family": {"kind": "periodic", "k": [3, 2]}}, "family.k", "out of order"),
    ({"family": {"kind": "repeated", "k": [3, 30]}}, "family.k", "none lies in x_len"),
    ({"family": {"kind": "mix", "k": [3, 4], "mix": ["mirror", "mirror"]}}, "family.mix", "dup"),
    ({"test": {"family": {"kind": "mirror", "k": [40, 41]}}}, "test.family.k", "x_len"),
    (
        {"n_instructions": 10, "alphabet": "ab", "x_len": (1, 1), "y_len": (1, 1)},
        "n_instructions",
        "at most 2",
    ),
    ({"test": {"n_test": 10, "n_instructions": 11}}, "test.n_instructions", "cannot all be used"),
    ({"test": {"n_tset": 10}}, "test.n_tset", "Extra inputs"),
    ({"task": "markov"}, "markov", "required iff"),
    ({"markov": {}}, "markov", "required iff"),
    ({"task": "markov", "markov": {"n_rules": [3, 1]}}, "markov.n_rules", "out of order"),
    ({"n_examples": 5, "examples_per_instruction": None}, "n_examples", "at least one example"),
]


@pytest.mark.parametrize(("changes", "field", "words"), BAD)
def test_bad_specs_name_field_and_rule(changes: dict[str, object], field: str, words: str) -> None:
    kwargs = {**OK, **changes}
    with pytest.raises(SpecError) as info:
        DataSpec(**kwargs)  # type: ignore[arg-type]
    assert field in info.value.fields, str(info.value)
    assert words in str(info.value)
    assert field in str(info.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("family", [{"kind": "free"}, {"kind": "mix", "k": [2, 3]}])
def test_long_length_ranges_validate_at_once(family: dict[str, object]) -> None:
    """Counting distinct strings of up to 10,000 letters exactly made validation hang (a
    submission the service's schema fuzzing found); counts now stop at `COUNT_CAP`."""
    from data.families import COUNT_CAP, n_strings

    spec = DataSpec(
        n_instructions=10,
        examples_per_instruction=5,
        family=family,
        x_len=(2, 10_000),
        y_len=(2, 10_000),
        z_len=(10, 10_000),
        seed=0,
    )
    assert spec.x_len == (2, 10_000)
    assert n_strings(1, 1, 10_000, 26) == COUNT_CAP
    assert n_strings(1, 1, 3, 2) == 2 + 4 + 8 and n_strings(2, 2, 7, 3) == 3 + 9 + 27
    assert n_strings(1, 1, 10_000, 1) == 10_000 and n_strings(1, 1, 5, 0) == 0


def test_nested_models_raise_spec_error_directly() -> None:
    with pytest.raises(SpecError):
        TestSpec(n_test=0)
    with pytest.raises(SpecError):
        RuleFamily(kind="mirror")
    with pytest.raises(SpecError):
        MarkovSpec(max_steps=0)


def test_model_validate_raises_spec_error() -> None:
    with pytest.raises(SpecError):
        DataSpec.model_validate({"n_instructions": 3})


def test_unsatisfiable_inputs_raise_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-letter x over 3 letters: a z of 40 letters avoids it with chance (2/3)**40."""
    import data.examples
    from data import generate

    monkeypatch.setattr(data.examples, "MAX_ROUNDS", 300)  # the real limit only takes longer

    spec = DataSpec(
        alphabet="abc",
        x_len=(1, 1),
        y_len=(1, 1),
        z_len=(40, 40),
        n_instructions=2,
        examples_per_instruction=5,
        noop_fraction=0.5,
        test={"n_test": 2, "n_instructions": 1},
    )
    with pytest.raises(SpecError) as info:
        generate(spec)
    assert "noop_fraction" in info.value.fields
    assert "could not draw z" in str(info.value)


def test_rule_capacity_is_exact_for_small_families() -> None:
    """The capacity the validation quotes is what the family holds: rules with ``x == y`` do
    not count, and strings that several families share (``aaaa`` is repeated, periodic and
    mirror) count once. 3 letters, one-letter rules: 3 * 2 = 6 rules."""
    base = {
        "alphabet": "abc",
        "x_len": (1, 1),
        "y_len": (1, 1),
        "z_len": (4, 4),
        "n_examples": 60,
        "test": {"n_test": 10, "n_instructions": 1},
    }
    with pytest.raises(SpecError, match="at most 6"):
        DataSpec(**base, n_instructions=7)
    assert RuleFamily(kind="free").capacity((1, 1), (1, 1), 3) == 6
    families = (
        {"aaaa", "bbbb", "aabb", "bbaa"},  # repeated, k=2, 2 letters
        {"aaaa", "bbbb", "abab", "baba"},  # periodic
        {"aaaa", "bbbb", "abba", "baab"},
    )  # mirror
    rules = {(x, y) for fam in families for x in fam for y in fam if x != y}
    assert RuleFamily(kind="mix", k=(2, 2)).capacity((4, 4), (4, 4), 2) == len(rules) == 32
