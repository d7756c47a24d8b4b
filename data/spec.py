"""``DataSpec``: the frozen, validated description of one data set.

A spec is a pure description; ``generate(spec)`` turns it into data. Every field has a default
taken from the paper (``docs/PAPER.md``) except the budget, which must be given as exactly one of
``examples_per_instruction`` (S, so ``n_train = I * S``) or ``n_examples`` (the total)::

    >>> spec = DataSpec(n_instructions=100, examples_per_instruction=50, noop_fraction=0.5)
    >>> spec.n_train, spec.z_len, spec.x_len, spec.y_len
    (5000, (10, 50), (2, 20), (1, 20))
    >>> spec.with_updates(n_instructions=1000, **{"test.n_test": 200}).n_train
    50000

Impossible or contradictory values raise :class:`data.errors.SpecError` naming the field and the
rule, e.g. ``occurrences: occurrences=20 needs len(z) >= 20*len(x) = 400 for x_len up to 20, but
z_len is at most 50``.
"""

from __future__ import annotations

import hashlib
import json
import math
import string
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from data.errors import FieldRuleError, SpecError
from data.families import base_lengths, family_strings, n_strings
from data.version import GENERATOR_VERSION

#: Rule counts up to this many candidate (x, y) pairs are exact (`RuleFamily.capacity`
#: enumerates them, ~0.1 s); above it the count is an upper bound, which the sampler nearly
#: reaches (coinciding strings are rare once bases are long).
EXACT_COUNT_LIMIT = 200_000

#: Characters with a meaning in the token format or in rendered Markov programs.
RESERVED_CHARS = frozenset("→|=;.")
Range = tuple[int, int]
Kind = Literal["free", "repeated", "periodic", "mirror"]


def exactly_one_of(*names: str) -> dict[str, Any]:
    """JSON Schema saying that exactly one of ``names`` is set (the others absent or null), for
    a model whose validator enforces it: schema-driven clients then send what is accepted.

    >>> exactly_one_of("a", "b")["oneOf"][0]
    {'required': ['a'], 'properties': {'a': {'not': {'type': 'null'}}, 'b': {'type': 'null'}}}
    """
    return {
        "oneOf": [
            {
                "required": [n],
                "properties": {
                    n: {"not": {"type": "null"}},
                    **{o: {"type": "null"} for o in names if o != n},
                },
            }
            for n in names
        ]
    }


class _Spec(BaseModel):
    """Frozen, extra-forbidding base whose construction errors surface as ``SpecError``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError.from_validation(type(self).__name__, exc.errors()) from None

    # Only a direct call goes through this wrapper: as a nested field (or with
    # `model_validate_json(..., strict=True)`) pydantic must validate with its own rules, or
    # the wrapper's lax re-validation would let `true` pass for an int (pydantic-settings
    # marks its own __init__ the same way).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise SpecError.from_validation(cls.__name__, exc.errors()) from None


#: Longest string a length range may ask for: far beyond what a transformer here reads (the
#: paper's longest sequences are about 1,200 tokens), and each example takes one byte per
#: character and position in the generator's arrays.
MAX_STRING_LEN = 10_000


def _check_range(field: str, value: Range, minimum: int, maximum: int | None = None) -> None:
    lo, hi = value
    if lo < minimum:
        raise FieldRuleError(field, f"{field}={list(value)}: the lower bound must be >= {minimum}")
    if lo > hi:
        raise FieldRuleError(field, f"{field}={list(value)}: the range is out of order (min > max)")
    if maximum is not None and hi > maximum:
        raise FieldRuleError(field, f"{field}={list(value)}: the upper bound must be <= {maximum}")


class RuleFamily(_Spec):
    """Which strings rules are made of; see :mod:`data.families` for what ``k`` means.

    ``RuleFamily(kind="mix", k=(3, 6))`` draws each rule from repeated/periodic/mirror with a copy
    count uniform in 3..6: e.g. ``aaabbb → cccddd`` (repeated, k=3).
    """

    kind: Literal["free", "repeated", "periodic", "mirror", "mix"] = "free"
    #: Copy-count range (inclusive); required for structured kinds, not allowed for ``free``.
    k: Range | None = None
    #: The kinds a ``mix`` draws from, uniformly.
    mix: tuple[Kind, ...] = ("repeated", "periodic", "mirror")
    #: Whether ``y`` follows the rule's family and k too (otherwise ``y`` is free).
    constrain_y: bool = True

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.kind == "free":
            if self.k is not None:
                raise FieldRuleError(
                    "k", "k must be left unset for kind='free' (free strings have k=1)"
                )
        elif self.k is None:
            raise FieldRuleError("k", f"kind={self.kind!r} needs a k range, e.g. k=[3, 4]")
        else:
            _check_range("k", self.k, 1)
        if not self.mix or len(set(self.mix)) != len(self.mix):
            raise FieldRuleError(
                "mix", f"mix={list(self.mix)} must be non-empty without duplicates"
            )
        return self

    @property
    def kinds(self) -> tuple[str, ...]:
        """The concrete kinds rules are drawn from."""
        return self.mix if self.kind == "mix" else (self.kind,)

    @property
    def k_values(self) -> range:
        """Copy counts drawn from (just 1 for ``free``)."""
        lo, hi = self.k or (1, 1)
        return range(lo, hi + 1)

    def pairs(self) -> list[tuple[str, int]]:
        """Every (kind, k) a rule may get; ``free`` always has k=1."""
        return [(kind, 1 if kind == "free" else k) for kind in self.kinds for k in self.k_values]

    def check_fits(self, prefix: str, x_len: Range, y_len: Range) -> None:
        """Raise unless every (kind, k) admits an x (and y) length in range."""
        for kind, k in self.pairs():
            targets = [("x_len", x_len)] + ([("y_len", y_len)] if self.constrain_y else [])
            for name, (lo, hi) in targets:
                if not base_lengths(k, lo, hi):
                    raise FieldRuleError(
                        f"{prefix}k",
                        f"{kind} strings with k={k} have lengths k*b (b>=1) but none lies in "
                        f"{name}={[lo, hi]}",
                    )

    def capacity(self, x_len: Range, y_len: Range, n_letters: int) -> int:
        """The number of distinct (x, y) rules with ``x != y`` that the family can draw: exact
        up to `EXACT_COUNT_LIMIT` candidate pairs (the strings are enumerated, since degenerate
        bases make families overlap), an upper bound above it.

        >>> mix = RuleFamily(kind="mix", k=(2, 2))
        >>> mix.capacity((4, 4), (4, 4), 8)  # 3 * 64 * 64 candidates, fewer distinct rules
        11984
        """
        bound = 0
        for _kind, k in self.pairs():
            nx = n_strings(k, *x_len, n_letters)
            ny = n_strings(k if self.constrain_y else 1, *y_len, n_letters)
            bound += nx * ny
        if bound > EXACT_COUNT_LIMIT:
            return bound
        rules: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        for kind, k in self.pairs():
            xs = family_strings(kind, k, *x_len, n_letters)
            ys = (
                family_strings(kind, k, *y_len, n_letters)
                if self.constrain_y
                else family_strings("free", 1, *y_len, n_letters)
            )
            rules.update((x, y) for x in xs for y in ys if x != y)
        return len(rules)

    def x_capacity(self, x_len: Range, n_letters: int) -> int:
        """An upper bound on the number of distinct x strings."""
        return sum(n_strings(k, *x_len, n_letters) for _kind, k in self.pairs())


class TestSpec(_Spec):
    """The evaluation sets: the unseen-rule test set, and fresh inputs for the training rules.

    Test rules are disjoint from the training rules at level ``disjoint``: ``"rule"`` means no
    ``(x, y)`` pair is shared, ``"x"`` means no test ``x`` appears in any training rule. ``None``
    overrides mean "same as training". Examples are spread evenly over the test rules. Each test
    row records whether its ``x`` (and ``y``) occurred in training (``x_seen``, ``y_seen``), so
    a rule-disjoint test set also measures the strict case, rules whose strings are new.

    ``n_fresh`` examples use *training* rules on inputs ``z`` that no training example of that
    rule has: they tell "has learnt its rules" from "has memorised its inputs" (re-decoding
    training examples measures the latter). Their rules, no-op and occurrence mix follow the
    training split (the rows are drawn from it), only ``z`` is new.
    """

    __test__ = False  # not a pytest class

    n_test: int = Field(1000, ge=1)
    #: Distinct test rules; default ``min(n_test, 1000)``.
    n_instructions: int | None = Field(None, ge=1)
    family: RuleFamily | None = None
    disjoint: Literal["rule", "x"] = "rule"
    noop_fraction: float | None = None
    occurrences: tuple[int, ...] | None = None
    #: Examples of training rules on inputs that never occur in training (0: none).
    n_fresh: int = Field(500, ge=0)

    @property
    def n_rules(self) -> int:
        """The number of test rules actually drawn."""
        return self.n_instructions if self.n_instructions is not None else min(self.n_test, 1000)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.n_rules > self.n_test:
            raise FieldRuleError(
                "n_instructions",
                f"n_instructions={self.n_rules} test rules cannot all be used by n_test="
                f"{self.n_test} examples (examples are spread evenly over rules)",
            )
        return self


class MarkovSpec(_Spec):
    """Markov-algorithm programs (for ``task="markov"``); see :mod:`data.markov`."""

    #: Rules per program (inclusive range).
    n_rules: Range = (2, 4)
    #: Probability that a rule is terminal (rendered ``x→.y``).
    terminal_prob: float = Field(0.25, ge=0.0, le=1.0)
    #: Step limit of a run; a run that reaches it is reported with ``halted=False``.
    max_steps: int = Field(8, ge=1)
    #: ``single_step``: output after one step; ``halt``: output when the run stops.
    target: Literal["single_step", "halt"] = "single_step"

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _check_range("n_rules", self.n_rules, 1)
        return self


class DataSpec(_Spec):
    """Everything that determines a generated data set (``generate`` is a pure function of it)."""

    # the exactly-one budget rule of `_rules`, stated in the JSON Schema too
    model_config = ConfigDict(
        json_schema_extra=exactly_one_of("examples_per_instruction", "n_examples")
    )

    task: Literal["rewrite", "markov"] = "rewrite"
    alphabet: str = string.ascii_lowercase
    z_len: Range = (10, 50)
    x_len: Range = (2, 20)
    y_len: Range = (1, 20)
    #: I, the number of distinct training instructions (rules, or programs for Markov).
    n_instructions: int = Field(1000, ge=1)
    #: S; exactly one of this and ``n_examples`` is set.
    examples_per_instruction: int | None = Field(None, ge=1)
    n_examples: int | None = Field(None, ge=1)
    distribution: Literal["uniform", "power"] = "uniform"
    #: Power-law exponent: rule index ``floor(I*u)`` with density ``alpha*u**(alpha-1)``.
    alpha: float | None = None
    #: Share of training examples whose z does not contain x (exactly ``floor(f*n + 0.5)``).
    noop_fraction: float = 0.0
    #: Where no-ops come from. False: they are part of the budget (``I*S`` or ``n_examples``
    #: examples in all, a share ``noop_fraction`` of them no-ops). True: the budget counts the
    #: has-op examples only and no-ops come on top, so that they make up ``noop_fraction`` of
    #: the split: studies of the no-op share then compare equal has-op budgets.
    noops_on_top: bool = False
    #: Counts of x in z for has-op examples, spread evenly (e.g. ``[1, 5, 10, 15, 20]``).
    occurrences: tuple[int, ...] = (1,)
    family: RuleFamily = RuleFamily()
    test: TestSpec = TestSpec()
    markov: MarkovSpec | None = None
    seed: int = Field(0, ge=0)

    # --- derived values -------------------------------------------------------------------
    @property
    def n_budget(self) -> int:
        """The budget: ``n_examples``, or ``I * S``."""
        if self.n_examples is not None:
            return self.n_examples
        assert self.examples_per_instruction is not None  # guaranteed by validation
        return self.n_instructions * self.examples_per_instruction

    @property
    def n_train(self) -> int:
        """Number of training examples: the budget, plus the no-ops when they come on top
        (then ``n_train - n_budget`` no-ops are ``noop_fraction`` of ``n_train``, rounded)."""
        if not self.noops_on_top:
            return self.n_budget
        return self.n_budget + self.n_noops_on_top

    @property
    def n_noops_on_top(self) -> int:
        """The no-ops added to a has-op budget (``noops_on_top``):
        ``round(f / (1 - f) * budget)``, so that they are a share ``f`` of the split."""
        f = self.noop_fraction
        return int(math.floor(f / (1.0 - f) * self.n_budget + 0.5))

    @property
    def test_family(self) -> RuleFamily:
        return self.test.family if self.test.family is not None else self.family

    @property
    def test_noop_fraction(self) -> float:
        f = self.test.noop_fraction
        return self.noop_fraction if f is None else f

    @property
    def test_occurrences(self) -> tuple[int, ...]:
        occ = self.test.occurrences
        return self.occurrences if occ is None else occ

    @property
    def max_seq_len(self) -> int:
        """An upper bound on the encoded length of any example (prompt, output and ``<eos>``).

        Rewrite: ``x + → + y + | + z + = + output + <eos>`` with the output at most
        ``z_max - x_min + y_max`` long. Markov: the rendered program replaces ``x → y``, and each
        of up to ``max_steps`` steps may grow the string by ``y_max - x_min``.
        """
        x_min, x_max = self.x_len
        y_max, z_max = self.y_len[1], self.z_len[1]
        growth = max(0, y_max - x_min)
        if self.markov is None:
            return x_max + y_max + z_max + (z_max + growth) + 4
        n = self.markov.n_rules[1]
        steps = 1 if self.markov.target == "single_step" else self.markov.max_steps
        program = n * (x_max + y_max + 2) + (n - 1)  # "x→.y" per rule, ";" between rules
        return program + z_max + (z_max + steps * growth) + 3

    @property
    def content_hash(self) -> str:
        """sha256 over the canonical JSON of the spec and ``GENERATOR_VERSION``."""
        return content_hash(self)

    def with_updates(self, **updates: Any) -> DataSpec:
        """A re-validated copy with some fields replaced; dotted keys reach nested fields.

        Setting one budget field (``n_examples`` or ``examples_per_instruction``) without the other
        clears the other, so budget sweeps can switch freely. Example::

            spec.with_updates(**{"n_instructions": 500, "examples_per_instruction": 2000,
                                 "test.family": {"kind": "mix", "k": [1, 2]}})
        """
        data = apply_updates(self.model_dump(mode="json"), updates)
        return DataSpec.model_validate(data)

    # --- validation -----------------------------------------------------------------------
    @model_validator(mode="after")
    def _rules(self) -> Self:
        self._check_alphabet()
        _check_range("z_len", self.z_len, 1, MAX_STRING_LEN)
        _check_range("x_len", self.x_len, 1, MAX_STRING_LEN)
        _check_range("y_len", self.y_len, 1, MAX_STRING_LEN)
        if (self.n_examples is None) == (self.examples_per_instruction is None):
            raise FieldRuleError(
                "examples_per_instruction",
                "give exactly one budget: examples_per_instruction (S, n_train = I*S) or "
                f"n_examples (total); got examples_per_instruction={self.examples_per_instruction}"
                f", n_examples={self.n_examples}",
            )
        if self.distribution == "power":
            if self.alpha is None or not self.alpha > 0:
                raise FieldRuleError(
                    "alpha", f"alpha={self.alpha}: distribution='power' needs alpha > 0"
                )
        elif self.alpha is not None:
            raise FieldRuleError(
                "alpha", f"alpha={self.alpha} is only used with distribution='power'"
            )
        if self.distribution == "uniform" and self.n_budget < self.n_instructions:
            raise FieldRuleError(
                "n_examples",
                f"n_examples={self.n_budget} < n_instructions={self.n_instructions}: a uniform "
                "distribution needs at least one example per instruction",
            )
        self._check_noops("noop_fraction", self.noop_fraction)
        self._check_occurrences("occurrences", self.occurrences)
        if self.test.noop_fraction is not None:
            self._check_noops("test.noop_fraction", self.test.noop_fraction)
        if self.test.occurrences is not None:
            self._check_occurrences("test.occurrences", self.test.occurrences)
        self.family.check_fits("family.", self.x_len, self.y_len)
        self.test_family.check_fits("test.family.", self.x_len, self.y_len)
        if (self.task == "markov") != (self.markov is not None):
            raise FieldRuleError(
                "markov", f"task={self.task!r}: markov settings are required iff task='markov'"
            )
        self._check_capacity()
        return self

    def _check_alphabet(self) -> None:
        a = self.alphabet
        if not a:
            raise FieldRuleError("alphabet", "alphabet must not be empty")
        dups = sorted({c for c in a if a.count(c) > 1})
        if dups:
            raise FieldRuleError("alphabet", f"alphabet has duplicate characters {dups}")
        bad = sorted(
            c
            for c in a
            if c in RESERVED_CHARS or not c.isprintable() or c.isspace() or not c.isascii()
        )
        if bad:
            raise FieldRuleError(
                "alphabet",
                f"alphabet characters {bad} are not allowed: use printable, non-space ASCII other "
                f"than the special characters {''.join(sorted(RESERVED_CHARS))}",
            )

    @staticmethod
    def _check_noops(field: str, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise FieldRuleError(field, f"{field}={value} must lie in [0, 1)")

    def _check_occurrences(self, field: str, occ: tuple[int, ...]) -> None:
        if not occ:
            raise FieldRuleError(field, f"{field} must list at least one count")
        if min(occ) < 1 or len(set(occ)) != len(occ):
            raise FieldRuleError(field, f"{field}={list(occ)}: counts must be >= 1 and distinct")
        need = max(occ) * self.x_len[1]
        if need > self.z_len[1]:
            raise FieldRuleError(
                field,
                f"occurrences={max(occ)} needs len(z) >= {max(occ)}*len(x) = {need} for x_len up "
                f"to {self.x_len[1]}, but z_len is at most {self.z_len[1]}",
            )

    def _check_capacity(self) -> None:
        n_letters = len(self.alphabet)
        per_program = self.markov.n_rules[1] if self.markov is not None else 1
        need = self.n_instructions * per_program
        cap = self.family.capacity(self.x_len, self.y_len, n_letters)
        if need > cap:
            raise FieldRuleError(
                "n_instructions",
                f"n_instructions={self.n_instructions} needs {need} distinct rules but family "
                f"{self.family.kind!r} with these lengths and {n_letters} letters has at most "
                f"{cap}",
            )
        test_need = self.test.n_rules * per_program
        test_cap = self.test_family.capacity(self.x_len, self.y_len, n_letters)
        if test_need > test_cap:
            raise FieldRuleError(
                "test.n_instructions",
                f"{test_need} distinct test rules are needed but test family "
                f"{self.test_family.kind!r} has at most {test_cap}",
            )


def canonical_json(obj: Any) -> str:
    """The project's canonical JSON (sorted keys, no spaces): every content hash hashes this.

    >>> canonical_json({"b": 1, "a": [1, 2]})
    '{"a":[1,2],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def content_hash(spec: DataSpec) -> str:
    """sha256 hex of canonical JSON of ``{"spec": ..., "generator_version": ...}``."""
    payload = {"spec": spec.model_dump(mode="json"), "generator_version": GENERATOR_VERSION}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def apply_updates(data: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """Apply plain or dotted-key ``updates`` to a spec dict (see ``DataSpec.with_updates``).

    >>> apply_updates({"n_examples": 10}, {"examples_per_instruction": 5, "test.n_test": 9})
    {'n_examples': None, 'examples_per_instruction': 5, 'test': {'n_test': 9}}
    """
    data = json.loads(json.dumps(data))  # a deep copy that never aliases the caller's dicts
    budget = {"n_examples", "examples_per_instruction"}
    given = budget & updates.keys()
    if len(given) == 1:
        data[(budget - given).pop()] = None
    for key, value in updates.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise SpecError(f"{key}: {part!r} is not a nested spec", (key,))
            node = child
        node[leaf] = value
    return data
