"""The pretrained path, for real: a local checkpoint + tokenizer on disk, fine-tuned with LoRA.

Nothing is downloaded: the test builds a tiny random GPT-2 and a character-level tokenizer in
code, saves both with `save_pretrained`, and the trainer loads them through the same
`AutoModelForCausalLM` / `AutoTokenizer` code a user's checkpoint takes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer import LoraSpec, TrainConfig
from trainer.decode import greedy_decode
from trainer.loop import train
from trainer.model import build_codec, build_model


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, small_ds):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    chars = sorted(set("".join(small_ds.texts("train")[0] + small_ds.texts("test")[0])))
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<pad>", "<eos>", *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join without spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=2,
        eos_token_id=2,
        bos_token_id=2,
    )
    path = tmp_path_factory.mktemp("ckpt")
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_codec_reencodes_with_the_checkpoint_tokenizer(checkpoint_dir, small_ds):
    cfg = TrainConfig(init=str(checkpoint_dir), max_steps=1)
    codec = build_codec(cfg, small_ds.vocab)
    enc = codec.encode(small_ds, "test")
    prompts, completions = small_ds.texts("test")
    assert len(enc.prompt_lens) == len(prompts)
    ids = enc.tokens[enc.offsets[0] : enc.offsets[1]].tolist()
    p = int(enc.prompt_lens[0])
    assert codec.tokenizer.decode(ids[:p]) == prompts[0]
    assert codec.decode(ids[p:]) == completions[0] and ids[-1] == codec.eos_id


def test_lora_finetune_of_local_checkpoint(checkpoint_dir, small_ds, tmp_path):
    cfg = TrainConfig(
        init=str(checkpoint_dir),
        lora=LoraSpec(r=4, alpha=8, target_modules=("c_attn", "c_fc")),
        max_steps=60,
        batch_size=32,
        lr=1e-2,
        eval_every=30,
        eval_per_epoch=False,
        eval_test_n=60,
        eval_train_n=30,
        seed=0,
    )
    model = build_model(cfg, None)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen_before = model.get_base_model().transformer.wte.weight.detach().clone()

    result = train(cfg, small_ds, checkpoint_dir=tmp_path)
    first, last = result.history
    assert last["train_loss"] < first["train_loss"]  # the adapters learn
    assert {"test_acc", "test_acc_op", "test_acc_noop", "memo_acc"} <= set(last)
    assert torch.equal(result.model.get_base_model().transformer.wte.weight, frozen_before)

    # The evaluator agrees with HF generate on the fine-tuned peft model too.
    codec = build_codec(cfg, None)
    enc = codec.encode(small_ds, "test")
    prompts = [enc.tokens[enc.offsets[i] : enc.offsets[i] + enc.prompt_lens[i]] for i in range(40)]
    ours = greedy_decode(result.model, prompts, codec.eos_id, 10, batch_size=16)
    ref = []
    result.model.eval()
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor(np.asarray(prompt, dtype=np.int64))[None]
            g = result.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=10,
                eos_token_id=codec.eos_id,
                pad_token_id=codec.pad_id,
            )
            ref.append(g[0, ids.shape[1] :].tolist())
    assert ours == ref

    # And it resumes from its own checkpoint (a finished run does no further steps).
    again = train(cfg, small_ds, checkpoint_dir=tmp_path)
    assert again.history == result.history


def test_missing_checkpoint_is_a_config_error(tmp_path, small_ds):
    from trainer import ConfigError

    with pytest.raises(ConfigError, match="init: .* is not a local checkpoint directory"):
        train(TrainConfig(init=str(tmp_path / "nope"), max_steps=1), small_ds)
