"""Builtin pretrained models: ``init: "divsweep:tiny-lm"`` instead of a machine-specific path.

A builtin is a `trainer.pretrain_spec.PretrainSpec` under a name. `resolve_init` turns
``divsweep:<name>`` into the directory of its build in the model cache (``$DIVSWEEP_MODEL_CACHE``
or ``~/.cache/divsweep/models``), ``<name>-<first 16 hex of the spec's content hash>/``, building
it there first when it is missing. Nothing is downloaded: the build pretrains the model on text it
generates (see `trainer.pretrain`). A builtin name is *not* a path: the ``divsweep:`` prefix always
means the registry, even if a directory of that name exists, so path rules for submitters never
apply to it and a path can never name a builtin.

Builds are atomic and built once per machine: the build goes to ``<dir>.tmp-<random>`` with its
manifest written last, then is renamed into place; an exclusive lock on ``<dir>.lock`` makes
concurrent trials on one machine wait for a single build instead of each running their own.
Changing a registered spec changes its hash (a new directory) and, since this file is part of the
trainer's sources, the code version in every trial key (`sweeps.codeversion`).

Example::

    >>> is_builtin("divsweep:tiny-lm"), is_builtin("/models/llama")
    (True, False)
    >>> builtin_spec("divsweep:nope")
    Traceback (most recent call last):
    ...
    trainer.errors.ConfigError: init: unknown builtin model 'divsweep:nope'; the builtins are ...
    >>> resolve_init("divsweep:tiny-lm")     # doctest: +SKIP
    PosixPath('/home/me/.cache/divsweep/models/tiny-lm-3f9a0c1d2e4b5a69')
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError
from trainer.pretrain_spec import MANIFEST, PretrainSpec

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "divsweep:"

#: The registered builds. ``tiny-lm`` is what finetune-mini fine-tunes: 2 layers, 4 heads,
#: hidden 128 (the `tiny` preset's size), pretrained for ~3 minutes on one CPU core;
#: ``smoke-lm`` is a few seconds' build for tests and smoke runs (it learns next to nothing).
BUILTINS: dict[str, PretrainSpec] = {
    "tiny-lm": PretrainSpec(),
    "smoke-lm": PretrainSpec(
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_positions=64,
        z_len=(2, 8),
        n_examples=512,
        steps=20,
        warmup_steps=5,
    ),
}


def is_builtin(init: str) -> bool:
    """Whether a `TrainConfig.init` value names a builtin model (``divsweep:<name>``)."""
    return init.startswith(BUILTIN_PREFIX)


def builtin_spec(init: str) -> PretrainSpec:
    """The registered spec of ``divsweep:<name>``; `ConfigError` naming the builtins otherwise."""
    name = init.removeprefix(BUILTIN_PREFIX)
    if not is_builtin(init) or name not in BUILTINS:
        known = ", ".join(BUILTIN_PREFIX + n for n in sorted(BUILTINS))
        raise ConfigError(f"init: unknown builtin model {init!r}; the builtins are {known}")
    return BUILTINS[name]


def model_cache_dir() -> Path:
    """``$DIVSWEEP_MODEL_CACHE`` or ``~/.cache/divsweep/models`` (never inside the checkout)."""
    env = os.environ.get("DIVSWEEP_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "divsweep" / "models"


def build_dir(name: str, spec: PretrainSpec, cache_dir: str | Path | None = None) -> Path:
    """Where the build of ``spec`` under ``name`` lives (whether or not it exists yet)."""
    root = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    return root / f"{name}-{spec.content_hash[:16]}"


def ensure_built(name: str, spec: PretrainSpec, cache_dir: str | Path | None = None) -> Path:
    """The build directory of ``spec``, pretraining it first if it is not there (see above)."""
    final = build_dir(name, spec, cache_dir)
    if (final / MANIFEST).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(final.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if (final / MANIFEST).is_file():  # another process built it while we waited
            return final
        if final.exists():  # no manifest: not ours to trust (never made by a rename below)
            shutil.rmtree(final)
        log.info("building the builtin model %s into %s (once per machine)", name, final)
        info = build_atomically(spec, final)
    log.info(
        "built %s in %.0f s: held-out accuracy %s", name, info["train_s"], info["held_out_accuracy"]
    )
    return final


def build_atomically(spec: PretrainSpec, final: str | Path) -> dict[str, Any]:
    """Pretrain into ``<final>.tmp-<random>``, then rename it to ``final``; the manifest.

    ``final`` must not exist (a rename onto a non-empty directory fails): readers therefore see
    a whole build or none, and an interrupted build leaves only a ``.tmp-`` directory behind.
    """
    # Building needs torch and transformers; the table above must import without them.
    from trainer.pretrain import pretrain

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        info = pretrain(spec, tmp)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def builtin_model_size(init: str) -> tuple[int, int, int, str]:
    """Parameters, layers, hidden size and a label of a builtin model, without building it.

    The model is made on the meta device (shapes only, no weights, no pretraining), so a plan
    can size a fine-tune on a machine where the builtin has never been built::

        >>> n, layers, hidden, label = builtin_model_size("divsweep:smoke-lm")
        >>> layers, hidden
        (1, 32)
    """
    # torch and transformers only here: the table above must import without them.
    import torch

    from trainer.perf import count_params
    from trainer.pretrain import build_lm, build_tokenizer

    spec = builtin_spec(init)
    tok = build_tokenizer()
    with torch.device("meta"):
        model = build_lm(spec, len(tok), tok.eos_token_id, tok.pad_token_id)
    label = (
        f"builtin {init}: {spec.arch}, {spec.n_layer} layers, {spec.n_head} heads, hidden "
        f"{spec.n_embd}; vocab {len(tok)} (LoRA adapters not counted)"
    )
    return count_params(model), spec.n_layer, spec.n_embd, label


def resolve_init(init: str, cache_dir: str | Path | None = None) -> Path:
    """The checkpoint directory a `TrainConfig.init` names, building a builtin on first use.

    ``divsweep:<name>`` resolves through the registry (and model cache); anything else is a
    path, returned with ``~`` expanded and not checked here.
    """
    if is_builtin(init):
        return ensure_built(init.removeprefix(BUILTIN_PREFIX), builtin_spec(init), cache_dir)
    return Path(init).expanduser()
