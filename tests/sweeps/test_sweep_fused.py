"""Fused trials on a real local Ray: groups of compatible grid trials train as one model, and the
store still holds one trial per member, with the numbers a separate run gives."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import in_process_ray, tiny_spec

from sweeps import open_store, spec_from_dict
from sweeps.running.driver import run_experiment
from sweeps.running.fusing import fuse_groups, fuse_width
from sweeps.running.trainable import FusedReport, TrialPlan, train_fused_with_trainer
from sweeps.specs.spec import SpecError

# Four cells at a fixed budget of 80 examples: every trial trains 10 steps, so all four fuse.
AXES = [{"field": "data.n_instructions", "values": [4, 8, 10, 20]}]
TRAIN = {"model": "nano", "epochs": 2, "batch_size": 16, "device": "cpu", "eval_test_n": 20}
VOLATILE = {"wall_s", "tokens_per_s", "fused_members", "time_total_s", "mfu"}


def crash_once(
    plans: list[TrialPlan], report: FusedReport, checkpoint_dir: str, cache_dir: str, *, flag: str
) -> None:
    """The real fused trainer, which dies right after its first report on the first attempt."""

    def report_then_die(metrics: Any, checkpoint: str | None) -> None:
        report(metrics, checkpoint)
        if not os.path.exists(flag):
            Path(flag).touch()
            raise RuntimeError("injected crash after the first evaluation")

    train_fused_with_trainer(plans, report_then_die, checkpoint_dir, cache_dir)


@pytest.fixture(scope="module")
def ray2() -> Iterator[None]:
    with in_process_ray(num_cpus=2, ship=(__import__(__name__),)):
        yield


@pytest.fixture(scope="module")
def separate(ray2: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The four trials run one by one (fusing off): what each fused member must equal."""
    root = tmp_path_factory.mktemp("separate")
    store_uri, cache = str(root / "store"), str(root / "cache")
    run_experiment(_spec(1), "apart", store_uri, verbose=0, cache_dir=cache)
    return {"trials": _by_key(open_store(store_uri), "apart"), "cache": cache}


def _spec(fuse: Any, **kw: Any):
    fields = {
        "name": "fused",
        "axes": AXES,
        "budget": {"total_examples": 80},
        "train": TRAIN,
        "reuse": False,
        "resources": {"cpus": 1, "fuse": fuse},
        **kw,
    }
    return spec_from_dict(tiny_spec(**{k: v for k, v in fields.items() if v is not None}))


def _by_key(store: Any, exp_id: str) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    metrics: dict[str, list[dict[str, Any]]] = {}
    for m in store.get_metrics(exp_id):
        metrics.setdefault(m.trial_id, []).append(m.metrics)
    return {t.trial_key: (t, metrics.get(t.trial_id, [])) for t in store.get_trials(exp_id)}


def _same_numbers(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b) == 2
    for ma, mb in zip(a, b, strict=True):
        keys = set(ma) - VOLATILE
        assert keys == set(mb) - VOLATILE
        for k in keys:
            if k.endswith("loss"):
                assert mb[k] == pytest.approx(ma[k], rel=1e-4), k
            else:
                assert mb[k] == ma[k], k


def test_groups_follow_width_and_compatibility() -> None:
    spec = _spec(3)
    groups = fuse_groups(spec, spec.trials())
    assert [len(g) for g in groups] == [2, 2]  # 4 trials at width 3: two even groups
    assert fuse_width(_spec(None)) == 1  # unset without gpu: auto: off
    assert fuse_width(_spec("auto")) == 16
    # A cell with another number of training examples has other steps: it runs alone.
    odd = _spec(4, budget=None, axes=[{"field": "data.n_instructions", "values": [4, 8, 10]}])
    assert sorted(len(g) for g in fuse_groups(odd, odd.trials())) == [1, 1, 1]
    with pytest.raises(SpecError, match="resources.fuse: fusing trials needs a grid search"):
        space = {"train.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2}}
        _spec(4, axes=None, budget=None, search={"kind": "optuna", "n_trials": 2, "space": space})
    with pytest.raises(SpecError, match="resources.fuse: train cannot be fused: dropout"):
        spec_from_dict(tiny_spec(train={**TRAIN, "dropout": 0.1}, resources={"fuse": 2}))


def test_fused_sweep_stores_each_member_like_a_separate_trial(
    separate: dict[str, Any], tmp_path: Path
) -> None:
    store_uri = str(tmp_path / "store")
    run_experiment(_spec(4), "fused", store_uri, verbose=0, cache_dir=separate["cache"])
    store = open_store(store_uri)
    apart, fused = separate["trials"], _by_key(store, "fused")
    assert set(apart) == set(fused) and len(fused) == 4
    ids = sorted(t.trial_id for t, _ in fused.values())
    assert len({i.rsplit("-m", 1)[0] for i in ids}) == 1  # one Tune trial ...
    assert sorted(i.rsplit("-m", 1)[1] for i in ids) == ["0", "1", "2", "3"]  # ... four members
    for key, (t, rows) in fused.items():
        assert t.state == "complete"
        assert t.params_json == apart[key][0].params_json
        assert [r["training_iteration"] for r in rows] == [1, 2]
        assert all(r["fused_members"] == 4 for r in rows)
        _same_numbers(apart[key][1], rows)
    assert store.progress("fused")["complete"] == 4


def test_fused_trial_resumes_from_its_tune_checkpoint_after_a_crash(
    separate: dict[str, Any], tmp_path: Path
) -> None:
    store_uri = str(tmp_path / "store")

    def fake_single(*args: Any) -> None:  # never called: every trial is in the fused group
        raise AssertionError("a trial ran outside its fused group")

    run_experiment(
        _spec(4, retries=1),
        "crashy",
        store_uri,
        verbose=0,
        cache_dir=separate["cache"],
        trial_fn=fake_single,
        fused_fn=partial(crash_once, flag=str(tmp_path / "crashed")),
    )
    assert (tmp_path / "crashed").exists()
    store = open_store(store_uri)
    apart, crashy = separate["trials"], _by_key(store, "crashy")
    for key, (t, rows) in crashy.items():
        assert t.state == "complete", (t.state, t.error)
        # The first evaluation is stored once; the resumed run added only the second.
        assert [r["step"] for r in rows] == [5, 10]
        _same_numbers(apart[key][1], rows)
    assert json.loads(next(iter(crashy.values()))[0].params_json)["seed"] == 0


def test_auto_width_is_what_fits_the_gpu_by_the_fused_estimate() -> None:
    from sweeps.running.packing import gpu_share, largest_estimate

    probe = _spec(None, resources={"cpus": 1, "gpu": "auto"})
    one = largest_estimate(probe)
    fused3 = one.fused(3)
    # Members stack, the CUDA context does not.
    assert fused3.total == 3 * (one.total - one.overhead) + one.overhead
    # A GPU that holds three members with the 25 % headroom, but not four.
    gb = fused3.total * 1.25 * 1.001 / 2**30
    assert one.fused(4).total * 1.25 > gb * 2**30
    spec = _spec(None, resources={"cpus": 1, "gpu": "auto", "gpu_memory_gb": gb})
    assert spec.resources.fuse_mode == "auto"  # implied by gpu: auto
    assert fuse_width(spec) == 3
    assert [len(g) for g in fuse_groups(spec, spec.trials())] == [2, 2]
    assert gpu_share(spec, members=3) == 1.0  # the group takes the GPU it was sized for
