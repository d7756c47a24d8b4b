"""divsweep's own pretrained model: deterministic builds, the builtin name, a LoRA fine-tune.

Everything here uses the ``smoke-lm`` builtin (a one-layer model, 20 steps: about two seconds to
build on one core) in a temporary model cache; ``tiny-lm`` itself is only built by the study.
"""

from __future__ import annotations

import json

import pytest
import torch

from trainer import ConfigError, LoraSpec, TrainConfig
from trainer.builtin import (
    BUILTINS,
    build_atomically,
    build_dir,
    builtin_spec,
    is_builtin,
    resolve_init,
)
from trainer.loop import train
from trainer.pretrain import CHARSET, corpus, weights_sha256
from trainer.pretrain_spec import MANIFEST, PretrainSpec

SMOKE = BUILTINS["smoke-lm"]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A private model cache holding the smoke builtin, built once for this module."""
    cache = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVSWEEP_MODEL_CACHE", str(cache))
        resolve_init("divsweep:smoke-lm")
        yield cache


def test_corpus_is_a_pure_function_of_the_spec_and_right():
    prompts, outputs = corpus(SMOKE)
    assert (prompts, outputs) == corpus(SMOKE)
    assert corpus(SMOKE.model_copy(update={"seed": 1})) != (prompts, outputs)
    assert len(prompts) == SMOKE.n_examples
    # operations take turns; each output follows from its prompt
    for p, o in zip(prompts[:60], outputs[:60], strict=True):
        instr, z = p[:-1].split("|")
        if instr == "":
            assert o == z
        elif instr == "<":
            assert o == z[::-1]
        elif instr[0] == "-":
            assert o == z.replace(instr[1], "")
        elif instr[0] == "+":
            assert o == z + instr[1:]
        elif instr[0] == "^":
            assert o == instr[1:] + z
        else:
            c, d = instr.split(">")
            assert o == z.replace(c, d)
        assert "→" not in p  # the fine-tune's operator is never pretrained


def test_build_is_deterministic_and_round_trips_through_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = build_atomically(SMOKE, tmp_path / "a")
    b = build_atomically(SMOKE, tmp_path / "b")
    assert a["content_hash"] == b["content_hash"] == SMOKE.content_hash
    assert a["weights_sha256"] == b["weights_sha256"] == weights_sha256(tmp_path / "a")
    assert a["loss_every_100_steps"] == b["loss_every_100_steps"]
    assert not list(tmp_path.glob("*.tmp-*"))  # built aside, then renamed into place

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a", local_files_only=True)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "b", local_files_only=True)
    for (name, p), (_, q) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(p, q), name
    tok = AutoTokenizer.from_pretrained(tmp_path / "a", local_files_only=True)
    text = "ab→c|zzabz=zzcz"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.unk_token_id not in ids  # one token per character
    assert tok.decode(ids) == text
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert len(tok) == 3 + len(CHARSET)
    ids_t = torch.tensor([ids])
    assert model(input_ids=ids_t).logits.shape == (1, len(ids), len(tok))


def test_the_hash_follows_every_setting():
    assert SMOKE.content_hash != SMOKE.model_copy(update={"seed": 1}).content_hash
    assert SMOKE.content_hash != SMOKE.model_copy(update={"steps": 21}).content_hash
    assert PretrainSpec().content_hash == BUILTINS["tiny-lm"].content_hash


def test_builtin_name_resolves_to_its_cached_build(model_cache, monkeypatch):
    path = resolve_init("divsweep:smoke-lm")
    assert path == build_dir("smoke-lm", SMOKE, model_cache)
    assert path.name == f"smoke-lm-{SMOKE.content_hash[:16]}"
    info = json.loads((path / MANIFEST).read_text())
    assert info["content_hash"] == SMOKE.content_hash
    # A second resolution reuses the build: nothing is pretrained again.
    monkeypatch.setattr("trainer.pretrain.pretrain", lambda *a, **k: pytest.fail("rebuilt"))
    assert resolve_init("divsweep:smoke-lm") == path
    # A path is a path, whatever it looks like.
    assert resolve_init("~/models/x") == path.home() / "models" / "x"
    assert is_builtin("divsweep:smoke-lm") and not is_builtin("/models/divsweep:smoke-lm")


def test_a_missing_build_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVSWEEP_MODEL_CACHE", str(tmp_path))
    path = resolve_init("divsweep:smoke-lm")
    sha = weights_sha256(path)
    (path / MANIFEST).unlink()  # an incomplete build is not trusted
    assert resolve_init("divsweep:smoke-lm") == path
    assert weights_sha256(path) == sha and (path / MANIFEST).is_file()


def test_unknown_builtin_is_a_clear_config_error():
    with pytest.raises(
        ConfigError,
        match=r"init: unknown builtin model 'divsweep:nope'; "
        r"the builtins are divsweep:smoke-lm, divsweep:tiny-lm",
    ):
        TrainConfig(init="divsweep:nope", max_steps=1)
    with pytest.raises(ConfigError, match="unknown builtin"):
        builtin_spec("divsweep:")
    cfg = TrainConfig(init="divsweep:tiny-lm", model=None, max_steps=1)  # validates, builds nothing
    assert cfg.pretrained


def test_bad_pretrain_spec_names_the_field():
    with pytest.raises(ConfigError, match="n_embd: 30 is not divisible by n_head=4"):
        PretrainSpec(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match="n_positions: 16 is shorter"):
        PretrainSpec(n_positions=16)


def test_lora_finetune_of_the_builtin_runs_in_seconds(model_cache, small_ds):
    cfg = TrainConfig(
        model=None,
        init="divsweep:smoke-lm",
        lora=LoraSpec(r=4, alpha=8),
        max_steps=12,
        batch_size=32,
        lr=1e-2,
        eval_per_epoch=False,
        eval_every=6,
        eval_test_n=24,
        eval_train_n=12,
        seed=0,
    )
    result = train(cfg, small_ds)
    first, last = result.history
    assert last["step"] == 12 and {"test_acc", "memo_acc"} <= set(last)
    assert last["train_loss"] < first["train_loss"]
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_cli_builds_into_out(tmp_path, capsys):
    from trainer.cli import main

    out = tmp_path / "lm"
    assert main(["pretrain", "--name", "smoke-lm", "--out", str(out), "--set", "steps=3"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    info = json.loads((out / MANIFEST).read_text())
    assert info["spec"]["steps"] == 3 and (out / "config.json").is_file()
    assert main(["pretrain", "--name", "smoke-lm", "--out", str(out)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--set", "steps=3"])  # a modified spec is not the builtin: needs --out
