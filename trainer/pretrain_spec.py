"""`PretrainSpec`: everything a builtin pretrained model's build depends on, without torch.

`trainer.builtin` names specs (``divsweep:tiny-lm``) and `trainer.pretrain` builds them; a spec
alone (its fields, its rules, its content hash) needs neither torch nor transformers, so that a
`TrainConfig` naming a builtin validates in a light process (the service, a sweep's planner).

Example::

    >>> spec = PretrainSpec(n_layer=1, n_head=2, n_embd=32, n_examples=256, steps=8)
    >>> len(spec.content_hash)
    64
    >>> PretrainSpec(n_embd=30, n_head=4)
    Traceback (most recent call last):
    ...
    trainer.errors.ConfigError: n_embd: 30 is not divisible by n_head=4
"""

from __future__ import annotations

import hashlib
import string
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from data.spec import canonical_json
from trainer.errors import ConfigModel

#: Bump when the corpus, tokenizer or training code changes what a spec builds.
PRETRAIN_VERSION = 1
#: Written last into a finished build (the build directory is renamed into place after it).
MANIFEST = "pretrain.json"

Operation = Literal["copy", "reverse", "map", "delete", "append", "prepend"]
OPERATIONS: tuple[Operation, ...] = ("copy", "reverse", "map", "delete", "append", "prepend")


class PretrainSpec(ConfigModel):
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
