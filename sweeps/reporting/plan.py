"""What a sweep costs before it runs: trials, examples, tokens, parameters, FLOPs, GPU-hours.

`plan_experiment(spec)` prices every grid cell of an `ExperimentSpec` from its configs alone (no
Ray, no data generation, no model weights); `format_plan` prints it, and ``python -m sweeps plan``
/ ``divsweep plan`` wrap both. The arithmetic, worked through for one cell of the ``fig2a``
preset (I = 1000 rules, S = 1000 examples each, 50 epochs, the ``paper`` GPT-2)::

    tokens per example   x → y | z = output <eos> (data/encode.py): E[x] + E[y] + 2 E[z]
                         + E[y - x] (one x replaced; has-op only) + 4 specials.
                         x uniform on 2..20: 11; y on 1..20: 10.5; z on max(10, len x)..50,
                         averaged over len x: 31.447; output 31.447 - 11 + 10.5 = 30.947
                         -> 11 + 10.5 + 31.447 + 30.947 + 4 = 87.89 (an expected value)
    training tokens      10^6 examples x 50 epochs x 87.89 = 4.395e9
    parameters           GPT-2, vocab 5 specials + 26 letters = 31, d = 256, 256 positions,
                         6 layers: 31 d + 256 d + 6 (12 d^2 + 13 d) + 2 d = 4,812,544
    FLOPs per token      6 N + 12 n_layer d T (trainer.perf.flops_per_token, T = 87.89)
                         = 28,875,264 + 1,620,075 = 30,495,339
    training FLOPs       4.395e9 x 30,495,301 = 1.340e17
    GPU-hours            at the default assumption, an H100 at 40 % MFU of its 989 TFLOP/s
                         dense bf16 peak (395.6 TFLOP/s): 1.340e17 / 3.956e14 / 3600 = 0.094;
                         ``--throughput 2e6`` (measured tokens/s) instead: 4.395e9 / 2e6 / 3600
                         = 0.61

The token count is an estimate: it is the expectation for lengths drawn uniformly from the
spec's ranges (exact per rule family and occurrence count), while the generator also rejects
duplicate rules and resamples inputs. For a pretrained checkpoint the tokenizer is not loaded and
tokens are characters of the text. A threshold or Optuna search is priced at its maximum number
of trials; evaluation and data generation are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from data.families import base_lengths
from data.spec import DataSpec, RuleFamily
from data.vocab import Vocab
from sweeps.errors import SpecError
from sweeps.specs.model_size import model_size
from sweeps.specs.presets import preset_path
from sweeps.specs.spec import (
    AshaScheduler,
    ExperimentSpec,
    OptunaSearch,
    ThresholdSearch,
    TrialPlan,
    spec_from_dict,
    yaml_load,
)
from trainer.perf import PEAK_BF16_FLOPS, flops_per_token

#: The default throughput assumption: a well-fed H100 reaches ~40 % of its dense bf16 peak on
#: transformer training; a 5M-parameter model may reach less, hence `--throughput`.
DEFAULT_GPU, DEFAULT_MFU = "H100", 0.40


# --------------------------------------------------------------------------------------------
# tokens per example
# --------------------------------------------------------------------------------------------
def length_distribution(family: RuleFamily, lo: int, hi: int) -> dict[int, float]:
    """P(len = n) of a rule string drawn as `data.rules` does.

    The rule's (kind, k) is uniform over ``family.pairs()``, then the base length ``b`` is uniform
    over ``base_lengths(k, lo, hi)`` and the string is ``k * b`` long: a free family on 2..4 gives
    ``{2: 1/3, 3: 1/3, 4: 1/3}``, a repeated one with k in 2..3 on 2..6 gives
    ``{2: 1/6, 4: 1/6, 6: 1/6 + 1/4, 3: 1/4}``.
    """
    pairs = family.pairs()
    out: dict[int, float] = {}
    for _kind, k in pairs:
        bases = base_lengths(k, lo, hi)
        for b in bases:
            out[k * b] = out.get(k * b, 0.0) + 1.0 / (len(pairs) * len(bases))
    return out


def _mean(dist: Mapping[int, float]) -> float:
    return sum(n * p for n, p in dist.items())


def expected_z_len(z_len: tuple[int, int], x_dist: Mapping[int, float], count: int) -> float:
    """E[len z] for ``count`` copies of x: uniform on ``[max(z_min, count * len x), z_max]``.

    No-ops (``count = 0``) are uniform on the whole range (`data.examples.draw_inputs`).
    """
    lo, hi = z_len
    if count == 0:
        return (lo + hi) / 2
    return sum(p * (max(lo, count * lx) + hi) / 2 for lx, p in x_dist.items())


def tokens_per_example(spec: DataSpec) -> float:
    """Expected encoded length of one training example (an estimate; see the module docstring).

    Rewrite: ``x → y | z = output <eos>``, the output being ``z`` with one ``x`` replaced by ``y``
    (has-op) or ``z`` itself (no-op). Markov: the rendered program (``x→y`` per rule, ``.`` on a
    terminal rule, ``;`` between rules) replaces ``x → y``, and the output is priced as one
    rewrite step. E.g. ``z_len=(4, 8), x_len=(2, 3), y_len=(1, 2), noop_fraction=0.5``:
    2.5 + 1.5 + 6 + (6 - 0.5) + 4 = 19.5.
    """
    x_dist = length_distribution(spec.family, *spec.x_len)
    y_family = spec.family if spec.family.constrain_y else RuleFamily()
    ex, ey = _mean(x_dist), _mean(length_distribution(y_family, *spec.y_len))
    f, occ = spec.noop_fraction, spec.occurrences
    # has-op examples cycle through the occurrence counts evenly (data.generate)
    has_op_z = sum(expected_z_len(spec.z_len, x_dist, c) for c in occ) / len(occ)
    ez = f * expected_z_len(spec.z_len, x_dist, 0) + (1 - f) * has_op_z
    growth = (1 - f) * (ey - ex)  # a has-op output has y where z had x
    if spec.markov is None:
        return ex + ey + 2 * ez + growth + 4  # → | = <eos>
    m = spec.markov
    n_rules = (m.n_rules[0] + m.n_rules[1]) / 2
    program = n_rules * (ex + ey + 1 + m.terminal_prob) + (n_rules - 1)
    return program + 2 * ez + growth + 3  # | = <eos>


# --------------------------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Throughput:
    """How training turns into GPU time: a sustained FLOP rate, or a measured token rate."""

    label: str
    flops_per_s: float | None = None
    tokens_per_s: float | None = None

    @classmethod
    def at_mfu(cls, gpu: str = DEFAULT_GPU, mfu: float = DEFAULT_MFU) -> Throughput:
        """``Throughput.at_mfu("H100", 0.4).flops_per_s == 0.4 * 989e12``."""
        peak = PEAK_BF16_FLOPS[gpu]
        return cls(
            f"{gpu} bf16 at {mfu:.0%} MFU of {peak / 1e12:,.0f} TFLOP/s "
            f"({mfu * peak / 1e12:,.1f} TFLOP/s per GPU)",
            flops_per_s=mfu * peak,
        )

    @classmethod
    def measured(cls, tokens_per_s: float) -> Throughput:
        """A training-token rate per GPU measured elsewhere (``--throughput``)."""
        if not tokens_per_s > 0 or not math.isfinite(tokens_per_s):
            raise SpecError(f"--throughput: tokens per second must be > 0, got {tokens_per_s}")
        return cls(
            f"{tokens_per_s:,.0f} training tokens/s per GPU (--throughput)",
            tokens_per_s=tokens_per_s,
        )

    def gpu_hours(self, tokens: float, flops: float | None) -> float | None:
        """GPU-hours for ``tokens`` training tokens worth ``flops`` FLOPs (None if unknown)."""
        if self.tokens_per_s is not None:
            return tokens / self.tokens_per_s / 3600
        if flops is None or self.flops_per_s is None:
            return None
        return flops / self.flops_per_s / 3600


# --------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellCost:
    """One grid cell: the cost of one of its trials, and how many trials it has (its seeds)."""

    cell: dict[str, Any]
    n_trials: int
    n_train: int  # training set size
    budget: str  # "50 epochs" or "1000 steps"
    examples: int  # training examples seen by one trial
    tokens_per_example: float
    tokens: float  # training tokens of one trial
    n_params: int | None
    model: str
    flops: float | None
    gpu_hours: float | None


@dataclass(frozen=True)
class Plan:
    """The priced sweep; totals are sums over cells of ``n_trials x`` per-trial figures."""

    name: str
    search: str
    n_trials: int
    at_most: bool  # n_trials is an upper bound (threshold and optuna searches)
    cells: tuple[CellCost, ...]
    throughput: str
    notes: tuple[str, ...]

    def _total(self, key: str) -> float | None:
        values = [getattr(c, key) for c in self.cells]
        if any(v is None for v in values):
            return None
        return sum(c.n_trials * v for c, v in zip(self.cells, values, strict=True))

    @property
    def totals(self) -> dict[str, float | None]:
        """Examples, tokens, FLOPs and GPU-hours of the whole sweep (None where unknown)."""
        return {k: self._total(k) for k in ("examples", "tokens", "flops", "gpu_hours")}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what ``--json`` prints)."""
        return {**asdict(self), "totals": self.totals}


def trial_cost(
    trial: TrialPlan, n_trials: int, throughput: Throughput, n_params: int | None = None
) -> CellCost:
    """Price one trial of ``trial``'s cell; ``n_trials`` is how many such trials there are."""
    data, train = trial.data, trial.train
    tok_ex = tokens_per_example(data)
    if train.epochs is not None:
        examples, budget = data.n_train * train.epochs, f"{train.epochs} epochs"
        tokens = examples * tok_ex
    else:
        steps = train.max_steps or 0
        budget = f"{steps} steps"
        if train.batch_tokens is not None:  # padded tokens per step: an upper bound
            tokens = float(steps * train.batch_tokens)
            examples = round(tokens / tok_ex)
        else:
            examples = steps * (train.examples_per_batch or 0)
            tokens = examples * tok_ex
    vocab = Vocab.build(data.alphabet, markov=data.task == "markov").size
    size = model_size(train, vocab, n_params)
    flops: float | None = None
    if size is not None:
        if size.n_layer is not None and size.n_embd is not None:
            flops = flops_per_token(size.n_params, size.n_layer, size.n_embd, tok_ex) * tokens
        else:
            flops = 6.0 * size.n_params * tokens
    label = size.label if size else f"unknown ({train.init} has no config.json)"
    return CellCost(
        dict(trial.cell),
        n_trials,
        data.n_train,
        budget,
        examples,
        tok_ex,
        tokens,
        size.n_params if size else None,
        label,
        flops,
        throughput.gpu_hours(tokens, flops),
    )


def plan_experiment(
    spec: ExperimentSpec, throughput: Throughput | None = None, n_params: int | None = None
) -> Plan:
    """Price every cell of ``spec`` (see the module docstring for the arithmetic).

    A grid prices each cell once and multiplies by its seeds. A threshold search prices its
    costlier bracket end times its maximum number of trials (replicates x probes), once per
    group of ``search.over`` (the frontier: one bisection per budget); an Optuna search prices
    its base configuration times ``n_trials``.
    """
    tp = throughput or Throughput.at_mfu()
    search, notes = spec.search, []
    if isinstance(search, ThresholdSearch):
        cells = [_threshold_group(spec, search, group, tp, n_params) for group in search.groups]
        per = f"{len(search.groups)} bisections x " if search.over is not None else ""
        notes.append(
            f"threshold search: at most {spec.n_trials} trials ({per}{search.replicate_cap} "
            f"replicates x {search.max_probes} probes), each priced at the costlier "
            f"bracket end{' of its group' if per else ''}; it usually stops sooner"
        )
    elif isinstance(search, OptunaSearch):
        cells = [trial_cost(spec.trials()[0], search.n_trials, tp, n_params)]
        notes.append(
            f"optuna search: {search.n_trials} trials priced at the base "
            f"configuration; sampled {', '.join(search.space)} change the cost"
        )
    else:
        by_cell: dict[str, list[TrialPlan]] = {}
        for t in spec.trials():  # seeds of one cell share its cost
            by_cell.setdefault(json.dumps(t.cell, sort_keys=True, default=str), []).append(t)
        cells = [trial_cost(ts[0], len(ts), tp, n_params) for ts in by_cell.values()]
    derived = spec.budget.examples_field if spec.budget is not None else None
    # the budget's derived field (S = budget // I) shows as the train-set column instead
    cells = [replace(c, cell={k: v for k, v in c.cell.items() if k != derived}) for c in cells]
    if isinstance(spec.scheduler, AshaScheduler):
        notes.append("ASHA stops trailing trials early: the totals are an upper bound")
    notes.append(
        "tokens per example are an estimate: the expected encoded length for lengths "
        "drawn uniformly from the data spec's ranges (layout of data/encode.py)"
    )
    if spec.train.pretrained:
        notes.append(
            "pretrained init: the checkpoint's tokenizer is not loaded, so tokens are "
            "character estimates of the text"
        )
    if spec.train.lora is not None:
        notes.append(
            "LoRA: FLOPs counted as full fine-tuning; frozen weights need no weight "
            "gradients, so expect about 2/3 of that"
        )
    if any(c.n_params is None for c in cells):
        notes.append(
            f"parameters unknown: {spec.train.init} has no config.json; pass --params N "
            "(or --throughput TOKENS_PER_S) for FLOPs and GPU-hours"
        )
    elif any(c.model == "given with --params" for c in cells):
        notes.append("FLOPs with --params are 6 N per token (no attention term)")
    notes.append("training only: evaluation decoding, data generation and padding are not counted")
    return Plan(
        spec.name,
        search.kind,
        spec.n_trials,
        search.kind != "grid",
        tuple(cells),
        tp.label,
        tuple(notes),
    )


def _threshold_group(
    spec: ExperimentSpec,
    search: ThresholdSearch,
    group: Mapping[str, Any],
    tp: Throughput,
    n_params: int | None,
) -> CellCost:
    """One bisection (one value of ``search.over``, or the only one) at its maximum trials,
    each priced at the costlier bracket end."""
    ends = [
        spec.plan({**group, search.axis: round(v) if search.integer else v})
        for v in (search.low, search.high)
    ]
    per_group = search.replicate_cap * search.max_probes
    costs = [trial_cost(t, per_group, tp, n_params) for t in ends]
    return max(costs, key=lambda c: c.tokens)


# --------------------------------------------------------------------------------------------
# loading and printing
# --------------------------------------------------------------------------------------------
def apply_sets(body: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set dotted.key=value`` items to ``body`` in place (JSON values; a value that
    is not JSON is a string) and return it: ``apply_sets({}, ["train.lr=0.01"]) ==
    {"train": {"lr": 0.01}}``. Errors are `SpecError` naming the item."""
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected FIELD.PATH=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = body
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"--set {key}: {part!r} is not a mapping")
            node = child
        node[last] = value
    return body


def load_with_overrides(source: str, sets: Sequence[str] = ()) -> ExperimentSpec:
    """A preset name or spec file, with ``--set dotted.key=value`` overrides (JSON values).

    ``load_with_overrides("fig2a", ["train.epochs=2"]).train.epochs == 2``. A value that is not
    JSON is taken as a string. Errors are `SpecError` naming the source.
    """
    path = Path(source)
    if not (path.suffix in (".yaml", ".yml", ".json") or path.is_file()):
        path = preset_path(source)  # SpecError listing the known presets
    try:
        body = yaml_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"cannot read spec file {path}: {e}") from None
    if not isinstance(body, dict):
        raise SpecError(f"{path}: a spec file must hold a mapping")
    apply_sets(body, sets)
    try:
        return spec_from_dict(body)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None


def _sci(v: float | None) -> str:
    if v is None:
        return "?"
    mantissa, exp = f"{v:.2e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _hours(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


def _label(cell: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items()) or "(base)"


def format_plan(plan: Plan) -> str:
    """The plan as a table with its totals, assumption and notes (what the CLI prints)."""
    seeds = {c.n_trials for c in plan.cells}
    if plan.at_most:
        count = f"at most {plan.n_trials} trials"
    elif len(seeds) == 1:
        n = seeds.pop()
        count = f"{plan.n_trials} trials = {len(plan.cells)} cells x {n} seed{'s' * (n != 1)}"
    else:
        count = f"{plan.n_trials} trials"
    models = sorted({c.model for c in plan.cells})
    params = sorted({c.n_params for c in plan.cells if c.n_params is not None})
    lines = [
        f"plan for {plan.name}: {plan.search} search, {count}",
        "model: "
        + "; ".join(models)
        + (f" ({', '.join(f'{p:,}' for p in params)} parameters)" if params else ""),
        f"GPU time assumes {plan.throughput}",
        "",
    ]
    head = (
        "cell",
        "trials",
        "train set",
        "budget",
        "examples/trial",
        "tokens/ex",
        "tokens/trial",
        "params",
        "FLOPs/trial",
        "GPU-h/trial",
    )
    rows = [
        (
            _label(c.cell),
            str(c.n_trials),
            f"{c.n_train:,}",
            c.budget,
            f"{c.examples:,}",
            f"{c.tokens_per_example:.1f}",
            _sci(c.tokens),
            _sci(c.n_params) if c.n_params is not None else "?",
            _sci(c.flops),
            _hours(c.gpu_hours),
        )
        for c in plan.cells
    ]
    t = plan.totals
    rows.append(
        (
            "total" + (" (at most)" if plan.at_most else ""),
            str(plan.n_trials),
            "",
            "",
            f"{t['examples']:,.0f}" if t["examples"] is not None else "?",
            "",
            _sci(t["tokens"]),
            "",
            _sci(t["flops"]),
            _hours(t["gpu_hours"]),
        )
    )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        lines.append(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    lines += ["", "notes:", *(f"  - {n}" for n in plan.notes)]
    return "\n".join(lines)


def plan_report(
    source: str,
    sets: Sequence[str] = (),
    throughput: float | None = None,
    n_params: float | None = None,
    as_json: bool = False,
) -> str:
    """What ``python -m sweeps plan`` and ``divsweep plan`` print; `SpecError` on bad input."""
    if n_params is not None and not (n_params >= 1 and math.isfinite(n_params)):
        raise SpecError(f"--params: must be >= 1, got {n_params}")
    spec = load_with_overrides(source, sets)
    tp = Throughput.measured(throughput) if throughput is not None else Throughput.at_mfu()
    plan = plan_experiment(spec, tp, round(n_params) if n_params is not None else None)
    if as_json:
        return json.dumps(plan.to_dict(), indent=2, default=str)
    return format_plan(plan)
