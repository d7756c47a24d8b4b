"""Every paper-scale preset against the grids and settings of docs/PAPER.md.

The expected values are written out below, each with the section of docs/PAPER.md (and of the
papers) it comes from; a preset that drifts from the paper fails here with the cell it lacks.
The `-mini` and smoke presets are CPU scale-downs (docs/CALIBRATION.md) and are not checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import pytest

from sweeps.__main__ import main
from sweeps.specs.presets import load_preset
from sweeps.specs.spec import TrialPlan

MILLION = 10**6
#: Paper model, "Model and training" (P3 appendix B): GPT-2, 6 layers, 4 heads, hidden 256.
PAPER_DIMS = (6, 4, 256)
#: "Unseen test rules" (settings table): 10^5 test examples with unseen instructions.
PAPER_TEST_N = 100_000
#: Llama-2-7B (P1 §5), for pricing the finetune preset without the checkpoint on disk.
LLAMA2_7B_PARAMS = "6.74e9"


def _alpha(t: TrialPlan) -> Any:
    return "uniform" if t.data.distribution == "uniform" else t.data.alpha


#: How each paper axis is read off a trial's resolved configs (not off the preset's labels).
READ: dict[str, Callable[[TrialPlan], Any]] = {
    "I": lambda t: t.data.n_instructions,
    "noop": lambda t: t.data.noop_fraction,
    "alpha": _alpha,
    "k": lambda t: tuple(t.data.family.k or ()),
    "occurrences": lambda t: tuple(t.data.occurrences),
    "n_train": lambda t: t.data.n_train,
    "halving": lambda t: (t.data.n_train, t.data.distribution),
}


@dataclass(frozen=True)
class Study:
    """One experiment of docs/PAPER.md: its grid and the settings every trial must have."""

    preset: str
    section: str
    grid: dict[str, tuple[Any, ...]]
    #: training examples per trial: "IxS" for I * (budget // I), else a number, or None (varied)
    budget: int | str | None
    noop: float | None  # None: varied by the grid
    z_max: int
    x_max: int
    scratch: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


STUDIES = (
    # docs/PAPER.md "Experiments" 1 (P1 §4.1, Fig. 2a): I x S = 10^6, every input contains x;
    # settings table: input length 50, pattern length 20.
    Study(
        "fig2a",
        "1. Fig. 2a",
        {
            "I": (
                10,
                20,
                50,
                100,
                200,
                300,
                400,
                500,
                600,
                1_000,
                2_000,
                2_500,
                5_000,
                10_000,
                100_000,
                1_000_000,
            )
        },
        budget="IxS",
        noop=0.0,
        z_max=50,
        x_max=20,
        extra={"test_noop": 0.0},
    ),
    # 2 (P3 §2.3.2, Fig. 2b): no-op share 10..50 %; the budget is open, divsweep uses I x S = 10^6.
    Study(
        "noops",
        "2. Fig. 2b",
        {"noop": (0.1, 0.2, 0.3, 0.4, 0.5), "I": (100, 200, 300, 400, 500, 1_000, 10_000, 100_000)},
        budget="IxS",
        noop=None,
        z_max=50,
        x_max=20,
    ),
    # 3 (P1 §4.4, P3 Fig. 3): 10^6 examples over I rules, density alpha * u^(alpha - 1).
    Study(
        "powerlaw",
        "3. Fig. 3",
        {"alpha": ("uniform", 2.0, 1.0, 0.5, 0.2, 0.1, 0.07, 0.03), "I": (1_000, 10_000, 100_000)},
        budget=MILLION,
        noop=0.0,
        z_max=50,
        x_max=20,
    ),
    # 4 (P1 §4.3, P3 Fig. 4): the repeated/periodic/mirror mix with k in 3-K, test on k < 3;
    # input length 500, pattern length 60; the budget is open, divsweep uses 10^6 examples.
    Study(
        "semantic",
        "4. Fig. 4",
        {
            "k": ((3, 4), (3, 6), (3, 12), (3, 20), (3, 30), (3, 60)),
            "I": (500, 1_000, 5_000, 10_000),
        },
        budget=MILLION,
        noop=0.0,
        z_max=500,
        x_max=60,
    ),
    # 5 (P1 §4.5, Table 1): training occurrences 1, 10, 20, mix 1/5/10/15/20; lengths and budget
    # are open: 20 copies need len(z) >= 20 len(x), so z 100-200 and x 2-5, 10^6 examples.
    Study(
        "occurrences",
        "5. Table 1",
        {"occurrences": ((1,), (10,), (20,), (1, 5, 10, 15, 20)), "I": (2_000, 1_000, 500, 200)},
        budget=MILLION,
        noop=0.0,
        z_max=200,
        x_max=5,
    ),
    # 6 (P1 §5, Fig. 5): LoRA r 512, alpha 1024, lr 1e-5, batch 64; 40k training and 5k test
    # examples, 40 % no-ops, 9000 rules; the data halved uniformly and non-uniformly.
    Study(
        "finetune",
        "6. Fig. 5",
        {"halving": ((40_000, "uniform"), (20_000, "uniform"), (20_000, "power"))},
        budget=None,
        noop=0.4,
        z_max=50,
        x_max=20,
        scratch=False,
        extra={"I": 9_000, "test_n": 5_000},
    ),
)


@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.preset)
def test_preset_grid_is_the_papers(study: Study) -> None:
    spec = load_preset(study.preset)
    trials = spec.trials()
    if study.preset == "semantic":
        # Extra single-family cells are allowed ("one family alone never transfers", §4);
        # the paper's grid is the mix.
        assert {t.data.family.kind for t in trials} <= {"mix", "repeated", "periodic", "mirror"}
        trials = [t for t in trials if t.data.family.kind == "mix"]
        assert all(set(t.data.family.kinds) == {"repeated", "periodic", "mirror"} for t in trials)
    names = list(study.grid)
    got = {tuple(READ[n](t) for n in names) for t in trials}
    want = set(product(*study.grid.values()))
    assert got == want, (
        f"{study.preset} vs docs/PAPER.md {study.section}: missing "
        f"{sorted(want - got, key=str)}, extra {sorted(got - want, key=str)}"
    )
    assert len(trials) == len(want) * len(spec.seeds)


@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.preset)
def test_preset_settings_are_the_papers(study: Study) -> None:
    spec = load_preset(study.preset)
    assert spec.search.kind == "grid"
    for t in spec.trials():
        d, tr = t.data, t.train
        where = f"{study.preset} {t.cell} (docs/PAPER.md {study.section})"
        if study.budget == "IxS":
            assert d.n_train == d.n_instructions * (MILLION // d.n_instructions), where
        elif study.budget is not None:
            assert d.n_train == study.budget, where
        if study.noop is not None:
            assert d.noop_fraction == study.noop, where
        assert (d.z_len[1], d.x_len[1]) == (study.z_max, study.x_max), where
        assert d.test.n_test == study.extra.get("test_n", PAPER_TEST_N), where
        if "test_noop" in study.extra:
            assert d.test_noop_fraction == study.extra["test_noop"], where
        if "I" in study.extra:
            assert d.n_instructions == study.extra["I"], where
        if study.scratch:
            # "Model and training": paper GPT-2 from scratch, AdamW lr 1e-3, linear, 50 epochs.
            assert tr.init == "scratch" and tuple(tr.dims)[:3] == PAPER_DIMS, where
            assert (tr.lr, tr.schedule, tr.epochs) == (1e-3, "linear", 50), where
            assert tr.dims.n_positions >= d.max_seq_len, where
        else:
            # §6: LoRA rank 512, alpha 1024, lr 1e-5, batch 64 on a pretrained checkpoint.
            assert tr.pretrained and tr.lora is not None, where
            assert (tr.lora.r, tr.lora.alpha, tr.lr, tr.batch_size) == (512, 1024, 1e-5, 64), where


def test_semantic_tests_on_k_below_3() -> None:
    # docs/PAPER.md 4: "test on k < 3", the same families as training.
    for t in load_preset("semantic").trials():
        fam = t.data.test_family
        assert fam.k is not None and fam.k[1] < 3
        assert set(fam.kinds) == {"repeated", "periodic", "mirror"}


def test_noops_and_occurrences_report_what_the_paper_reports() -> None:
    # docs/PAPER.md 2: accuracy for no-op, has-op and average, so the test set holds both.
    for t in load_preset("noops").trials():
        assert 0 < t.data.test_noop_fraction < 1
    # 5 (Table 1): accuracy split by occurrence count; the test covers every training count.
    for t in load_preset("occurrences").trials():
        assert set(t.data.occurrences) <= set(t.data.test_occurrences)


@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.preset)
def test_plan_prices_every_paper_preset(study: Study, capsys: pytest.CaptureFixture[str]) -> None:
    extra = [] if study.scratch else ["--params", LLAMA2_7B_PARAMS]
    assert main(["plan", study.preset, "--json", *extra]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["n_trials"] == load_preset(study.preset).n_trials and not plan["at_most"]
    hours = [c["gpu_hours"] for c in plan["cells"]] + [plan["totals"]["gpu_hours"]]
    assert all(h is not None and math.isfinite(h) and h > 0 for h in hours)
    if study.scratch:
        # "Model and training" / "Compute scale": a ~5M-parameter model.
        assert all(4e6 < c["n_params"] < 6e6 for c in plan["cells"])
    if study.preset == "fig2a":
        # "Compute scale": one Fig. 2a trial is about 1.3e17 training FLOPs.
        assert all(1e17 < c["flops"] < 2e17 for c in plan["cells"])
