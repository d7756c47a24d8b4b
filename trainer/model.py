"""Model construction: the one place that speaks Hugging Face keyword arguments.

`build_model(cfg, vocab)` returns a causal LM whose ``model(input_ids).logits`` the rest of the
trainer uses, built one of two ways:

* ``init="scratch"``: a GPT-2 (`GPT2LMHeadModel`, SDPA attention) sized by ``cfg.dims`` over the
  data set's character vocabulary, weights drawn from ``cfg.seed``;
* ``init="/some/dir"``: a local causal-LM checkpoint (`AutoModelForCausalLM.from_pretrained`,
  never downloading), optionally wrapped with LoRA adapters (``cfg.lora``); ``init="divsweep:
  tiny-lm"`` is the same with divsweep's own pretrained model (`trainer.builtin`).

`build_codec(cfg, vocab)` returns the matching token codec: the data set's own `Vocab` for scratch
models, or the checkpoint's tokenizer, which re-encodes the examples from their text.

Example::

    >>> from trainer import TrainConfig, build_model
    >>> model = build_model(TrainConfig(model="nano", max_steps=1), ds.vocab)   # doctest: +SKIP
    >>> model(torch.tensor([[1, 2, 3]])).logits.shape                          # doctest: +SKIP
    torch.Size([1, 3, <vocab size>])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trainer.batching import Sequences
from trainer.builtin import resolve_init
from trainer.config import TrainConfig
from trainer.errors import ConfigError

log = logging.getLogger(__name__)


class VocabLike(Protocol):
    """What the trainer needs of `data.Vocab`."""

    @property
    def size(self) -> int: ...
    @property
    def pad_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    def decode(self, ids: list[int]) -> str: ...


#: GELU itself (erf), torch's one kernel, rather than GPT-2's tanh approximation ("gelu_new",
#: eight elementwise ops): on one CPU thread the approximation is the slow part of an MLP
#: (fused tanh kernel 0.77 ms forward + 0.88 backward on a fig2a-mini batch's (672, 512)
#: activations, exact GELU 0.27 + 0.44; measured 2026-12-03), and a model trained from scratch
#: has no reason to prefer the approximation. A training step of the fig2a-mini model, one
#: thread, medians of 5 interleaved runs of 20 steps: gelu_new 65.8 ms, the fused tanh kernel
#: 51.7 ms, GELU 48.4 ms (1.36x).
ACTIVATION = "gelu"


def build_model(cfg: TrainConfig, vocab: VocabLike | None) -> torch.nn.Module:
    """The causal LM of ``cfg`` (scratch GPT-2 over ``vocab``, or a local checkpoint)."""
    if cfg.pretrained:
        return _load_pretrained(cfg)
    if vocab is None:
        raise ConfigError("init: a scratch model needs the data set's vocabulary")
    from transformers import GPT2Config, GPT2LMHeadModel

    d = cfg.dims
    hf_cfg = GPT2Config(
        vocab_size=vocab.size,
        n_positions=d.n_positions,
        n_embd=d.n_embd,
        n_layer=d.n_layer,
        n_head=d.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=vocab.eos_id,
        eos_token_id=vocab.eos_id,
        activation_function=ACTIVATION,
        # Left unset on purpose: training batches are right-padded with no attention mask
        # (harmless under causal attention), which HF would otherwise log a warning about.
        pad_token_id=None,
    )
    # Weights are a pure function of the seed, whatever ran before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = GPT2LMHeadModel._from_config(hf_cfg, attn_implementation="sdpa")
    model.generation_config.pad_token_id = vocab.pad_id
    model.generation_config.eos_token_id = vocab.eos_id
    model.generation_config.bos_token_id = vocab.eos_id
    return model


def _load_pretrained(cfg: TrainConfig) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    path = _checkpoint_path(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # LoRA's A matrices are random
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, attn_implementation="sdpa", dtype=torch.float32
        )
        tok = _load_tokenizer(cfg)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = _pad_id(tok)
        if cfg.lora is not None:
            from peft import LoraConfig, get_peft_model
            from transformers.pytorch_utils import Conv1D

            lc = LoraConfig(
                # GPT-2-style Conv1D layers store weights as (in, out); peft must know.
                fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules) if cfg.lora.target_modules else None,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lc)  # type: ignore[assignment]
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("loaded %s (%d trainable parameters)", path, n_train)
    return model


def _checkpoint_path(cfg: TrainConfig) -> Path:
    # A builtin ("divsweep:tiny-lm") is built into the model cache on first use.
    path = resolve_init(cfg.init)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"init: {cfg.init!r} is not a local checkpoint directory (no config.json)"
        )
    return path


def _load_tokenizer(cfg: TrainConfig) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(_checkpoint_path(cfg)), local_files_only=True)
    if tok.eos_token_id is None:
        raise ConfigError(f"init: the tokenizer in {cfg.init!r} has no eos token")
    return tok


def _pad_id(tok: Any) -> int:
    return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


@dataclass(frozen=True)
class EncodedTexts:
    """A ragged split re-encoded with a checkpoint's tokenizer (same layout as EncodedSplit)."""

    tokens: np.ndarray
    offsets: np.ndarray
    prompt_lens: np.ndarray


class Codec:
    """Token ids <-> text for one model: the data set's `Vocab` or a checkpoint's tokenizer."""

    def __init__(self, cfg: TrainConfig, vocab: VocabLike | None) -> None:
        self.tokenizer = _load_tokenizer(cfg) if cfg.pretrained else None
        self.vocab = vocab
        if self.tokenizer is not None:
            self.pad_id = _pad_id(self.tokenizer)
            self.eos_id = int(self.tokenizer.eos_token_id)
        elif vocab is not None:
            self.pad_id, self.eos_id = vocab.pad_id, vocab.eos_id
        else:
            raise ConfigError("init: a scratch model needs the data set's vocabulary")

    def encode(self, ds: Any, split: str) -> Sequences:
        """The split as ragged token arrays (prompt, then completion ending in eos)."""
        if self.tokenizer is None:
            enc: Sequences = ds.encoded(split)
            return enc
        prompts, completions = ds.texts(split)
        tok = self.tokenizer
        p_ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        c_ids = tok(list(completions), add_special_tokens=False)["input_ids"]
        seqs = [p + c + [self.eos_id] for p, c in zip(p_ids, c_ids, strict=True)]
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        tokens = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
        return EncodedTexts(tokens, offsets, np.array([len(p) for p in p_ids], dtype=np.int32))

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, cut at the first eos."""
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        if self.tokenizer is not None:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))
        assert self.vocab is not None
        return self.vocab.decode(ids)


def build_codec(cfg: TrainConfig, vocab: VocabLike | None) -> Codec:
    """The codec matching ``build_model(cfg, vocab)``."""
    return Codec(cfg, vocab)
