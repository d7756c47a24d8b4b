"""Fake trial functions with known behaviour (same signature as `train_with_trainer`).

They are pickled by value (see conftest) so Ray workers need not import this test module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sweeps.specs.spec import TrialPlan

THRESHOLD = 37  # the fake accuracy jumps from ~0 to ~1 at this many instructions

Report = Any


def step_accuracy(plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str) -> None:
    """test_acc ~0.05 below THRESHOLD rules and ~0.95 from it on (a small seed-dependent wobble)."""
    n = plan.data.n_instructions
    wobble = 0.04 * math.sin(plan.seed + 1)
    acc = (0.95 if n >= THRESHOLD else 0.05) + wobble
    report({"step": 1, "test_acc": acc}, None)


#: The smoke frontier's fake phase boundary: I*(N) = FRONTIER_I0 * (N / FRONTIER_N0) ** 0.5.
FRONTIER_I0, FRONTIER_N0, FRONTIER_SLOPE = 10.0, 1000.0, 0.5


def frontier_threshold(n_examples: float) -> float:
    """Where `frontier_accuracy`'s mean over seeds crosses 0.5 at a budget of ``n_examples``."""
    return FRONTIER_I0 * (n_examples / FRONTIER_N0) ** FRONTIER_SLOPE


def frontier_accuracy(plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str) -> None:
    """The strict unseen-rule metric of a model that generalises past `frontier_threshold`:
    mean ``0.5 + 0.45 tanh(2 ln(I / I*(N)))`` (0.5 at I*, ~0.05 at I*/3, ~0.95 at 3 I*), each
    seed off by up to ±0.1 (a deterministic function of seed, I and N); training rules learnt."""
    n_rules, n_examples = plan.data.n_instructions, plan.data.n_budget
    mean = 0.5 + 0.45 * math.tanh(2 * math.log(n_rules / frontier_threshold(n_examples)))
    wobble = 0.1 * math.sin(7.3 * plan.seed + 1.7 * n_rules + n_examples / 997)
    acc = min(max(mean + wobble, 0.0), 1.0)
    report({"step": 1, "test_acc_op_new_x": acc, "fresh_acc": 1.0}, None)


def learning_curve(plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str) -> None:
    """Eight reports; the final score is best at lr = 10^-2.5 and falls off quadratically in log."""
    quality = 1.0 - (math.log10(plan.train.lr) + 2.5) ** 2 / 4
    for i in range(1, 9):
        report({"step": i, "score": quality * i / 8}, None)


def fail_on_many_rules(
    plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str
) -> None:
    """n_instructions >= 100: report once, then always raise (to test failed rows).

    Otherwise: the first attempt writes a checkpoint, reports it and crashes; the retry must find
    that checkpoint restored into ``checkpoint_dir`` and resumes from its step.
    """
    import json
    import os

    if plan.data.n_instructions >= 100:
        report({"step": 1, "test_acc": 0.5}, None)
        raise RuntimeError(f"fake failure at n_instructions={plan.data.n_instructions}")
    restored = os.path.join(checkpoint_dir, "meta.json")
    if os.path.exists(restored):
        with open(restored) as f:
            step = json.load(f)["step"]
        report({"step": step + 1, "test_acc": 0.9, "resumed": 1}, None)
        return
    ckpt = os.path.join(checkpoint_dir, "ckpt-000001")
    os.makedirs(ckpt)
    with open(os.path.join(ckpt, "meta.json"), "w") as f:
        json.dump({"step": 1}, f)
    report({"step": 1, "test_acc": 0.1, "resumed": 0}, ckpt)
    raise RuntimeError("crash after the first checkpoint")


def metrics_of(rows: list[Mapping[str, Any]], key: str) -> list[Any]:
    return [r[key] for r in rows if key in r]


def generate_then_report(
    plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str
) -> None:
    """Gets the data set the way the real trial does, then reports its size (no training)."""
    from data import cached_generate

    ds = cached_generate(plan.data, cache_dir)
    report({"step": 1, "train_rows": ds.train.num_rows}, None)


def slow_reports(plan: TrialPlan, report: Report, checkpoint_dir: str, cache_dir: str) -> None:
    """Twenty reports half a second apart (something to cancel)."""
    import time

    for i in range(1, 21):
        time.sleep(0.5)
        report({"step": i, "test_acc": 0.0}, None)


def paced_trainer(
    plan: TrialPlan,
    report: Report,
    checkpoint_dir: str,
    cache_dir: str,
    *,
    markers: str,
    pace_s: float = 0.5,
) -> None:
    """The real trial (data + `trainer.train`), with a pause after each report.

    The pause changes no number; it only widens the window in which a fault test kills things
    mid-trial. Each attempt leaves ``<markers>/<trial_key[:12]>-<pid>.json`` saying which step it
    resumed from (0: from scratch) and on which Ray node it runs, so a test can tell a resumed
    attempt from a restart and knows which node to kill.
    """
    import json
    import os
    import time

    import ray

    from sweeps.running.trainable import train_with_trainer

    resumed = 0
    meta = os.path.join(checkpoint_dir, "meta.json")
    if os.path.exists(meta):
        with open(meta) as f:
            resumed = int(json.load(f)["step"])
    os.makedirs(markers, exist_ok=True)
    with open(os.path.join(markers, f"{plan.trial_key[:12]}-{os.getpid()}.json"), "w") as f:
        json.dump(
            {
                "resumed_from": resumed,
                "time": time.time(),
                "node_id": ray.get_runtime_context().get_node_id(),
            },
            f,
        )

    def paced(metrics: Mapping[str, Any], checkpoint: str | None) -> None:
        report(metrics, checkpoint)
        time.sleep(pace_s)

    train_with_trainer(plan, paced, checkpoint_dir, cache_dir)
