"""The paper's studies as data: which preset answers each, how its table reads, what the paper
reported, how the verdict is decided, and the smoke-sized settings that keep its preset alive.

``divsweep reproduce`` (`service.reproduce`) runs every `Study` in `STUDIES` through the service;
`sweeps.reporting.results_doc` turns the stored results into the study's section of docs/RESULTS.md.
This
module is Ray-free and does no I/O. Worked example, on a hand-made summary row::

    >>> study = STUDIES["powerlaw-mini"]
    >>> rows = [{"data.distribution": "power", "data.alpha": 0.2, "data.n_instructions": 64,
    ...          "n": 1, "test_acc_mean": 0.1, "test_acc_std": 0.0}]
    >>> cells_of(study, rows)
    [{'alpha': 0.2, 'I': 64, 'n': 1, 'test_acc_mean': 0.1, 'test_acc_std': 0.0}]
    >>> study.keys["alpha"].fmt(0.2)
    'α = 0.2'

A summary row names its cell by field paths (``data.alpha``); a *key* (``alpha``) is what the
study calls that coordinate, so named axes that set several fields together (the power law's
distribution and alpha, the fine-tune study's data size and skew) read as one column.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweeps.reporting import verdicts
from sweeps.reporting.verdicts import Cell, FrontierRun, ThresholdRun, Verdict
from sweeps.specs.spec import ExperimentSpec, ThresholdSearch

Row = Mapping[str, Any]
log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# keys: how a study names the coordinates of its cells
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One coordinate of a study's cells: read from a summary row, shown, and sorted.

    ``get(row, rows)`` sees every row too, for labels that compare cells (``full`` is the
    largest data size); it returns None when the row does not have the coordinate.
    """

    name: str
    header: str
    get: Callable[[Row, Sequence[Row]], Any]
    fmt: Callable[[Any], str] = str
    order: Callable[[Any], Any] = lambda v: v


def _field(path: str) -> Callable[[Row, Sequence[Row]], Any]:
    return lambda row, rows: row.get(path)


def _list(v: Any) -> tuple[int, ...] | None:
    """A list-valued parameter: summaries carry it as JSON text (``"[1, 2]"``)."""
    if v is None:
        return None
    if isinstance(v, str):
        v = json.loads(v)
    return tuple(int(x) for x in v)


def _alpha(row: Row, rows: Sequence[Row]) -> Any:
    dist = row.get("data.distribution")
    if dist is None and "data.alpha" not in row:
        return None
    if dist in (None, "uniform"):
        return "uniform"
    return float(row["data.alpha"])


def _family(row: Row, rows: Sequence[Row]) -> str | None:
    kind = row.get("data.family.kind")
    if kind is None:
        return None
    k = _list(row.get("data.family.k"))
    return str(kind) if k is None else f"{kind} k={k[0]}–{k[-1]}"


def _occurrences(row: Row, rows: Sequence[Row]) -> tuple[int, ...] | None:
    return _list(row.get("data.occurrences"))


def _finetune_data(row: Row, rows: Sequence[Row]) -> str | None:
    """``full`` (the largest data size, uniform), ``half uniform`` or ``half skewed``."""
    n = row.get("data.n_examples")
    if n is None:
        return None
    size = "full" if n == max(r.get("data.n_examples") or 0 for r in rows) else "half"
    skewed = row.get("data.distribution") == "power"
    if size == "full":
        return "full skewed" if skewed else "full"
    return "half skewed" if skewed else "half uniform"


def _family_order(label: str) -> tuple[int, str]:
    kinds = ("repeated", "periodic", "mirror", "mix")
    head = label.split(" ")[0]
    return (kinds.index(head) if head in kinds else len(kinds), label)


def _occ_fmt(t: tuple[int, ...]) -> str:
    return str(t[0]) if len(t) == 1 else "mix " + ", ".join(map(str, t))


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("I", "rules I", _field("data.n_instructions")),
        Key(
            "S",
            "examples per rule S",
            _field("data.examples_per_instruction"),
            fmt=lambda v: f"{v:,}",
        ),
        Key("share", "no-op share", _field("data.noop_fraction"), fmt=lambda v: f"{v:.0%}"),
        Key(
            "budget",
            "training examples N",
            _field("data.n_examples"),
            fmt=lambda v: f"{v:,}",
        ),
        Key(
            "alpha",
            "rule distribution",
            _alpha,
            fmt=lambda a: "uniform" if a == "uniform" else f"α = {a:g}",
            order=lambda a: -math.inf if a == "uniform" else -float(a),
        ),
        Key("family", "training family", _family, order=_family_order),
        Key(
            "occurrences",
            "training occurrences",
            _occurrences,
            fmt=_occ_fmt,
            order=lambda t: (len(t) > 1, t),
        ),
        Key(
            "data",
            "training data",
            _finetune_data,
            order=lambda v: ("full", "half uniform", "half skewed", "full skewed").index(v),
        ),
    )
}

#: How tables and figures name the metrics. "Unseen rules, new x" is the strict sense of the
#: paper's unseen instruction (the pattern never occurred in training); "unseen rules" alone is
#: the lenient one (a new (x, y) pair, whose strings may have been seen).
METRIC_NAMES = {
    "test_acc_op_new_x": "unseen rules, new x (has-op)",
    "test_acc_new_x": "unseen rules, new x",
    "test_acc_noop_new_x": "unseen rules, new x (no-op)",
    "test_acc_op_seen_x": "unseen rules, seen x (has-op)",
    "test_rules_op_new_x": "new-x test rules",
    "test_acc": "unseen rules",
    "test_acc_op": "unseen rules (has-op)",
    "test_acc_noop": "unseen rules (no-op)",
    "fresh_acc": "training rules, fresh inputs",
    "fresh_acc_op": "training rules, fresh inputs (has-op)",
    "fresh_acc_noop": "training rules, fresh inputs (no-op)",
    "memo_acc": "training examples (memorisation)",
}

#: The columns every study tabulates for each cell: the strict and lenient unseen-rule
#: accuracy, how many new-x rules stand behind the strict one, and the two training-rule
#: figures that tell "has not learnt" (fresh) from "has memorised" (memo).
EVERY_STUDY = ("test_acc_op_new_x", "test_acc_op", "test_rules_op_new_x", "fresh_acc", "memo_acc")


def metric_name(metric: str) -> str:
    """``test_acc_occ_3`` reads "test inputs, 3 occurrences"."""
    if metric.startswith("test_acc_occ_"):
        n = metric.removeprefix("test_acc_occ_")
        return f"test inputs, {n} occurrence{'' if n == '1' else 's'}"
    return METRIC_NAMES.get(metric, metric)


def training_twin(metric: str, columns: Sequence[str]) -> str | None:
    """The training-rule figure beside a test metric, if stored: ``test_acc_op_new_x`` ->
    ``fresh_acc_op`` (training rules on fresh inputs, the same example kind), else
    ``fresh_acc``; None for a metric that is no test accuracy.

    >>> training_twin("test_acc_op_new_x", ["fresh_acc", "fresh_acc_op"])
    'fresh_acc_op'
    """
    if not metric.startswith("test_acc"):
        return None
    rest = metric.removeprefix("test_")
    for tail in ("_new_x", "_seen_x", "_new_y", "_seen_y"):
        rest = rest.removesuffix(tail)
    for twin in (f"fresh_{rest}", "fresh_acc"):
        if twin in columns:
            return twin
    return None


# ---------------------------------------------------------------------------------------------
# table layouts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pivot:
    """One metric, ``rows`` key down and ``cols`` key across (the paper's Table 1 layout)."""

    rows: str
    cols: str
    metric: str


@dataclass(frozen=True)
class Long:
    """One row per cell: the ``keys`` columns, then ``n`` and each metric. A metric ending in
    ``*`` stands for every measured metric with that prefix (``test_acc_occ_*``)."""

    keys: tuple[str, ...]
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    """One study of the paper and how to run, read and judge it."""

    name: str
    preset: str
    title: str
    #: The paper's effect in one sentence, and its numbers (markdown) to put beside ours.
    claim: str
    paper: str
    keys: dict[str, Key]
    tables: tuple[Pivot | Long, ...]
    #: The figure: ``metric`` against the ``x`` key, one line per value of ``group``.
    x: str
    metric: str
    group: str | None = None
    #: Grid studies: verdict of the cells. Threshold studies use `verdicts.threshold`.
    verdict: Callable[[Sequence[Cell]], Verdict] | None = None
    #: Smoke overrides on top of the generic ones (`smoke_overrides`).
    smoke: dict[str, Any] = field(default_factory=dict)
    #: A threshold study's grid twin: the study whose cells its interval is checked against.
    reference: str | None = None
    #: Part of the default ``divsweep reproduce`` run; False: run only when named
    #: (``--studies frontier-mini``), e.g. a study beyond the paper with its own time budget.
    default: bool = True

    @property
    def per_seed(self) -> tuple[str, ...]:
        """The metrics listed seed by seed: the verdict's, and the training-rule figure."""
        return (self.metric, "fresh_acc")

    @property
    def is_threshold(self) -> bool:
        return self.verdict is None


def _keys(*names: str) -> dict[str, Key]:
    return {n: KEYS[n] for n in names}


#: The builtin pretrained model the fine-tune smoke run starts from (`trainer.builtin`).
SMOKE_PRETRAINED_INIT = "divsweep:smoke-lm"

_FIG2A_PAPER = """\
| rules I (P1, I × S = 10⁶) | ≤ 300 | 400 | 500 | 600 | 1k – 1000k |
|---|---|---|---|---|---|
| unseen-rule accuracy (read from Fig. 2a) | 0 | ~0.13 | ~0.85 | ~0.93 | 0.98 – 0.99 |"""

#: The paper's single point of the phase boundary (P1 Fig. 2a), as the frontier figure draws
#: it: I* between 400 and 500 rules at 10^6 examples (the accuracy-0.5 crossing).
PAPER_FRONTIER_POINT = (1_000_000, 400, 500)
FRONTIER_PAPER = (
    "P1 measures the threshold at one budget only: at 10⁶ examples the unseen-rule accuracy "
    "crosses 0.5 between 400 and 500 rules (Fig. 2a, paper model); whether it moves with the "
    "amount of data is left open. The figure draws that point beside ours (a different model "
    "and problem: compare the slope, not the position)."
)

STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        Study(
            name="fig2a-mini",
            preset="fig2a-mini",
            title="Instructions vs examples per instruction (P1 Fig. 2a)",
            claim="At a fixed budget of examples, models trained on few rules memorise them and "
            "apply none they did not see; past a sharp transition in the number of rules they "
            "apply unseen rules almost perfectly.",
            paper=_FIG2A_PAPER + "\n\nA very sharp phase transition around 400 rules; from 1,000 "
            "rules the models always generalise, even with a handful of examples per rule.",
            keys=_keys("I", "S"),
            tables=(Long(("I", "S"), EVERY_STUDY),),
            x="I",
            metric="test_acc_op_new_x",
            verdict=verdicts.fig2a,
        ),
        Study(
            name="fig2a-mini-threshold",
            preset="fig2a-mini-threshold",
            title="The Fig. 2a transition located by a threshold search",
            claim="A bisection on log I finds the smallest number of rules whose unseen-rule "
            "accuracy reaches 0.5 with far fewer trials than a grid at the same resolution.",
            paper=_FIG2A_PAPER + "\n\nThe paper swept a grid of 16 values of I; it reports no "
            "search. Its transition (accuracy 0.5) lies between 400 and 500 rules.",
            keys=_keys("I", "S"),
            tables=(Long(("I", "S"), EVERY_STUDY),),
            x="I",
            metric="test_acc_op_new_x",
            reference="fig2a-mini",
        ),
        Study(
            name="noops-mini",
            preset="noops-mini",
            title="No-op inputs (P3 Fig. 2b)",
            claim="Generalisation again starts at about the same number of rules whatever the "
            "share of no-op inputs; beyond it the share barely matters.",
            paper="No-op share 10–50 %, I ∈ {100, …, 100k}: has-op, no-op and average accuracy all "
            "generalise from ~400 rules, for every share; the share barely matters beyond.",
            keys=_keys("share", "I", "S"),
            tables=(
                Pivot("I", "share", "test_acc_op_new_x"),
                Pivot("I", "share", "test_acc_noop_new_x"),
                Pivot("I", "share", "test_acc_new_x"),
                Long(("share", "I", "S"), EVERY_STUDY),
            ),
            x="I",
            group="share",
            metric="test_acc_op_new_x",
            verdict=verdicts.noops,
        ),
        Study(
            name="powerlaw-mini",
            preset="powerlaw-mini",
            title="Uneven rule distributions (P1 §4.4, P3 Fig. 3)",
            claim="With few rules, a skewed distribution of examples over rules (small α) makes "
            "generalisation collapse; with many rules it barely matters.",
            paper="10⁶ examples, rule drawn with density α·u^(α−1): with 1k rules accuracy "
            "collapses once α < 0.2; with 10k and 100k rules it barely suffers.",
            keys=_keys("alpha", "I"),
            tables=(Pivot("alpha", "I", "test_acc_op_new_x"), Long(("alpha", "I"), EVERY_STUDY)),
            x="I",
            group="alpha",
            metric="test_acc_op_new_x",
            verdict=verdicts.powerlaw,
        ),
        Study(
            name="semantic-mini",
            preset="semantic-mini",
            title="Semantic restriction (P1 §4.3, P3 Fig. 4)",
            claim="Rules from one family (repeated, periodic or mirror strings) never transfer to "
            "the test family (k < 3); the mix of families does, given enough rules.",
            paper="Train on the mix with k in 3–4 … 3–60, I ∈ {500, 1k, 5k, 10k}, test on k < 3: "
            "one family alone never transfers; the mix does, but not with 500 rules or fewer.",
            keys=_keys("family", "I"),
            tables=(
                Pivot("family", "I", "test_acc_op_new_x"),
                Long(("family", "I"), EVERY_STUDY),
            ),
            x="I",
            group="family",
            metric="test_acc_op_new_x",
            verdict=verdicts.semantic,
        ),
        Study(
            name="occurrences-mini",
            preset="occurrences-mini",
            title="Occurrences of x in z (P1 §4.5, Table 1)",
            claim="Training on inputs with a mix of occurrence counts generalises better than "
            "training on any single count.",
            paper="""\
| training occurrences \\ I | 2000 | 1000 | 500 | 200 |
|---|---|---|---|---|
| 1 | 0.71 | 0.41 | 0.00 | 0.00 |
| 10 | 0.88 | 0.71 | 0.00 | 0.00 |
| 20 | 0.73 | 0.28 | 0.07 | 0.00 |
| mix 1, 5, 10, 15, 20 | 0.94 | 0.94 | 0.62 | 0.00 |""",
            keys=_keys("occurrences", "I"),
            tables=(
                Pivot("occurrences", "I", "test_acc_op_new_x"),
                Long(("occurrences", "I"), ("test_acc_occ_*",)),
                Long(("occurrences", "I"), EVERY_STUDY),
            ),
            x="I",
            group="occurrences",
            metric="test_acc_op_new_x",
            verdict=verdicts.occurrences,
        ),
        Study(
            name="finetune-mini",
            preset="finetune-mini",
            title="Fine-tuning a pretrained model (P1 §5, Fig. 5)",
            claim="Fine-tuning on half the data costs nothing when the rules stay uniform, and "
            "costs accuracy when the half is skewed towards a few rules.",
            paper="Llama-2-7B with LoRA, 40k training examples over 9,000 rules, 40 % no-ops: "
            "halving the data uniformly does not hurt; halving it non-uniformly does.",
            keys=_keys("data"),
            tables=(
                Long(
                    ("data",),
                    (
                        "test_acc_new_x",
                        "test_acc",
                        "test_acc_op_new_x",
                        "test_acc_noop_new_x",
                        "test_rules_op_new_x",
                        "fresh_acc",
                        "memo_acc",
                    ),
                ),
            ),
            x="data",
            metric="test_acc_new_x",
            verdict=verdicts.finetune,
            smoke={"train": {"init": SMOKE_PRETRAINED_INIT}, "data": {"n_instructions": 40}},
        ),
        Study(
            name="frontier-mini",
            preset="frontier-mini",
            title="Beyond the paper: the phase boundary I*(budget)",
            claim="The threshold in the number of rules moves with the amount of data: a "
            "threshold search at each of several budgets N (spanning >= 8x) gives I* with a 95 % "
            "interval at each, and the slope of log I* against log N has an interval that "
            "excludes 0.",
            paper=FRONTIER_PAPER,
            keys=_keys("budget", "I"),
            tables=(Long(("budget", "I"), EVERY_STUDY),),
            x="I",
            group="budget",
            metric="test_acc_op_new_x",
            default=False,
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# from a summary to cells and a verdict
# ---------------------------------------------------------------------------------------------


def cells_of(study: Study, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Summary rows (field paths, ``n``, ``*_mean``/``*_std``, and with per-seed summaries
    ``seeds`` and ``*_values``) as the study's cells: its keys that the rows have, then ``n``
    and the statistics; sorted by the keys."""
    present = [k for k in study.keys.values() if any(k.get(r, rows) is not None for r in rows)]
    cells = []
    for r in rows:
        cell: dict[str, Any] = {k.name: k.get(r, rows) for k in present}
        cell["n"] = r.get("n")
        cell |= {c: v for c, v in r.items() if c.endswith(("_mean", "_std", "_values"))}
        if "seeds" in r:
            cell["seeds"] = r["seeds"]
        cells.append(cell)
    # Cells missing a key (None) sort last on it rather than failing to compare.
    cells.sort(
        key=lambda c: tuple(
            (c[k.name] is None, 0 if c[k.name] is None else k.order(c[k.name])) for k in present
        )
    )
    return cells


def threshold_run(spec: ExperimentSpec, n_trials: int) -> ThresholdRun:
    """The facts the threshold verdict needs from a threshold spec and its trial count."""
    search = spec.search
    if not isinstance(search, ThresholdSearch):
        raise ValueError(f"search.kind: {spec.name} is a {search.kind} search, not threshold")
    return ThresholdRun(
        level=search.level,
        low=search.low,
        high=search.high,
        resolution=search.resolution,
        replicates=search.replicates,
        n_trials=n_trials,
    )


def frontier_run(spec: ExperimentSpec, n_trials: int) -> FrontierRun:
    """The facts the frontier verdict needs: the threshold search and its budgets (the values
    of ``search.over``)."""
    search = spec.search
    if not isinstance(search, ThresholdSearch) or search.over is None:
        raise ValueError(f"search.over: {spec.name} is no threshold search over budgets")
    budgets = tuple(float(v) for v in search.over.points())
    return FrontierRun(threshold_run(spec, n_trials), budgets)


def judge(
    study: Study,
    cells: Sequence[Cell],
    spec: ExperimentSpec,
    n_trials: int,
    reference: Sequence[Cell] | None = None,
) -> Verdict:
    """The study's verdict on its measured cells (``reference``: a threshold study's grid
    twin's cells, see `Study.reference`)."""
    if not cells:
        return Verdict("not shown", "no complete trial to judge")
    try:
        if study.verdict is None and isinstance(spec.search, ThresholdSearch) and spec.search.over:
            return verdicts.frontier(cells, frontier_run(spec, n_trials), study.metric)
        if study.verdict is None:
            run = threshold_run(spec, n_trials)
            return verdicts.threshold(cells, run, study.metric, reference)
        return study.verdict(cells)
    except Exception as e:  # one odd table must not take the whole document down; say so
        log.exception("%s: the verdict failed", study.name)
        return Verdict(
            "not shown",
            f"the verdict could not be computed ({type(e).__name__}: "
            f"{e}); a bug in sweeps/reporting/verdicts.py",
        )


# ---------------------------------------------------------------------------------------------
# smoke settings
# ---------------------------------------------------------------------------------------------

#: Training examples per smoke trial (at least one per rule of the largest I).
SMOKE_EXAMPLES = 300
#: A few optimizer steps of whatever the preset builds, and a tiny evaluation.
SMOKE_TRAIN: dict[str, Any] = {
    "epochs": None,
    "max_steps": 3,
    "warmup_steps": 0,
    "batch_size": 16,
    "eval_every": None,
    "eval_test_n": 16,
    "eval_train_n": 8,
    "eval_fresh_n": 8,
    "eval_batch_size": 16,
}


def _ends(values: Sequence[Any]) -> list[Any]:
    """First and last value: the axis's extremes are what its verdict compares."""
    return list(values) if len(values) <= 2 else [values[0], values[-1]]


def _smoke_axes(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """The preset's axes cut to their ends; several axes paired into one (see above)."""
    if len(spec.axes) <= 1:
        out = []
        for axis in spec.axes:
            dumped = axis.model_dump(mode="json", exclude_none=True)
            dumped.pop("range", None)
            dumped["values"] = _ends(axis.points())
            out.append(dumped)
        return out
    ends = [_ends(axis.settings()) for axis in spec.axes]
    paired = [_merge_all(e[0] for e in ends), _merge_all(e[-1] for e in ends)]
    name = " + ".join(axis.label for axis in spec.axes)
    return [{"name": f"smoke: {name}", "values": paired}]


def _merge_all(settings: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting in settings:
        out.update(setting)
    return out


def _largest_instructions(
    spec: ExperimentSpec, axes: Sequence[Mapping[str, Any]], base: int
) -> int:
    counts = [base]
    for axis in axes:
        for v in axis["values"]:
            if axis.get("field") == "data.n_instructions":
                counts.append(int(v))
            elif isinstance(v, Mapping) and "data.n_instructions" in v:
                counts.append(int(v["data.n_instructions"]))
    if isinstance(spec.search, ThresholdSearch) and spec.search.axis == "data.n_instructions":
        counts.append(math.ceil(spec.search.high))
    return max(counts)


def smoke_overrides(study: Study, spec: ExperimentSpec) -> dict[str, Any]:
    """Overrides that make ``spec`` (the study's preset) a seconds-long run of the same path.

    Every axis keeps its first and last value, so the preset's own extremes still run; with
    several axes the two ends are paired into one axis (``[first of every axis, last of every
    axis]``: 2 trials, not 2^axes, and each trial is one Ray actor that imports torch). Then one
    seed, `SMOKE_TRAIN` (a few steps of the preset's model; scratch models become ``nano``), a
    16-example test set and ~`SMOKE_EXAMPLES` training examples; a threshold search bisects
    once. ``study.smoke`` is merged last. The result is a preset submission's ``overrides``.
    """
    axes = _smoke_axes(spec)
    base = study.smoke.get("data", {}).get("n_instructions", spec.data.n_instructions)
    n_examples = max(SMOKE_EXAMPLES, _largest_instructions(spec, axes, base))
    train = dict(SMOKE_TRAIN)
    if spec.train.init == "scratch":
        train["model"] = "nano"
    test = {"n_test": 16, "n_instructions": min(4, spec.data.test.n_rules), "n_fresh": 8}
    out: dict[str, Any] = {
        "seeds": [spec.seeds[0]],
        "max_concurrent": 2,
        "retries": 0,
        "train": train,
        "data": {"test": test},
    }
    if axes:
        out["axes"] = _scale_examples(axes, n_examples)
    if spec.budget is not None:
        out["budget"] = {"total_examples": n_examples}
    elif spec.data.n_examples is not None:
        out["data"]["n_examples"] = n_examples
    search = spec.search
    if isinstance(search, ThresholdSearch):
        # Both ends and one midpoint: the bracket's halves are then within the resolution.
        out["search"] = {
            "replicates": 1,
            "max_replicates": None,
            "resolution": math.sqrt(search.high / search.low) * 1.01,
        }
        if search.over is not None:
            out["search"]["over"] = _smoke_over(search.over, n_examples)
    return _merge(out, study.smoke)


def _smoke_over(over: Any, n_examples: int) -> dict[str, Any]:
    """A threshold search's ``over`` cut to its ends; budgets (``data.n_examples``) become
    ``n_examples`` (which holds the bracket's largest I) and twice that: two bisections, a
    slope through two points, at a smoke run's cost."""
    ends = _ends(over.points())
    if over.field == "data.n_examples":
        ends = [n_examples, 2 * n_examples][: len(ends)]
    return {"values": ends, "range": None}


def _scale_examples(axes: list[dict[str, Any]], n_examples: int) -> list[dict[str, Any]]:
    """Axis values that set ``data.n_examples`` keep their ratios, the largest becoming
    ``n_examples`` (the fine-tune study's full / half data)."""
    sizes = [
        v["data.n_examples"]
        for a in axes
        for v in a["values"]
        if isinstance(v, Mapping) and "data.n_examples" in v
    ]
    if not sizes:
        return axes
    scale = n_examples / max(sizes)
    out = copy.deepcopy(axes)
    for a in out:
        for v in a["values"]:
            if isinstance(v, dict) and "data.n_examples" in v:
                v["data.n_examples"] = max(1, round(v["data.n_examples"] * scale))
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
        )
    return out


def default_studies() -> list[Study]:
    """The studies a plain ``divsweep reproduce`` runs (`Study.default`), in `STUDIES` order."""
    return [s for s in STUDIES.values() if s.default]


def select(names: str | None) -> list[Study]:
    """Studies by a comma-separated list of names (None: the default run, `default_studies`),
    in `STUDIES` order."""
    if not names:
        return default_studies()
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in STUDIES]
    if unknown:
        raise ValueError(f"studies: unknown {', '.join(unknown)}; known: {', '.join(STUDIES)}")
    return [s for s in STUDIES.values() if s.name in wanted]
