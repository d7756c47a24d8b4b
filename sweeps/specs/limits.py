"""What one trial of a spec can ask of a machine, before anything runs: sizes and paths.

The service checks a submission against its quotas with these figures (`service.specs`), so
they must bound *every* trial the spec can start: a grid's every cell, a threshold search's two
bracket ends (the searched axis is monotone in every size), an optuna search's corners. Ray-free
and cheap: parameters come from closed forms or a meta-device build, memory from a formula, not
from running anything. Worked example::

    >>> from sweeps.specs.presets import load_preset
    >>> spec = load_preset("fig2a-mini")
    >>> s = trial_sizes(spec)
    >>> s.n_train, s.n_test, s.seq_len, s.n_layer
    (56000, 500, 20, 3)
    >>> round(s.memory_bytes / 2**30, 2)   # GiB: mostly the fixed runtime overhead
    1.16

Paths: a field whose pydantic ``json_schema_extra`` carries ``PATH_MARK`` names a file or
directory on the cluster's machines (today ``train.init``). `path_values` lists every such value
any trial of the spec would open, so a rule for submitted paths covers fields added later.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from data.vocab import Vocab
from sweeps.specs.model_size import model_size
from sweeps.specs.spec import ExperimentSpec, OptunaSearch, ThresholdSearch, TrialPlan

#: ``Field(json_schema_extra={PATH_MARK: True})`` marks a field that names a path.
PATH_MARK = "x-divsweep-path"
#: A fixed allowance for the runtime of a trial (Python, torch, transformers, Ray worker).
RUNTIME_BYTES = 1 << 30
#: Bytes per stored token in memory: the data engine holds uint8 tokens, the batches int64.
TOKEN_BYTES = 8


class SizeError(ValueError):
    """A size that cannot be known because a field is wrong (``field`` names it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class TrialSizes:
    """The largest of each size over every trial a spec can start (None: not knowable here)."""

    n_train: int
    n_test: int
    seq_len: int  # the longest encoded example, in tokens
    n_params: int | None
    n_layer: int | None
    memory_bytes: int | None  # host memory of one CPU trial (see `memory_bound`)
    memory_parts: dict[str, int]  # the largest trial's terms, by the field that drives them


def bounding_plans(spec: ExperimentSpec) -> list[TrialPlan]:
    """Trials whose sizes bound every trial the spec can run.

    Grid: every planned trial. Threshold: both bracket ends, at every value of ``search.over``
    (a group's budget may be the largest). Optuna: every corner of the space (2**d plans, d
    capped at 8), which bounds the monotone size fields.
    """
    plans = spec.trials()
    search = spec.search
    if isinstance(search, ThresholdSearch):
        for group in search.groups:
            for bound in (search.low, search.high):
                value = round(bound) if search.integer else bound
                plans.append(spec.plan({**group, search.axis: value}))
    elif isinstance(search, OptunaSearch):
        dims = list(search.space.items())[:8]
        corners = [list(d.choices) if d.choices else [d.low, d.high] for _, d in dims]
        for combo in itertools.product(*corners):
            params: dict[str, Any] = {}
            for (path, d), v in zip(dims, combo, strict=True):
                params[path] = round(v) if d.kind == "int" and isinstance(v, float) else v
            try:
                plans.append(spec.plan(params))
            except ValueError:
                # A corner the data engine rejects is never run either; it cannot bust a quota.
                continue
    return plans


def memory_bound(
    plan: TrialPlan,
    n_params: int,
    n_layer: int | None,
    n_embd: int | None,
    n_head: int | None,
    vocab: int,
) -> dict[str, int]:
    """Host bytes of one fp32 CPU trial, by the field that drives each term.

    ``train.model``: weights, gradients and AdamW's two moments (16 bytes a parameter);
    ``train.batch_size``: activations kept for backward, per layer ``rows * seq * (68 h +
    10 heads seq)`` bytes (Korthikanti et al. 2022's count, doubled for fp32) plus the logits
    and their gradient; ``data.n_train``: the generated data set and its encoded tokens;
    ``runtime``: `RUNTIME_BYTES`. An estimate for refusing absurd requests at the door, not a
    measurement (`trainer.memory` measures CUDA trials).
    """
    seq = plan.data.max_seq_len
    if not plan.train.pretrained:
        seq = min(seq, plan.train.dims.n_positions)
    rows = plan.train.examples_per_batch or max(1, (plan.train.batch_tokens or seq) // seq)
    rows = max(rows, plan.train.eval_batch_size)
    act = 0
    if n_layer is not None and n_embd is not None:
        heads = n_head or 1
        act = n_layer * rows * seq * (68 * n_embd + 10 * heads * seq)
    act += 3 * 4 * rows * seq * vocab
    return {
        "train.model": 16 * n_params,
        "train.batch_size": act,
        "data.n_train": (plan.data.n_train + plan.data.test.n_test) * seq * TOKEN_BYTES * 2,
        "runtime": RUNTIME_BYTES,
    }


def trial_sizes(spec: ExperimentSpec, plans: list[TrialPlan] | None = None) -> TrialSizes:
    """The largest sizes over `bounding_plans` (see `TrialSizes`); pass ``plans`` when the
    caller has them already (building them validates every trial of the spec)."""
    plans = bounding_plans(spec) if plans is None else plans
    n_params: int | None = 0
    n_layer: int | None = 0
    memory: int | None = 0
    parts: dict[str, int] = {}
    for plan in plans:
        vocab = Vocab.build(plan.data.alphabet, markov=plan.data.markov is not None).size
        try:
            size = model_size(plan.train, vocab)
        except (OSError, ValueError) as e:  # a config.json that is no model's
            raise SizeError(
                "train.init",
                f"{plan.train.init}: its config.json does not describe a causal LM: {e}",
            ) from None
        if size is None:
            n_params = n_layer = memory = None
            continue
        if n_params is not None:
            n_params = max(n_params, size.n_params)
        if n_layer is not None and size.n_layer is not None:
            n_layer = max(n_layer, size.n_layer)
        heads = None if plan.train.pretrained else plan.train.dims.n_head
        terms = memory_bound(plan, size.n_params, size.n_layer, size.n_embd, heads, vocab)
        if memory is not None and sum(terms.values()) > memory:
            memory, parts = sum(terms.values()), terms
    return TrialSizes(
        n_train=max(p.data.n_train for p in plans),
        n_test=max(p.data.test.n_test for p in plans),
        seq_len=max(p.data.max_seq_len for p in plans),
        n_params=n_params,
        n_layer=n_layer,
        memory_bytes=memory,
        memory_parts=parts,
    )


def path_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the fields marked with `PATH_MARK` in ``model`` and its sub-models."""
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(PATH_MARK):
            yield prefix + name
        ann = info.annotation
        for sub in (ann, *getattr(ann, "__args__", ())):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                yield from path_fields(sub, f"{prefix}{name}.")


def path_values(
    spec: ExperimentSpec, plans: list[TrialPlan] | None = None
) -> list[tuple[str, str]]:
    """``(field, value)`` of every marked path field of every bounding trial, deduplicated
    (``plans``: `bounding_plans` of the spec, if the caller has them)."""
    fields = [f for f in path_fields(ExperimentSpec) if f.split(".", 1)[0] in ("data", "train")]
    out: dict[tuple[str, str], None] = {}
    for plan in bounding_plans(spec) if plans is None else plans:
        for f in fields:
            part, rest = f.split(".", 1)
            obj: Any = plan.data if part == "data" else plan.train
            for attr in rest.split("."):
                obj = getattr(obj, attr, None)
            if isinstance(obj, str):
                out[(f, obj)] = None
    return list(out)
