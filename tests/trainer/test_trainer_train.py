"""The training loop: it learns, it reports, it resumes exactly."""

from __future__ import annotations

import json

import pytest

from data import generate
from trainer import ConfigError, TrainConfig
from trainer.checkpoint import LATEST, find_checkpoint
from trainer.evaluate import evaluate
from trainer.loop import train
from trainer.model import build_model

VOLATILE = {"tokens_per_s", "wall_s"}  # timings differ between runs; everything else must not


def easy_spec(small_spec):
    """Two rules, fixed lengths: positions line up, so a nano model learns it in ~300 steps."""
    return small_spec(
        n_instructions=2,
        examples_per_instruction=500,
        z_len=(4, 4),
        y_len=(2, 2),
        test={"n_test": 200, "n_instructions": 40},
    )


def test_learns_easy_task(make_spec):
    ds = generate(easy_spec(make_spec))
    cfg = TrainConfig(
        model="nano",
        max_steps=250,  # reaches 0.997-1.0 memo_acc with seeds 0, 1, 2 (0.98 by step 200)
        batch_size=64,
        lr=3e-3,
        warmup_steps=20,
        eval_every=125,
        eval_per_epoch=False,
        eval_test_n=200,
        eval_train_n=300,
        seed=0,
    )
    seen: list[tuple[dict, str | None]] = []
    result = train(cfg, ds, report=lambda m, c: seen.append((m, c)))
    assert result.metrics["memo_acc"] >= 0.95, result.history
    # its rules, not only its examples: training rules on inputs it never saw
    assert result.metrics["fresh_acc"] >= 0.9, result.history
    untrained = build_model(cfg, ds.vocab)
    assert evaluate(untrained, ds, "train", n=300).metrics["memo_acc"] < 0.05  # learned, not given
    assert evaluate(untrained, ds, "fresh").metrics["fresh_acc"] < 0.05
    assert [m for m, _ in seen] == result.history and all(c is None for _, c in seen)
    m = result.metrics
    assert (
        m["step"] == 250 and 0.95 * 250 * 64 < m["examples_seen"] <= 250 * 64
    )  # last batch of an epoch is short
    assert m["tokens_seen"] > m["examples_seen"] and m["tokens_per_s"] > 0 and m["wall_s"] > 0
    for key in (
        "test_acc",
        "test_acc_noop",
        "test_acc_op",
        "test_acc_occ_1",
        "test_acc_op_new_x",
        "test_n_op_new_x",
        "test_rules_op_new_x",
        "memo_acc_noop",
        "memo_acc_op",
        "fresh_acc",
        "fresh_acc_op",
        "fresh_acc_noop",
        "test_n",
        "memo_n",
        "fresh_n",
        "train_loss",
        "lr",
        "epoch",
    ):
        assert key in m, key
    assert all("/" not in k and isinstance(v, int | float) for k, v in m.items())
    assert "mfu" not in m and "peak_mem_gb" not in m  # CUDA only


def test_resume_reproduces_uninterrupted_run(small_ds, tmp_path):
    cfg = TrainConfig(
        model="nano",
        max_steps=24,
        batch_size=16,
        eval_every=8,
        dropout=0.1,
        eval_per_epoch=False,
        eval_test_n=40,
        eval_train_n=40,
        lr=3e-3,
        seed=5,
    )
    full = train(cfg, small_ds, checkpoint_dir=tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_at_16(metrics, checkpoint):
        if metrics["step"] == 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, small_ds, report=stop_at_16, checkpoint_dir=tmp_path / "cut")
    assert find_checkpoint(tmp_path / "cut").name == "ckpt-000000016"
    resumed_reports: list[dict] = []
    resumed = train(
        cfg,
        small_ds,
        report=lambda m, c: resumed_reports.append(m),
        checkpoint_dir=tmp_path / "cut",
    )
    assert [m["step"] for m in resumed_reports] == [24]
    strip = [{k: v for k, v in m.items() if k not in VOLATILE} for m in full.history]
    again = [{k: v for k, v in m.items() if k not in VOLATILE} for m in resumed.history]
    assert again == strip
    for a, b in zip(
        full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert a.equal(b)


def test_checkpoints_are_complete_and_reported(small_ds, tmp_path):
    cfg = TrainConfig(
        model="nano",
        max_steps=6,
        batch_size=16,
        eval_every=3,
        eval_per_epoch=False,
        eval_test_n=10,
        eval_train_n=0,
    )
    paths = []
    result = train(cfg, small_ds, report=lambda m, c: paths.append(c), checkpoint_dir=tmp_path)
    assert [p.split("/")[-1] for p in paths] == ["ckpt-000000003", "ckpt-000000006"]
    assert result.checkpoint == paths[-1]
    assert (tmp_path / LATEST).read_text() == "ckpt-000000006"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "ckpt-000000006"]
    meta = json.loads((tmp_path / "ckpt-000000006" / "meta.json").read_text())
    assert meta["step"] == 6 and len(meta["history"]) == 2
    assert "memo_acc" not in result.metrics  # eval_train_n=0 skips it
    # A finished run resumed again does no more steps.
    again = train(cfg, small_ds, checkpoint_dir=tmp_path)
    assert again.history == result.history


def test_resume_refuses_other_config(small_ds, tmp_path):
    cfg = TrainConfig(model="nano", max_steps=2, batch_size=16, eval_test_n=5, eval_train_n=0)
    train(cfg, small_ds, checkpoint_dir=tmp_path)
    from trainer import CheckpointError

    with pytest.raises(CheckpointError, match="different TrainConfig"):
        train(cfg.model_copy(update={"lr": 0.5}), small_ds, checkpoint_dir=tmp_path)


def test_epochs_and_token_batches(small_ds):
    cfg = TrainConfig(model="nano", epochs=2, batch_tokens=600, eval_test_n=10, eval_train_n=0)
    result = train(cfg, small_ds)
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    assert result.history[-1]["examples_seen"] == 2 * small_ds.train.num_rows


def test_sequence_longer_than_context_is_a_config_error(small_ds):
    cfg = TrainConfig(model="nano", n_positions=8, max_steps=1)
    with pytest.raises(ConfigError, match="n_positions: 8 is shorter than the longest sequence"):
        train(cfg, small_ds)


def test_loss_on_all_tokens_runs(small_ds):
    cfg = TrainConfig(
        model="nano", max_steps=3, batch_size=8, loss_on="all", eval_test_n=5, eval_train_n=5
    )
    out = train(cfg, small_ds, report=None)
    # Loss over prompts too: the prompt letters are random, so it stays well above the output loss.
    assert out.metrics["train_loss"] > 1.0
