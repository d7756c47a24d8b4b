"""The study definitions, their verdicts on synthetic tables, the smoke settings, and rendering
RESULTS.md from a hand-filled store (no Ray, no service)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweeps.reporting import verdicts
from sweeps.reporting.results_doc import (
    ResultsIndex,
    RunInfo,
    StoreSource,
    StudyRecord,
    index_path,
    render,
)
from sweeps.reporting.studies import (
    SMOKE_EXAMPLES,
    STUDIES,
    _merge,
    cells_of,
    select,
    smoke_overrides,
)
from sweeps.reporting.verdicts import ThresholdRun
from sweeps.specs.presets import PRESET_DIR, load_preset
from sweeps.specs.spec import ExperimentSpec, ThresholdSearch
from sweeps.store import TrialRecord, open_store

STRICT = "test_acc_op_new_x"


def seeds(m: float, spread: float = 0.01) -> list[float]:
    """Three seeds around ``m``: ``m - spread``, ``m``, ``m + spread``."""
    return [m - spread, m, m + spread]


def cell(metric: str = STRICT, m: float = 0.0, spread: float = 0.01, **keys: Any) -> dict[str, Any]:
    return {**keys, "n": 3, f"{metric}_values": seeds(m, spread)}


def fig2a_cell(i: int, acc: float, fresh: float = 1.0, spread: float = 0.01) -> dict[str, Any]:
    return {
        "I": i,
        "n": 3,
        f"{STRICT}_values": seeds(acc, spread),
        "fresh_acc_values": seeds(fresh, 0.0),
        "test_rules_op_new_x_values": [150, 160, 170],
    }


# --- verdicts ---------------------------------------------------------------------------------


def test_fig2a_shown_with_a_significant_jump() -> None:
    v = verdicts.fig2a(
        [
            fig2a_cell(4, 0.0),
            fig2a_cell(64, 0.03),
            fig2a_cell(256, 0.6),
            fig2a_cell(1024, 0.95, 0.97),
        ]
    )
    assert v.outcome == "effect shown", v.reason
    assert "sharpest step I=64->256: +0.57, 95% CI" in v.reason and "0.95 at I=1024" in v.reason
    assert "one-sided p = " in v.reason  # the test behind the comparison is stated


def test_fig2a_not_shown_when_nothing_generalises() -> None:
    v = verdicts.fig2a([fig2a_cell(4, 0.0), fig2a_cell(1024, 0.1)])
    assert v.outcome == "not shown", v.reason


def test_fig2a_partly_when_the_training_rules_are_not_learnt_or_the_jump_is_noise() -> None:
    v = verdicts.fig2a([fig2a_cell(4, 0.0), fig2a_cell(1024, 0.9, fresh=0.6)])
    assert v.outcome == "partly" and "fresh inputs >= 0.60 everywhere (>= 0.9 no)" in v.reason
    # Every step is within the seeds' noise: the effect overall is there, no single jump is.
    noisy = verdicts.fig2a(
        [
            fig2a_cell(4, 0.0, spread=0.0),
            fig2a_cell(64, 0.3, spread=0.3),
            fig2a_cell(256, 0.6, spread=0.3),
            fig2a_cell(1024, 0.9, spread=0.05),
        ]
    )
    assert noisy.outcome == "partly", noisy.reason


def test_fig2a_warns_when_few_new_x_rules_stand_behind_the_strict_metric() -> None:
    few = fig2a_cell(1024, 0.95)
    few["test_rules_op_new_x_values"] = [40, 45, 50]
    v = verdicts.fig2a([fig2a_cell(4, 0.0), few])
    assert "fewer than 100 new-x test rules (I=1024: 40)" in v.reason


def _noops(thr: dict[float, int], above: dict[float, float], spread: float = 0.01) -> list:
    cells = []
    for share, t in thr.items():
        for i in (4, 64, 1024):
            acc = above[share] if i >= t else 0.1
            cells.append(cell(m=acc, spread=spread, share=share, I=i))
    return cells


def test_noops_shown_when_every_share_generalises_from_the_same_rule_count() -> None:
    v = verdicts.noops(_noops({0.1: 64, 0.3: 64, 0.5: 64}, {0.1: 0.9, 0.3: 0.86, 0.5: 0.88}))
    assert v.outcome == "effect shown", v.reason
    assert "0.1: 64, 0.3: 64, 0.5: 64" in v.reason and "TOST p" in v.reason


def test_noops_not_shown_when_a_share_never_generalises_and_partly_when_shares_differ() -> None:
    v = verdicts.noops(_noops({0.1: 10**9, 0.3: 10**9}, {0.1: 0.9, 0.3: 0.9}))
    assert v.outcome == "not shown", v.reason
    spread = verdicts.noops(_noops({0.1: 64, 0.3: 64}, {0.1: 0.95, 0.3: 0.6}))
    assert spread.outcome == "partly" and "-0.35" in spread.reason
    # Equal means, but seeds too noisy to show the shares agree within 0.10.
    noisy = verdicts.noops(_noops({0.1: 64, 0.3: 64}, {0.1: 0.8, 0.3: 0.8}, spread=0.15))
    assert noisy.outcome == "partly" and "not inside" in noisy.reason


def _power(small: list[float], large: list[float]) -> list[dict[str, Any]]:
    alphas: list[Any] = ["uniform", 1.0, 0.2, 0.05]
    return [cell(m=v, alpha=a, I=64) for a, v in zip(alphas, small, strict=True)] + [
        cell(m=v, alpha=a, I=1024) for a, v in zip(alphas, large, strict=True)
    ]


def test_powerlaw_shown_when_few_rules_collapse_and_many_do_not() -> None:
    v = verdicts.powerlaw(_power([0.8, 0.75, 0.5, 0.1], [0.95, 0.94, 0.93, 0.92]))
    assert v.outcome == "effect shown", v.reason
    assert "0.80 -> 0.75 -> 0.50 -> 0.10" in v.reason


def test_powerlaw_needs_a_saturated_uniform_arm() -> None:
    v = verdicts.powerlaw(_power([0.8, 0.75, 0.5, 0.1], [0.8, 0.8, 0.79, 0.78]))
    assert v.outcome == "partly" and "(>= 0.9 no)" in v.reason, v.reason


def test_powerlaw_not_shown_when_alpha_changes_nothing() -> None:
    v = verdicts.powerlaw(_power([0.8, 0.8, 0.8, 0.78], [0.9, 0.9, 0.9, 0.9]))
    assert v.outcome == "not shown", v.reason


def _semantic(single: float, mix_small: float, mix_large: float) -> list[dict[str, Any]]:
    out = [cell(m=single, family=f, I=1024) for f in ("repeated", "periodic", "mirror")]
    return out + [cell(m=mix_small, family="mix", I=64), cell(m=mix_large, family="mix", I=1024)]


def test_semantic_shown_when_only_the_mix_transfers_and_only_with_many_rules() -> None:
    v = verdicts.semantic(_semantic(0.02, 0.05, 0.7))
    assert v.outcome == "effect shown", v.reason


def test_semantic_not_shown_without_a_family_axis_or_when_single_families_transfer() -> None:
    assert verdicts.semantic([cell(m=0.5, I=64)]).outcome == "not shown"
    v = verdicts.semantic(_semantic(0.6, 0.6, 0.7))
    assert v.outcome == "not shown", v.reason


def _occ(mix: list[float], single: list[float]) -> list[dict[str, Any]]:
    return (
        [cell(m=v, occurrences=(1, 2, 3, 4), I=i) for i, v in zip((64, 1024), mix, strict=True)]
        + [cell(m=v, occurrences=(1,), I=i) for i, v in zip((64, 1024), single, strict=True)]
        + [cell(m=v / 2, occurrences=(4,), I=i) for i, v in zip((64, 1024), single, strict=True)]
    )


def test_occurrences_shown_when_the_mix_wins_at_every_rule_count() -> None:
    v = verdicts.occurrences(_occ([0.4, 0.9], [0.2, 0.6]))
    assert v.outcome == "effect shown", v.reason
    assert "I=1024: mix 0.90 vs single counts 1: 0.60, 4: 0.30" in v.reason


def test_occurrences_not_shown_when_a_single_count_wins() -> None:
    assert verdicts.occurrences(_occ([0.2, 0.5], [0.3, 0.7])).outcome == "not shown"
    assert verdicts.occurrences(_occ([0.2, 0.9], [0.3, 0.7])).outcome == "partly"


def _ft(full: float, half_u: float, half_s: float, spread: float = 0.005) -> list[dict[str, Any]]:
    return [
        cell("test_acc_new_x", full, spread, data="full"),
        cell("test_acc_new_x", half_u, spread, data="half uniform"),
        cell("test_acc_new_x", half_s, spread, data="half skewed"),
    ]


def test_finetune_shown_when_only_skewed_halving_costs() -> None:
    v = verdicts.finetune(_ft(0.95, 0.94, 0.6))
    assert v.outcome == "effect shown", v.reason
    assert "full minus half uniform +0.01" in v.reason and "+0.34" in v.reason


def test_finetune_not_shown_when_uniform_halving_costs_as_much() -> None:
    assert verdicts.finetune(_ft(0.95, 0.5, 0.55)).outcome == "not shown"
    assert verdicts.finetune(_ft(0.02, 0.0, 0.0)).outcome == "not shown"
    assert verdicts.finetune(_ft(0.95, 0.8, 0.5)).outcome == "partly"


def probe(i: int, *vals: float) -> dict[str, Any]:
    return {"I": i, "n": len(vals), f"{STRICT}_values": list(vals)}


def test_threshold_shown_with_few_trials_and_an_interval_holding_the_grid() -> None:
    probes = [
        probe(4, 0.0, 0.0),
        probe(64, 0.2, 0.25),
        probe(128, 0.4, 0.45, 0.42),
        probe(181, 0.55, 0.6, 0.5),
        probe(256, 0.7, 0.72),
        probe(1024, 0.9, 0.92),
    ]
    run = ThresholdRun(level=0.5, low=4, high=1024, resolution=1.25, replicates=2, n_trials=15)
    grid = [probe(4, 0.0, 0.0, 0.0), probe(64, 0.2, 0.2, 0.2), probe(256, 0.64, 0.65, 0.66)]
    v = verdicts.threshold(probes, run, grid_cells=grid)
    assert verdicts.grid_trials(run) == 52
    assert v.outcome == "effect shown", v.reason
    assert "I* = 181" in v.reason and "in (128, 181]" in v.reason
    assert "15 trials against 52" in v.reason and "95% interval" in v.reason
    assert "lies inside the interval: yes" in v.reason
    # A grid whose crossing lies elsewhere is said to disagree.
    far = [probe(4, 0.0, 0.0), probe(1024, 0.4, 0.45)]
    assert "inside the interval: no" in verdicts.threshold(probes, run, grid_cells=far).reason


def test_threshold_not_shown_when_nothing_passes_and_partly_when_too_costly() -> None:
    run = ThresholdRun(level=0.5, low=4, high=1024, resolution=1.25, replicates=2, n_trials=14)
    low = [probe(4, 0.1, 0.1), probe(1024, 0.3, 0.3)]
    assert verdicts.threshold(low, run).outcome == "not shown"
    ok = [probe(4, 0.1, 0.1), probe(1024, 0.9, 0.9)]
    costly = ThresholdRun(0.5, 4, 1024, 1.25, 2, n_trials=40)
    assert verdicts.threshold(ok, costly).outcome == "partly"


# --- definitions and presets ------------------------------------------------------------------


def test_threshold_preset_keeps_data_train_and_budget_in_sync_with_fig2a_mini() -> None:
    grid = yaml.safe_load((PRESET_DIR / "fig2a-mini.yaml").read_text())
    thr = yaml.safe_load((PRESET_DIR / "fig2a-mini-threshold.yaml").read_text())
    for part in ("data", "train", "budget", "resources"):
        assert thr[part] == grid[part], f"{part}: resync fig2a-mini-threshold.yaml"
    spec = load_preset("fig2a-mini-threshold")
    assert spec.search.kind == "threshold" and spec.search.metric == STRICT
    assert spec.search.level == 0.5
    axis = next(a for a in load_preset("fig2a-mini").axes if a.field == "data.n_instructions")
    assert (spec.search.low, spec.search.high) == (min(axis.points()), max(axis.points()))


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_study_has_its_preset_and_smoke_settings_validate(name: str) -> None:
    study = STUDIES[name]
    spec = load_preset(study.preset)
    base = spec.model_dump(mode="json")
    smoke = ExperimentSpec.model_validate(_merge(base, smoke_overrides(study, spec)))
    assert smoke.seeds == (spec.seeds[0],)
    # one bisection of 3 probes per group of a frontier (`search.over`), else 3 trials
    groups = smoke.search.groups if isinstance(smoke.search, ThresholdSearch) else [{}]
    assert smoke.n_trials <= 3 * len(groups)
    assert smoke.train.max_steps == 3 and smoke.data.test.n_test == 16
    plans = smoke.trials()
    if study.is_threshold:  # the bracket's top end is a trial too, at every group
        high = round(smoke.search.high)  # type: ignore[union-attr]
        plans += [smoke.plan({**g, "data.n_instructions": high}) for g in groups]
    # A few hundred examples, or one per rule of the largest I (no-ops on top of that budget
    # make at most as many again: the no-op share is below 1/2 or equal to it; a frontier:
    # twice that at its larger budget).
    assert max(p.data.n_budget for p in plans) <= len(groups) * max(
        [SMOKE_EXAMPLES] + [p.data.n_instructions for p in plans]
    )
    assert all(p.data.n_train <= 2 * p.data.n_budget for p in plans)
    # The smoke run varies the preset's fields, and reaches both ends of every axis.
    assert set(smoke.varied_fields) == set(spec.varied_fields)
    for axis in spec.axes:
        for end in (axis.settings()[0], axis.settings()[-1]):
            assert any(
                end.items() <= p.cell.items() or _scaled(end, p.cell) for p in smoke.trials()
            ), (axis.label, end)
    if study.is_threshold:
        assert smoke.search.max_probes == 3  # type: ignore[union-attr]


def _scaled(end: dict[str, Any], cell: dict[str, Any]) -> bool:
    """The fine-tune axis's data sizes are scaled down in smoke runs; the rest must match."""
    return {k: v for k, v in end.items() if k != "data.n_examples"}.items() <= cell.items()


def test_select_keeps_the_documents_order_and_names_unknown_studies() -> None:
    assert [s.name for s in select("noops-mini,fig2a-mini")] == ["fig2a-mini", "noops-mini"]
    with pytest.raises(ValueError, match="unknown nope"):
        select("nope")


def test_named_axes_read_as_one_key() -> None:
    rows = [
        {"data.n_examples": 4000, "data.distribution": "uniform", "data.alpha": None, "n": 1},
        {"data.n_examples": 2000, "data.distribution": "power", "data.alpha": 0.3, "n": 1},
        {"data.n_examples": 2000, "data.distribution": "uniform", "data.alpha": None, "n": 1},
    ]
    assert [c["data"] for c in cells_of(STUDIES["finetune-mini"], rows)] == [
        "full",
        "half uniform",
        "half skewed",
    ]
    occ = cells_of(
        STUDIES["occurrences-mini"],
        [
            {"data.occurrences": "[1, 2, 3, 4]", "data.n_instructions": 64, "n": 1},
            {"data.occurrences": "[4]", "data.n_instructions": 64, "n": 1},
        ],
    )
    assert [c["occurrences"] for c in occ] == [(4,), (1, 2, 3, 4)]
    fam = cells_of(
        STUDIES["semantic-mini"],
        [
            {"data.family.kind": "mix", "data.family.k": "[3, 6]", "data.n_instructions": 64},
            {"data.family.kind": "mirror", "data.n_instructions": 64},
        ],
    )
    assert [c["family"] for c in fam] == ["mirror", "mix k=3–6"]


# --- rendering from a store -------------------------------------------------------------------


def _fill(store: Any, exp_id: str, spec: ExperimentSpec, acc: Any) -> None:
    """Complete trials of ``spec``'s grid with final metrics ``acc(plan)``."""
    store.create_experiment(
        exp_id, name=spec.name, spec_json=spec.spec_json, spec_hash=spec.spec_hash
    )
    for i, plan in enumerate(spec.trials()):
        tid = f"t{i}"
        store.put_trial(
            TrialRecord(
                exp_id,
                tid,
                plan.trial_key,
                json.dumps(plan.params),
                plan.data.content_hash,
                "complete",
            )
        )
        store.append_metrics(exp_id, tid, {"step": 1, **acc(plan)})
    store.set_experiment_status(exp_id, "complete")


#: fig2a-mini and its threshold search as they were when the expected figures below were
#: written (the presets themselves change with calibration).
FIG2A = {
    "name": "fig2a-mini",
    "description": "fixed budget",
    "data": {
        "alphabet": "abcdefgh",
        "z_len": [6, 6],
        "x_len": [2, 2],
        "y_len": [2, 2],
        "n_instructions": 16,
        "examples_per_instruction": 1000,
        "test": {"n_test": 100, "n_instructions": 100},
    },
    "train": {"model": "nano", "epochs": 1, "device": "cpu"},
    "budget": {"total_examples": 16000},
    "seeds": [0, 1],
    "max_concurrent": 2,
    "metric": "test_acc_op_new_x",
}
GRID = {**FIG2A, "axes": [{"field": "data.n_instructions", "values": [4, 16, 64, 256, 1024]}]}
THRESHOLD = {
    **FIG2A,
    "name": "fig2a-mini-threshold",
    "seeds": [0],
    "search": {
        "kind": "threshold",
        "axis": "data.n_instructions",
        "metric": "test_acc_op_new_x",
        "level": 0.5,
        "low": 4,
        "high": 1024,
        "replicates": 2,
        "resolution": 1.25,
    },
}


def test_render_writes_every_section_and_keeps_the_others_on_a_partial_rerun(
    tmp_path: Path,
) -> None:
    store = open_store(f"memory://studies-{uuid.uuid4().hex}")
    spec = ExperimentSpec.model_validate(GRID)
    acc = {4: 0.0, 16: 0.0, 64: 0.04, 256: 0.7, 1024: 0.95}
    _fill(
        store,
        "xfig",
        spec,
        lambda p: {
            "test_acc_op_new_x": acc[p.data.n_instructions] + 0.01 * p.seed,
            "test_acc_op": acc[p.data.n_instructions] + 0.02 * p.seed,
            "test_rules_op_new_x": 120 + p.seed,
            "fresh_acc": 0.99,
            "memo_acc": 1.0,
        },
    )
    out = tmp_path / "docs" / "RESULTS.md"
    index = ResultsIndex()
    index.last_run = RunInfo(
        1.8e9, "abc1234-dirty", {"nproc": 2, "memory_gib": 24, "torch_threads": 1}, ["fig2a-mini"]
    )
    index.studies["fig2a-mini"] = StudyRecord(
        "fig2a-mini",
        "complete",
        "xfig",
        spec=spec.model_dump(mode="json"),
        submitted_at=1.8e9,
        wall_s=455.0,
        commit="abc1234-dirty",
    )
    index.studies["finetune-mini"] = StudyRecord("finetune-mini", "skipped", error="no checkpoint")
    index.save(index_path(out))
    doc = render(ResultsIndex.load(index_path(out)), StoreSource(store), out)

    assert out.read_text() == doc and "do not edit by hand" in doc[:200]
    for name in STUDIES:
        assert f"## {name}: " in doc
    assert (
        "| 1024 | 15 | 2 | 0.955 ± 0.007 | 0.960 ± 0.014 | ≥ 120 | 0.990 ± 0.000 | 1.000 ± 0.000 |"
        in doc
    )
    assert "| 1024 | 15 | 0, 1 | 0.950, 0.960 | 0.990, 0.990 |" in doc  # per seed
    assert "**Verdict: effect shown.** unseen rules, new x: 0.01 at I=4" in doc
    assert "![fig2a-mini](img/results/fig2a-mini.png)" in doc
    assert (tmp_path / "docs" / "img" / "results" / "fig2a-mini.png").read_bytes()[:4] == b"\x89PNG"
    assert "7 min 35 s" in doc and "`abc1234-dirty`" in doc
    assert "**Skipped.** no checkpoint" in doc
    assert "Not run yet: `divsweep reproduce --studies noops-mini`" in doc
    assert re.search(
        r"\| \[fig2a-mini\]\(#fig2a-mini\) \| `xfig` \| complete \| 7 min 35 s \| "
        r"effect shown \|",
        doc,
    )

    # A later run of one more study re-renders the first from the store, unchanged.
    thr = ExperimentSpec.model_validate(THRESHOLD)
    probes = {4: 0.0, 1024: 0.9, 64: 0.1, 256: 0.6, 128: 0.3, 181: 0.55, 152: 0.4, 166: 0.45}
    store.create_experiment("xthr", name=thr.name, spec_json=thr.spec_json, spec_hash=thr.spec_hash)
    for j, (i, m) in enumerate(probes.items()):
        for seed in (0, 1):
            plan = thr.plan({"data.n_instructions": i, "seed": seed})
            tid = f"t{j}-{seed}"
            store.put_trial(
                TrialRecord(
                    "xthr",
                    tid,
                    plan.trial_key,
                    json.dumps(plan.params),
                    plan.data.content_hash,
                    "complete",
                )
            )
            metrics = {"step": 1, "test_acc_op_new_x": m + 0.02 * seed, "fresh_acc": 1.0}
            store.append_metrics("xthr", tid, metrics)
    store.set_experiment_status("xthr", "complete")
    index = ResultsIndex.load(index_path(out))
    index.studies["fig2a-mini-threshold"] = StudyRecord(
        "fig2a-mini-threshold", "complete", "xthr", spec=thr.model_dump(mode="json"), wall_s=60
    )
    again = render(index, StoreSource(store), out)
    first = doc.split("## fig2a-mini: ")[1].split("<a id=")[0]
    assert first in again
    assert "search: I* = 181 (test_acc_op_new_x >= 0.5), in (166, 181]; crossing of 0.5" in again
    assert "16 trials against 52" in again
    assert "the grid study's own crossing, 166, lies inside the interval: no" in again


SPARSE = {  # two cells on the diagonal of each grid, as the smoke runs measure them
    "fig2a-mini": [fig2a_cell(16, 0.0), fig2a_cell(1024, 0.0)],
    "noops-mini": [{"share": 0.1, "I": 16, "n": 1}, {"share": 0.5, "I": 1024, "n": 1}],
    "powerlaw-mini": [cell(alpha="uniform", I=256), cell(alpha=0.05, I=2048)],
    "semantic-mini": [cell(family="repeated", I=64), cell(family="mix", I=1024)],
    "occurrences-mini": [cell(occurrences=(1,), I=64), cell(occurrences=(1, 2), I=1024)],
    "finetune-mini": [cell(data="full"), cell(data="half skewed")],
}


@pytest.mark.parametrize("name", list(SPARSE))
def test_verdicts_judge_sparse_and_unmeasured_tables_without_failing(name: str) -> None:
    verdict = STUDIES[name].verdict
    assert verdict is not None
    for cells in (
        SPARSE[name],
        [{k: v for k, v in c.items() if not k.endswith("_values")} for c in SPARSE[name]],
    ):
        v = verdict(cells)
        assert v.outcome == "not shown" and v.reason, (name, v)
