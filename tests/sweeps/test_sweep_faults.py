"""Faults on a multi-node Ray cluster started here (`ray.cluster_utils.Cluster`): a worker node
dies mid-trial, the driver dies mid-experiment. Trials are the real trainer at smoke size.

The head node has no CPUs, so every trial runs on a worker node that the test can kill. Trials
pause after each report (`fakes.paced_trainer`; the numbers are unchanged) so that the kill lands
mid-trial, after a checkpoint, on any machine speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import fakes
import pytest
import torch

from data import generate
from sweeps import spec_from_dict
from sweeps.errors import UnknownExperimentError
from sweeps.running.driver import run_experiment
from sweeps.specs.spec import ExperimentSpec, TrialPlan
from sweeps.store import ResultsStore, open_store
from trainer.loop import train

# Its cluster (a CPU-less head, worker nodes added and killed) does not share a process with the
# in-process local Rays of other modules: after one of them, its trials were never scheduled.
pytestmark = [pytest.mark.slow, pytest.mark.isolated]

HERE = Path(__file__).parent
MAX_STEPS, EVAL_EVERY = 40, 10
#: Metrics that measure the machine, not the model; they differ between any two runs.
TIMING = {"tokens_per_s", "wall_s", "time_total_s", "training_iteration"}


def fault_spec(name: str, n_instructions: list[int], **kw: Any) -> ExperimentSpec:
    return spec_from_dict(
        {
            "name": name,
            "data": {
                "alphabet": "abcdefgh",
                "z_len": [4, 8],
                "x_len": [2, 3],
                "y_len": [1, 3],
                "n_instructions": 8,
                "examples_per_instruction": 40,
                "test": {"n_test": 24},
            },
            "train": {
                "model": "nano",
                "n_positions": 64,
                "max_steps": MAX_STEPS,
                "eval_every": EVAL_EVERY,
                "eval_per_epoch": False,
                "batch_size": 16,
                "lr": 3e-3,
                "device": "cpu",
                "eval_test_n": 24,
                "eval_train_n": 8,
                "eval_batch_size": 32,
            },
            "axes": [{"field": "data.n_instructions", "values": n_instructions}],
            "reuse": False,
            **kw,
        }
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A head node without CPUs (GCS, no dashboard); tests add and remove worker nodes."""
    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    c = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": 100 * 1024 * 1024,
        },
    )
    cloudpickle.register_pickle_by_value(fakes)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _metrics(store: ResultsStore, exp: str) -> list[Any]:
    try:
        return store.get_metrics(exp)
    except UnknownExperimentError:
        return []


def _undisturbed_final(plan: TrialPlan) -> dict[str, Any]:
    """The final report of the same trial trained start to end in this process."""
    rows: list[dict[str, Any]] = []
    # One thread, as Ray gives a 1-CPU trial (OMP_NUM_THREADS=1): other thread counts sum in
    # another order and the losses then differ in the 7th digit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(plan.train, generate(plan.data), report=lambda m, c: rows.append(dict(m)))
    finally:
        torch.set_num_threads(threads)
    return rows[-1]


def _markers(markers: Path, trial_key: str) -> list[dict[str, Any]]:
    """One entry per attempt of the trial (see `fakes.paced_trainer`), in start order."""
    found = [json.loads(p.read_text()) for p in markers.glob(f"{trial_key[:12]}-*.json")]
    return sorted(found, key=lambda m: m["time"])


def _same_numbers(got: dict[str, Any], want: dict[str, Any]) -> None:
    got = {k: v for k, v in got.items() if k not in TIMING}
    want = {k: v for k, v in want.items() if k not in TIMING}
    assert got == want


def _check_reports(store: ResultsStore, exp: str, trial_id: str) -> list[Any]:
    rows = [m.metrics for m in store.get_metrics(exp) if m.trial_id == trial_id]
    assert [r["step"] for r in rows] == list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))
    return rows


def test_worker_node_dies_mid_trial_and_the_trial_resumes_on_another(
    cluster: Any, tmp_path: Path
) -> None:
    import ray

    # Two one-CPU worker nodes; the trial lands on one of them, which is then killed. (Nodes
    # are added here: cluster_utils cannot start a node from another thread.)
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    spec = fault_spec("nodeloss", [8], retries=2)
    plan = spec.trials()[0]
    uri, markers, exp = str(tmp_path / "store"), tmp_path / "markers", "nodeloss-1"
    killed: dict[str, Any] = {}

    def kill_the_trials_node_after_two_reports() -> None:
        store = open_store(uri)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rows = _metrics(store, exp)
            if len(rows) >= 2:
                node_id = _markers(markers, plan.trial_key)[0]["node_id"]
                [victim] = [n for n in nodes if n.node_id == node_id]
                cluster.remove_node(victim, allow_graceful=False)
                killed.update(after_step=rows[-1].metrics["step"], node=victim)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_trials_node_after_two_reports, daemon=True)
    killer.start()
    try:
        run_experiment(
            spec, exp, uri, verbose=0, trial_fn=partial(fakes.paced_trainer, markers=str(markers))
        )
    finally:
        killer.join(timeout=60)
        ray.shutdown()
        for n in nodes:
            if n is not killed.get("node"):
                cluster.remove_node(n)
    assert "after_step" in killed, "the trial ended before the node could be killed"
    store = open_store(uri)
    [trial] = store.get_trials(exp)
    assert trial.state == "complete", trial.error
    # Two attempts on two nodes; the second started from a checkpoint no older than the last
    # stored report.
    attempts = _markers(markers, trial.trial_key)
    assert [a["resumed_from"] for a in attempts][:1] == [0] and len(attempts) == 2
    assert attempts[1]["resumed_from"] >= killed["after_step"]
    assert attempts[1]["node_id"] != attempts[0]["node_id"]
    # Every report stored once, and the final numbers equal an undisturbed run's.
    rows = _check_reports(store, exp, trial.trial_id)
    _same_numbers(rows[-1], _undisturbed_final(plan))


def test_driver_dies_and_resubmitting_the_id_restores_without_rerunning(
    cluster: Any, tmp_path: Path
) -> None:
    node = cluster.add_node(num_cpus=1)
    spec = fault_spec("driverloss", [8, 16], max_concurrent=1, retries=1)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.spec_json)
    uri, markers, exp = str(tmp_path / "store"), tmp_path / "markers", "driverloss-1"
    env = dict(
        os.environ,
        RAY_ADDRESS=cluster.address,
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    cmd = [sys.executable, str(HERE / "fault_driver.py"), str(spec_file), exp, uri, str(markers)]
    log = open(tmp_path / "driver.log", "ab")  # noqa: SIM115 - closed below
    store = open_store(uri)
    try:
        first = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # Kill it once one trial is complete and the other has reported twice.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.poll() is None:
            trials = store.get_trials(exp) if store.has_experiment(exp) else []
            done = [t for t in trials if t.state == "complete"]
            others = {m.trial_id for m in _metrics(store, exp)} - {t.trial_id for t in done}
            if done and any(
                sum(m.trial_id == o for m in _metrics(store, exp)) >= 2 for o in others
            ):
                break
            time.sleep(0.1)
        assert first.poll() is None, "the driver ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = time.time()
        [finished_before] = [t for t in store.get_trials(exp) if t.state == "complete"]
        second = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        assert second.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        log.close()
        cluster.remove_node(node)
    assert store.get_experiment(exp).status == "complete"
    trials = {t.trial_id: t for t in store.get_trials(exp)}
    assert [t.state for t in trials.values()] == ["complete", "complete"]
    # The trial that had finished was not trained again and stored nothing after the kill. (If
    # the kill beat Tune's next state snapshot, Tune still lists it as running and resumes it
    # from its final checkpoint: an attempt that starts at the last step and trains nothing.)
    again = _markers(markers, finished_before.trial_key)[1:]
    assert all(a["resumed_from"] == MAX_STEPS for a in again), again
    assert all(
        m.time < killed_at for m in store.get_metrics(exp) if m.trial_id == finished_before.trial_id
    )
    _check_reports(store, exp, finished_before.trial_id)
    # The interrupted one resumed from its checkpoint in the restored experiment, each report
    # stored once, with the numbers of an undisturbed run.
    [other] = [t for t in trials.values() if t.trial_id != finished_before.trial_id]
    attempts = _markers(markers, other.trial_key)
    # It resumes from the checkpoint Tune's last state snapshot knew of (from scratch when the
    # kill came before that snapshot); either way it is retried once.
    assert len(attempts) == 2 and attempts[0]["resumed_from"] == 0
    rows = _check_reports(store, exp, other.trial_id)
    _same_numbers(rows[-1], _undisturbed_final(spec.plan(other.params)))
