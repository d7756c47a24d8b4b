"""Pretrain a small causal LM from nothing, so the fine-tune study needs no download.

P1 §5 (Fig. 5) fine-tunes a *pretrained* model (Llama-2-7B) with LoRA. A CPU session cannot
download or run that, so divsweep builds its own: a small Llama-style decoder (`LlamaForCausalLM`
from a config; GPT-2 with ``arch="gpt2"``) with a character-level tokenizer (the `tokenizers`
library wrapped as `PreTrainedTokenizerFast`), pretrained on text this module generates, and saved
with ``save_pretrained`` like any Hugging Face checkpoint. `trainer.builtin` names, caches and
resolves it (``init: "divsweep:tiny-lm"``).

What it learns, and why. The corpus is *generic string manipulation* in the fine-tune's prompt
layout ``instruction|input=output<eos>``, with operations that are **not** the rewrite task
(the first five by default):

==========  =====================  ===========================  =============================
operation   prompt                 output                       skill the rewrite task reuses
==========  =====================  ===========================  =============================
copy        ``|cabd=``             ``cabd``                     copy the input (what a no-op is)
map         ``a>e|cabd=``          ``cebd`` (every ``a``)       find a letter, substitute it
delete      ``-a|cabd=``           ``cbd`` (every ``a``)        keep copying after a shift
append      ``+ff|cabd=``          ``cabdff``                   copy from the instruction
prepend     ``^ff|cabd=``          ``ffcabd``                   copy the instruction, then input
reverse     ``<|cabd=``            ``dbac``                     (not used by the rewrite task)
==========  =====================  ===========================  =============================

The rewrite operator ``→`` (replace the *leftmost* occurrence of a multi-letter ``x`` by ``y``,
once) never appears, so what a fine-tune teaches is the instruction itself, as for Llama-2, while
the expensive part for a CPU-sized model, copying variable-length strings (docs/CALIBRATION.md:
a scratch model spends its whole budget there), is already known. Rewrite examples of a disjoint
rule pool would have taught the task itself and left nothing for the study to measure; a generic
text corpus would have cost far more than the 3 minutes to teach copying at all.

Deterministic: the corpus is a pure function of the spec (numpy streams seeded from
``spec.seed``), the weights and batch order too (torch seeded, one thread while training, since
CPU kernels may sum in another order with more threads). `PretrainSpec.content_hash` names a
build; the saved ``pretrain.json`` records it with the losses and a sha256 of the weights.

Example (this size builds in a second or two)::

    >>> spec = PretrainSpec(n_layer=1, n_head=2, n_embd=32, n_examples=256, steps=8)
    >>> corpus(spec, 2)
    (['|mmolb=', 'c>e|blngbfhola='], ['mmolb', 'blngbfhola'])
    >>> info = pretrain(spec, "/tmp/lm")                           # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained("/tmp/lm")            # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from data.spec import canonical_json
from trainer.batching import IGNORE, collate, epoch_plan
from trainer.errors import ConfigError, format_validation_error

log = logging.getLogger(__name__)

#: Bump when the corpus, tokenizer or training code changes what a spec builds.
PRETRAIN_VERSION = 1
#: Written last into a finished build (the build directory is renamed into place after it).
MANIFEST = "pretrain.json"

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
#: Every character a `data.DataSpec` may produce: printable non-space ASCII plus the arrow.
#: Fixed, so one tokenizer serves any fine-tune alphabet; characters the corpus never uses keep
#: their initial embeddings (a fine-tune over them starts from scratch there).
CHARSET = "".join(c for c in string.printable if not c.isspace()) + "→"

Operation = Literal["copy", "reverse", "map", "delete", "append", "prepend"]
OPERATIONS: tuple[Operation, ...] = ("copy", "reverse", "map", "delete", "append", "prepend")


class PretrainSpec(BaseModel):
    """Everything a pretrained build depends on (model, corpus, optimiser, seed)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # --- model ----------------------------------------------------------------------------------
    arch: Literal["llama", "gpt2"] = "llama"  # see build_lm
    n_layer: int = Field(2, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_positions: int = Field(128, ge=16)  # fine-tune sequences must fit
    ffn_mult: int = Field(4, ge=1)  # MLP width = ffn_mult * n_embd

    # --- corpus --------------------------------------------------------------------------------
    # The letters inputs are drawn from: a-p covers every -mini preset's alphabet; fewer letters
    # than 26 means each embedding is trained more often in a 3-minute budget.
    alphabet: str = "abcdefghijklmnop"
    z_len: tuple[int, int] = (3, 12)  # input length range, inclusive (finetune-mini: 6..10)
    arg_len: tuple[int, int] = (1, 3)  # appended/prepended string length range
    # reverse is off by default: the rewrite task never reverses, and its examples would take a
    # sixth of the pretraining budget
    operations: tuple[Operation, ...] = ("copy", "map", "delete", "append", "prepend")
    n_examples: int = Field(50_000, ge=1)  # distinct corpus examples (epochs reuse them)
    #: Share of map/delete examples whose letter occurs in the input (else it is random).
    present_fraction: float = Field(0.8, ge=0, le=1)

    # --- training ------------------------------------------------------------------------------
    steps: int = Field(1400, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)  # 3e-3 learned copying more slowly (GPT-2, measured)
    warmup_steps: int = Field(50, ge=0)  # then linear decay to zero
    weight_decay: float = Field(0.01, ge=0)
    seed: int = Field(0, ge=0)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e)) from None

    # Only a direct call goes through this wrapper: as a nested field (or with
    # `model_validate_json(..., strict=True)`) pydantic must validate with its own rules, or
    # the wrapper's lax re-validation would let `true` pass for an int (pydantic-settings
    # marks its own __init__ the same way).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _check(self) -> PretrainSpec:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: {self.n_embd} is not divisible by n_head={self.n_head}")
        bad = sorted(set(self.alphabet) - set(string.ascii_letters + string.digits))
        if not self.alphabet or bad or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet: distinct letters or digits only, got {self.alphabet!r}")
        for name in ("z_len", "arg_len"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name}: need 1 <= min <= max, got {[lo, hi]}")
        if not self.operations or len(set(self.operations)) != len(self.operations):
            raise ValueError(f"operations: non-empty and distinct, got {list(self.operations)}")
        longest = 2 * (self.z_len[1] + self.arg_len[1]) + 4
        if longest > self.n_positions:
            raise ValueError(
                f"n_positions: {self.n_positions} is shorter than the longest corpus sequence "
                f"({longest})"
            )
        return self

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the spec and `PRETRAIN_VERSION`."""
        payload = {"spec": self.model_dump(mode="json"), "version": PRETRAIN_VERSION}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# --- corpus ---------------------------------------------------------------------------------


def _example(
    op: Operation, z: str, rng: np.random.Generator, spec: PretrainSpec
) -> tuple[str, str]:
    """(prompt, output) of one operation on input ``z``."""
    letters = spec.alphabet
    if op == "copy":
        return f"|{z}=", z
    if op == "reverse":
        return f"<|{z}=", z[::-1]
    if op in ("map", "delete"):
        present = rng.random() < spec.present_fraction
        c = z[rng.integers(len(z))] if present else letters[rng.integers(len(letters))]
        if op == "delete":
            return f"-{c}|{z}=", z.replace(c, "")
        d = letters[rng.integers(len(letters))]
        return f"{c}>{d}|{z}=", z.replace(c, d)
    n = int(rng.integers(spec.arg_len[0], spec.arg_len[1] + 1))
    s = "".join(letters[i] for i in rng.integers(len(letters), size=n))
    return (f"+{s}|{z}=", z + s) if op == "append" else (f"^{s}|{z}=", s + z)


def corpus(spec: PretrainSpec, n: int | None = None) -> tuple[list[str], list[str]]:
    """The first ``n`` (default all) ``(prompts, outputs)`` of the corpus; operations round-robin.

    Example: ``corpus(PretrainSpec(), 3)`` gives ``(['|mmolb=', 'c>e|blngbfhola=', '-k|fkho='],
    ['mmolb', 'blngbfhola', 'fho'])`` (the strings depend on the seed; the operations cycle in
    the order of ``spec.operations``).
    """
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x7E7]))
    prompts, outputs = [], []
    letters = spec.alphabet
    for i in range(spec.n_examples if n is None else min(n, spec.n_examples)):
        length = int(rng.integers(spec.z_len[0], spec.z_len[1] + 1))
        z = "".join(letters[j] for j in rng.integers(len(letters), size=length))
        p, o = _example(spec.operations[i % len(spec.operations)], z, rng, spec)
        prompts.append(p)
        outputs.append(o)
    return prompts, outputs


# --- tokenizer and model ----------------------------------------------------------------------


def build_tokenizer() -> Any:
    """A character-level `PreTrainedTokenizerFast` over `CHARSET` (pad 0, eos 1, unk 2)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *CHARSET])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one per char
    core.decoder = decoders.Fuse()  # characters join without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK
    )


def build_lm(spec: PretrainSpec, vocab_size: int, eos_id: int, pad_id: int) -> Any:
    """A randomly initialised causal LM of the spec's size; weights a pure function of the seed.

    ``arch="llama"`` (the default) is a Llama-style decoder (rotary positions, RMSNorm, SwiGLU,
    tied embeddings), the architecture family of the paper's Llama-2-7B; ``"gpt2"`` is GPT-2
    with learned absolute positions, as the scratch models. Measured on one core (pure copying,
    26 letters, inputs of 4 to 16, lr 1e-3, batch 64): the Llama-style model reached loss 0.12 in
    900 steps, the GPT-2 0.79, at about the same time per step: rotary positions make the
    "attend k tokens back" that copying needs easy to learn.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    cfg: Any
    if spec.arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=spec.n_embd,
            intermediate_size=spec.ffn_mult * spec.n_embd,
            num_hidden_layers=spec.n_layer,
            num_attention_heads=spec.n_head,
            num_key_value_heads=spec.n_head,
            max_position_embeddings=spec.n_positions,
            tie_word_embeddings=True,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=None,  # as in trainer.model: unmasked right padding is harmless
        )
        cls: Any = LlamaForCausalLM
    else:
        cfg = GPT2Config(
            vocab_size=vocab_size,
            n_positions=spec.n_positions,
            n_embd=spec.n_embd,
            n_inner=spec.ffn_mult * spec.n_embd,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=None,
        )
        cls = GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = cls._from_config(cfg, attn_implementation="sdpa")
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = eos_id
    return model


@dataclass(frozen=True)
class _Encoded:
    """A ragged token layout (the `trainer.batching.Sequences` protocol)."""

    tokens: np.ndarray
    offsets: np.ndarray
    prompt_lens: np.ndarray


def encode(tok: Any, prompts: list[str], outputs: list[str]) -> _Encoded:
    """Prompts and outputs as ragged ids, each sequence ending in eos (as `trainer.model.Codec`)."""
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    o_ids = tok(outputs, add_special_tokens=False)["input_ids"]
    seqs = [p + o + [tok.eos_token_id] for p, o in zip(p_ids, o_ids, strict=True)]
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    tokens = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
    return _Encoded(tokens, offsets, np.array([len(p) for p in p_ids], dtype=np.int32))


# --- pretraining --------------------------------------------------------------------------------


def _lr(step: int, spec: PretrainSpec) -> float:
    """Linear warm-up, then linear decay to zero (the fine-tune's default schedule)."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    return spec.lr * (1 - (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps))


def pretrain(spec: PretrainSpec, out: str | Path, eval_n: int = 50) -> dict[str, Any]:
    """Build, train and save the model and tokenizer into ``out``; returns the manifest.

    ``out`` gets ``config.json``, ``model.safetensors``, ``generation_config.json``, the
    tokenizer files and, written last, `MANIFEST` (the spec, its hash, the losses, greedy
    exact-match accuracy per operation on ``eval_n`` held-out examples each, a sha256 of the
    weights). The caller makes the directory appear atomically (`trainer.builtin`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    tok = build_tokenizer()
    prompts, outputs = corpus(spec)
    seqs = encode(tok, prompts, outputs)
    lengths = np.diff(seqs.offsets)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order, whatever the caller's threads
    try:
        model = build_lm(spec, len(tok), tok.eos_token_id, tok.pad_token_id)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=spec.lr,
        )
        model.train()
        losses: list[float] = []
        step, epoch, window = 0, 0, []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            while step < spec.steps:
                for idx in epoch_plan(lengths, spec.seed, epoch, batch_size=spec.batch_size):
                    for g in opt.param_groups:
                        g["lr"] = _lr(step, spec)
                    inputs, targets = collate(seqs, idx, tok.pad_token_id, "output")
                    logits = model(input_ids=inputs).logits  # (B, T, V)
                    loss = F.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]),
                        targets.reshape(-1),
                        ignore_index=IGNORE,
                    )
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    window.append(float(loss.detach()))
                    step += 1
                    if step % 100 == 0 or step == spec.steps:
                        losses.append(sum(window) / len(window))
                        log.info("pretrain step %d/%d loss %.4f", step, spec.steps, losses[-1])
                        window = []
                    if step == spec.steps:
                        break
                epoch += 1
        accuracy = _held_out_accuracy(model, tok, spec, eval_n)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    manifest = {
        "name": "divsweep-pretrained-lm",
        "spec": spec.model_dump(mode="json"),
        "content_hash": spec.content_hash,
        "version": PRETRAIN_VERSION,
        "loss_every_100_steps": losses,
        "held_out_accuracy": accuracy,
        "weights_sha256": weights_sha256(out),
        "train_s": round(time.perf_counter() - t0, 1),  # wall time: other processes count
        "cpu_s": round(time.process_time() - cpu0, 1),  # this process's CPU time
        "torch": torch.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _held_out_accuracy(model: Any, tok: Any, spec: PretrainSpec, n: int) -> dict[str, float]:
    """Greedy exact match per operation on fresh examples (another random stream)."""
    from trainer.decode import greedy_decode

    if n <= 0:
        return {}
    held = spec.model_copy(update={"seed": spec.seed + 1_000_003})  # another stream, same mix
    prompts, outputs = corpus(held, n * len(spec.operations))
    encoded = tok(prompts, add_special_tokens=False)["input_ids"]
    ids = [np.asarray(p, dtype=np.int64) for p in encoded]
    model.eval()
    gen = greedy_decode(model, ids, tok.eos_token_id, max(len(o) for o in outputs) + 1)
    model.train()
    hits: dict[str, list[bool]] = {op: [] for op in spec.operations}
    for i, (g, want) in enumerate(zip(gen, outputs, strict=True)):
        ok = tok.eos_token_id in g and tok.decode(g[: g.index(tok.eos_token_id)]) == want
        hits[spec.operations[i % len(spec.operations)]].append(ok)
    return {op: round(float(np.mean(h)), 4) for op, h in hits.items()}


def weights_sha256(path: str | Path) -> str:
    """sha256 of a saved ``model.safetensors`` (tensor bytes and their names)."""
    return hashlib.sha256((Path(path) / "model.safetensors").read_bytes()).hexdigest()
