"""`sweeps.reporting.plan`: the arithmetic against hand-computed cases, and both plan commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_spec
from typer.testing import CliRunner

from data import DataSpec, generate
from data.spec import RuleFamily
from data.vocab import Vocab
from service import cli
from sweeps.__main__ import main
from sweeps.reporting.plan import (
    Throughput,
    length_distribution,
    load_with_overrides,
    plan_experiment,
    tokens_per_example,
    trial_cost,
)
from sweeps.specs.model_size import gpt2_params
from sweeps.specs.presets import load_preset
from sweeps.specs.spec import spec_from_dict
from trainer.config import ModelDims, TrainConfig

H100_40 = 0.4 * 989e12  # the default assumption, FLOP/s


def test_tokens_per_example_by_hand() -> None:
    # x 2..3 (2.5), y 1..2 (1.5), z 4..8 (6, x always fits), half no-ops:
    # x + y + z + output + 4 specials = 2.5 + 1.5 + 6 + (6 + 0.5 * (1.5 - 2.5)) + 4
    spec = DataSpec(
        alphabet="abcdefgh",
        z_len=(4, 8),
        x_len=(2, 3),
        y_len=(1, 2),
        n_instructions=10,
        examples_per_instruction=10,
        noop_fraction=0.5,
    )
    assert tokens_per_example(spec) == pytest.approx(19.5)
    # occurrences 1 and 3 over z 4..9: one copy E[z] = 6.5; three copies of a 2-letter x
    # need z >= 6 (7.5), of a 3-letter x z = 9 (9): E[z] = (6.5 + (7.5 + 9) / 2) / 2 = 7.375
    spec = spec.with_updates(z_len=(4, 9), noop_fraction=0.0, occurrences=(1, 3))
    assert tokens_per_example(spec) == pytest.approx(2.5 + 1.5 + 7.375 + 6.375 + 4)


def test_tokens_per_example_is_close_to_generated_data() -> None:
    spec = DataSpec(
        alphabet="abcdefghij",
        z_len=(10, 50),
        x_len=(2, 20),
        y_len=(1, 20),
        n_instructions=500,
        examples_per_instruction=8,
        noop_fraction=0.3,
        test={"n_test": 10},
    )
    measured = float(generate(spec).encoded("train").lengths.mean())
    assert tokens_per_example(spec) == pytest.approx(measured, rel=0.03)


def test_family_lengths() -> None:
    # repeated, k in 2..3, strings of 2..6: k=2 gives 2, 4, 6; k=3 gives 3, 6 (half each)
    dist = length_distribution(RuleFamily(kind="repeated", k=(2, 3)), 2, 6)
    assert dist == pytest.approx({2: 1 / 6, 4: 1 / 6, 6: 1 / 6 + 1 / 4, 3: 1 / 4})


def test_gpt2_params_match_the_built_model() -> None:
    from trainer.model import build_model
    from trainer.perf import count_params

    assert gpt2_params(ModelDims(6, 4, 256, 256), 31) == 4_812_544  # the paper model, 26 letters
    cfg = TrainConfig(model="nano", epochs=1, n_positions=40)
    vocab = Vocab.build("abcdefgh")
    assert count_params(build_model(cfg, vocab)) == gpt2_params(cfg.dims, vocab.size)


def test_fig2a_cell_by_hand() -> None:
    trial = next(t for t in load_preset("fig2a").trials() if t.data.n_instructions == 1000)
    cost = trial_cost(trial, 1, Throughput.at_mfu())
    tok_ex = 11 + 10.5 + 2 * 31.447368 + (10.5 - 11) + 4  # see the sweeps.reporting.plan docstring
    tokens = 1_000_000 * 50 * tok_ex
    flops = (6 * 4_812_544 + 12 * 6 * 256 * tok_ex) * tokens
    assert cost.examples == 50_000_000 and cost.n_params == 4_812_544
    assert cost.tokens == pytest.approx(tokens) and cost.flops == pytest.approx(flops, rel=1e-6)
    assert cost.gpu_hours == pytest.approx(flops / H100_40 / 3600, rel=1e-6)
    assert cost.gpu_hours == pytest.approx(0.0941, abs=1e-4)
    assert trial_cost(trial, 1, Throughput.measured(2e6)).gpu_hours == pytest.approx(
        tokens / 2e6 / 3600
    )


def test_totals_add_cells_times_seeds() -> None:
    spec = spec_from_dict(
        tiny_spec(
            axes=[{"field": "data.n_instructions", "values": [10, 20]}],
            budget={"total_examples": 100},
            seeds=[0, 1, 2],
        )
    )
    plan = plan_experiment(spec)
    assert plan.n_trials == 6 and not plan.at_most
    assert [c.n_trials for c in plan.cells] == [3, 3]
    assert [c.cell for c in plan.cells] == [
        {"data.n_instructions": 10},
        {"data.n_instructions": 20},
    ]
    tot = plan.totals
    assert tot["examples"] == 6 * 100  # one epoch of 100 examples per trial
    assert tot["gpu_hours"] == pytest.approx(sum(3 * (c.gpu_hours or 0) for c in plan.cells))


def test_threshold_search_is_priced_at_its_maximum() -> None:
    spec = load_preset("smoke-threshold")
    plan = plan_experiment(spec)
    assert plan.at_most and plan.n_trials == spec.n_trials
    assert [c.n_trials for c in plan.cells] == [spec.n_trials]
    assert any("at most" in n for n in plan.notes)


def test_pretrained_checkpoint_counted_on_the_meta_device(tmp_path: Path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=50).save_pretrained(
        tmp_path
    )
    spec = spec_from_dict(tiny_spec(train={"model": None, "init": str(tmp_path), "epochs": 1}))
    cost = plan_experiment(spec).cells[0]
    assert cost.n_params == gpt2_params(ModelDims(1, 2, 32, 64), 50)
    assert cost.gpu_hours is not None and cost.gpu_hours > 0


def test_builtin_init_is_sized_without_building_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``init: divsweep:<name>`` names no directory: the plan sizes the registered model on the
    meta device, and equals the parameter count of a real build."""
    from trainer.builtin import BUILTINS
    from trainer.perf import count_params
    from trainer.pretrain import build_lm, build_tokenizer

    monkeypatch.setenv("DIVSWEEP_MODEL_CACHE", str(tmp_path))  # nothing may be built
    spec = spec_from_dict(
        tiny_spec(train={"model": None, "init": "divsweep:smoke-lm", "epochs": 1})
    )
    plan = plan_experiment(spec)
    tok = build_tokenizer()
    real = build_lm(BUILTINS["smoke-lm"], len(tok), tok.eos_token_id, tok.pad_token_id)
    assert plan.cells[0].n_params == count_params(real)
    assert plan.cells[0].gpu_hours is not None and plan.cells[0].gpu_hours > 0
    assert not any("parameters unknown" in n for n in plan.notes)
    assert list(tmp_path.iterdir()) == []


def test_load_with_overrides() -> None:
    spec = load_with_overrides("fig2a", ["train.epochs=2", "seeds=[0, 1]", "description=x"])
    assert spec.train.epochs == 2 and spec.seeds == (0, 1) and spec.description == "x"


def test_cli_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "fig2a"]) == 0
    out = capsys.readouterr().out
    for text in (
        "16 trials = 16 cells x 1 seed",
        "4,812,544 parameters",
        "87.9",
        "4.39e9",
        "1.34e17",
        "0.0941",
        "799,975,000",
        "2.14e18",
        "1.51",
        "H100 bf16 at 40% MFU of 989 TFLOP/s",
        "estimate",
    ):
        assert text in out, text
    assert (
        main(["plan", "fig2a-mini", "--throughput", "15000", "--json", "--set", "train.epochs=8"])
        == 0
    )
    plan = json.loads(capsys.readouterr().out)
    assert plan["n_trials"] == 12 and plan["cells"][0]["budget"] == "8 epochs"  # 4 I x 3 seeds
    assert plan["throughput"].startswith("15,000 training tokens/s")
    assert plan["totals"]["gpu_hours"] == pytest.approx(plan["totals"]["tokens"] / 15000 / 3600)


def test_cli_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert "no preset 'no-such-preset'" in err and "fig2a-mini" in err
    assert main(["plan", "fig2a", "--set", "train.epochs"]) == 2
    assert "expected FIELD.PATH=VALUE" in capsys.readouterr().err
    assert main(["plan", "fig2a", "--throughput", "0"]) == 2
    assert main(["plan", "fig2a", "--set", "train.epochs=0"]) == 2
    assert "epochs: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_divsweep_plan_calls_into_sweeps() -> None:
    run = CliRunner()
    r = run.invoke(cli.app, ["plan", "fig2a", "--throughput", "2e6"])
    assert r.exit_code == 0, r.output
    assert "4,812,544 parameters" in r.output and "2,000,000 training tokens/s" in r.output
    r = run.invoke(cli.app, ["plan", "finetune", "--params", "6.74e9", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["totals"]["gpu_hours"] > 0
    r = run.invoke(cli.app, ["plan", "nope"])
    assert r.exit_code == 2 and "no preset 'nope'" in r.output


def test_plan_needs_no_ray() -> None:
    code = (
        "import sys; from sweeps.__main__ import main; rc = main(['plan', 'smoke']); "
        "assert rc == 0 and 'ray' not in sys.modules, sorted(sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
