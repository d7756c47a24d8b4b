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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.batching import IGNORE, collate, epoch_plan
from trainer.decode import greedy_decode
from trainer.pretrain_spec import MANIFEST, PRETRAIN_VERSION, Operation, PretrainSpec

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
#: Every character a `data.DataSpec` may produce: printable non-space ASCII plus the arrow.
#: Fixed, so one tokenizer serves any fine-tune alphabet; characters the corpus never uses keep
#: their initial embeddings (a fine-tune over them starts from scratch there).
CHARSET = "".join(c for c in string.printable if not c.isspace()) + "→"


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
