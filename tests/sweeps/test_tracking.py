"""Experiment trackers through Tune's logger callbacks: real MLflow and W&B, offline (issue 14).

One sweep of 4 fake trials (8 reports each) with both trackers on, in an in-process Ray; then
MLflow's own client reads the local file store and the W&B offline run directories are read
from disk: one run per trial, every report's metric, the trial's parameters.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakes
import pytest
from conftest import tiny_spec

from sweeps import spec_from_dict
from sweeps.errors import SpecError
from sweeps.running.driver import run_experiment
from sweeps.specs.tracking import Tracking, check_installed, missing
from sweeps.store import open_store

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.mark.slow
def test_mlflow_and_wandb_get_every_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    for var in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "")  # unset (the default, offline), restored afterwards
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = spec_from_dict(
        tiny_spec(
            name="tracked",
            axes=[{"field": "train.lr", "values": [1e-3, 1e-2]}],
            seeds=[0, 1],
            tracking={"mlflow": True, "wandb": True, "project": "divsweep-test"},
            max_concurrent=2,
        )
    )
    uri = str(tmp_path / "store")
    exp = run_experiment(spec, "tracked-1", uri, trial_fn=fakes.learning_curve, verbose=0)
    trials = open_store(uri).get_trials(exp)
    assert len(trials) == 4 and {t.state for t in trials} == {"complete"}
    tune_dir = tmp_path / "store" / "tune"

    client = MlflowClient(tracking_uri=f"sqlite:///{tune_dir / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("divsweep-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    logged = []
    for run in runs:
        # the trial config as Tune holds it: a grid trial's parameters under "params"
        params = run.data.params
        lr, seed = float(params["params/train.lr"]), int(params["params/seed"])
        logged.append((lr, seed))
        history = client.get_metric_history(run.info.run_id, "score")
        # every report, each with the value the trial reported at its step
        assert [round(m.value, 9) for m in sorted(history, key=lambda m: m.step)] == _scores(lr)
        assert run.data.tags["divsweep.spec"] == "tracked"
    assert sorted(logged) == GRID, logged  # each value of the axis, with each seed

    offline = sorted((tune_dir / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 4, os.listdir(tune_dir / "wandb" / "wandb")
    logged = []
    for path in offline:
        recs = list(_wandb_records(path))
        history = [
            {i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
            for r in recs
            if r.WhichOneof("record_type") == "history"
        ]
        config = {
            i.key: json.loads(i.value_json)
            for r in recs
            if r.WhichOneof("record_type") == "config"
            for i in r.config.update
        }
        params = config["params"]  # the trial's parameters
        lr, seed = float(params["train.lr"]), int(params["seed"])
        logged.append((lr, seed))
        # every report, each with the value the trial reported
        assert [round(float(h["score"]), 9) for h in history] == _scores(lr), history
    assert sorted(logged) == GRID, logged


#: the grid's (train.lr, seed) pairs, each of which must reach each tracker once
GRID = [(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)]


def _scores(lr: float) -> list[float]:
    """What `fakes.learning_curve` reports at steps 1..8 for ``lr``."""
    quality = 1.0 - (math.log10(lr) + 2.5) ** 2 / 4
    return [round(quality * i / 8, 9) for i in range(1, 9)]


def _wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline ``.wandb`` file (W&B's LevelDB-style log: a 7-byte
    header, then 32 KiB blocks of chunks with a crc32, a length and a FULL/FIRST/MIDDLE/LAST
    type); offline runs have no other local record of what was logged."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_a_tracker_that_is_not_installed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    t = Tracking(mlflow=True, wandb=True)
    assert [f for f, _ in missing(t)] == ["tracking.wandb"]
    with pytest.raises(SpecError, match=r"tracking.wandb: .*divsweep\[wandb\]"):
        check_installed(t)
    assert missing(Tracking()) == []
