"""`TrainConfig`: every knob of a training run, frozen and validated once.

A config names a model size (a preset or explicit dimensions), how to initialise it, the optimiser
and schedule, the budget, batching, precision, evaluation cadence and the seed. Derived values
(the resolved dimensions, the examples-or-tokens batch rule) are properties, never stored copies.

Example::

    >>> cfg = TrainConfig(model="nano", epochs=3, batch_size=64, lr=1e-3, seed=0)
    >>> cfg.dims
    ModelDims(n_layer=2, n_head=2, n_embd=64, n_positions=256)
    >>> TrainConfig(model="nano", epochs=3, max_steps=10)
    Traceback (most recent call last):
    ...
    trainer.errors.ConfigError: epochs/max_steps: set exactly one of them, got epochs=3 and ...

Bad values raise `ConfigError` (a `ValueError`) whose message starts with the field name. Embedded
in another pydantic model, the same rules surface as that model's `ValidationError` with the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from data.errors import FieldRuleError
from data.spec import DataSpec, exactly_one_of
from trainer.builtin import builtin_spec, is_builtin
from trainer.errors import ConfigModel


class ModelDims(NamedTuple):
    """Resolved GPT-2 dimensions."""

    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int


# `paper` is P3 appendix B (GPT-2, 6 layers, 4 heads, hidden 256); the others trade capacity for
# CPU speed. `tiny` matches the first CPU calibration point in PAPER.md.
PRESETS: dict[str, ModelDims] = {
    "paper": ModelDims(6, 4, 256, 256),
    "small": ModelDims(4, 4, 192, 256),
    "tiny": ModelDims(2, 4, 128, 256),
    "nano": ModelDims(2, 2, 64, 256),
}


class LoraSpec(BaseModel):
    """Low-rank adapters (via `peft`) on a pretrained checkpoint.

    Example: ``LoraSpec(r=8, alpha=16, target_modules=("c_attn",))`` adapts GPT-2's fused QKV.
    ``target_modules=None`` lets peft pick the architecture's default modules.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None


class TrainConfig(ConfigModel):
    """One training run. See the module docstring for an example."""

    # exactly one of epochs/max_steps (`_check`), stated in the JSON Schema too
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra=exactly_one_of("epochs", "max_steps"),
    )

    # --- model -------------------------------------------------------------------------------
    model: Literal["paper", "small", "tiny", "nano"] | None = "paper"
    n_layer: int | None = Field(None, ge=1)  # explicit dims override the preset's
    n_head: int | None = Field(None, ge=1)
    n_embd: int | None = Field(None, ge=1)
    n_positions: int | None = Field(None, ge=8)
    dropout: float = Field(0.0, ge=0, lt=1)
    # "scratch", a local Hugging Face causal-LM checkpoint directory, or a builtin model
    # "divsweep:<name>" that divsweep pretrains itself on first use (trainer.builtin)
    init: str = Field("scratch", json_schema_extra={"x-divsweep-path": True})
    lora: LoraSpec | None = None

    # --- optimiser and schedule ----------------------------------------------------------------
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables clipping
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["linear", "constant", "cosine"] = "linear"

    # --- budget and batching -------------------------------------------------------------------
    epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)  # examples per step (default 256)
    batch_tokens: int | None = Field(None, ge=1)  # or: padded tokens per step
    bucket_chunk: int = Field(64, ge=1)  # sort by length within chunks of this many batches
    loss_on: Literal["output", "all"] = "output"

    # --- hardware and the speed of a step (see docs/ARCHITECTURE.md, "the training step") ------
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, else fp32
    compile: bool = False  # torch.compile the forward and backward
    # With compile on CUDA: capture each batch shape's step in a CUDA graph (torch.compile's
    # "reduce-overhead"); `pad_multiple` keeps the number of shapes small.
    cuda_graphs: bool = False
    # Pad each batch's width up to a multiple of this (1: to its longest sequence). Padding is
    # ignored by the loss; a multiple of 8-32 bounds how many shapes compile and graphs see.
    pad_multiple: int = Field(1, ge=1, le=256)
    # Collate the next batch into pinned memory and copy it without blocking while the current
    # step runs on the GPU (no effect on the CPU).
    prefetch: bool = True
    fused_optimizer: bool = True  # AdamW's fused kernel (one launch for all parameters)

    # --- evaluation ----------------------------------------------------------------------------
    eval_every: int | None = Field(None, ge=1)  # steps; None: only per epoch / at the end
    eval_per_epoch: bool = True
    eval_test_n: int | None = Field(2000, ge=1)  # None: the whole test split
    # training examples re-decoded: memorisation, metrics memo_* (0: skip)
    eval_train_n: int = Field(500, ge=0)
    # training rules on fresh inputs (the data's `test.n_fresh` rows): metrics fresh_*
    # (None: all of them, 0: skip)
    eval_fresh_n: int | None = Field(None, ge=0)
    eval_batch_size: int = Field(256, ge=1)
    n_failures: int = Field(5, ge=0)

    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError(
                "epochs/max_steps: set exactly one of them, "
                f"got epochs={self.epochs} and max_steps={self.max_steps}"
            )
        if self.batch_size is not None and self.batch_tokens is not None:
            raise ValueError(
                "batch_size/batch_tokens: set at most one of them, "
                f"got batch_size={self.batch_size} and batch_tokens={self.batch_tokens}"
            )
        if self.model is None and self.init == "scratch":
            missing = [f for f in ("n_layer", "n_head", "n_embd") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required when model=None")
        if self.init == "scratch":
            dims = self.dims
            if dims.n_embd % dims.n_head:
                raise FieldRuleError(
                    "n_embd", f"{dims.n_embd} is not divisible by n_head={dims.n_head}"
                )
        elif self._explicit_dims():
            raise ValueError(
                f"n_layer/n_head/n_embd: cannot resize a pretrained init={self.init!r}"
            )
        if is_builtin(self.init):
            builtin_spec(self.init)  # unknown names fail here, not when the sweep starts
        if self.lora is not None and self.init == "scratch":
            raise FieldRuleError(
                "lora", "needs a pretrained checkpoint in init, got init='scratch'"
            )
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1):
            raise FieldRuleError("betas", f"each must be in [0, 1), got {self.betas}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise FieldRuleError(
                "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}"
            )
        if self.cuda_graphs and not self.compile:
            raise FieldRuleError("cuda_graphs", "needs compile=True (graphs are torch.compile's)")
        if self.device == "cpu" and self.cuda_graphs:
            raise FieldRuleError("cuda_graphs", "CUDA graphs need CUDA, but device='cpu'")
        if self.device == "cpu" and self.precision == "bf16":
            raise FieldRuleError("precision", "bf16 autocast needs CUDA, but device='cpu'")
        return self

    def _explicit_dims(self) -> bool:
        return any(getattr(self, f) is not None for f in ("n_layer", "n_head", "n_embd"))

    @property
    def dims(self) -> ModelDims:
        """Preset dimensions with any explicit field taking precedence."""
        base = PRESETS[self.model] if self.model is not None else ModelDims(0, 0, 0, 256)
        return ModelDims(
            n_layer=self.n_layer or base.n_layer,
            n_head=self.n_head or base.n_head,
            n_embd=self.n_embd or base.n_embd,
            n_positions=self.n_positions or base.n_positions,
        )

    @property
    def examples_per_batch(self) -> int | None:
        """Examples per step, or None when batches are sized in tokens."""
        if self.batch_tokens is not None:
            return None
        return self.batch_size or 256

    @property
    def pretrained(self) -> bool:
        """Whether the model comes from a checkpoint (a directory or a builtin), not scratch."""
        return self.init != "scratch"


def fusable(cfgs: Sequence[TrainConfig], data: Sequence[DataSpec] | None = None) -> str | None:
    """Why ``cfgs`` cannot train as one fused model (`trainer.fused`), or None when they can.

    The one home of this rule: `trainer.fused` refuses what it refuses, and the sweeps (their
    spec validation and their grouping of a grid into fused trials) ask it too. Members must be
    scratch GPT-2s whose configs differ at most in ``seed``, without dropout (a fused dropout
    mask is not each member's own draw), batched in examples (every member then has the same
    number of steps and the same evaluation points). With their data specs (``data``), the data
    sets must also give every member the same steps and the same token table: the same number of
    training examples, the same alphabet and task.

    >>> fusable([TrainConfig(model="nano", max_steps=5, seed=s) for s in range(4)]) is None
    True
    """
    if not cfgs:
        return "no members"
    base = cfgs[0].model_copy(update={"seed": 0})
    for i, c in enumerate(cfgs):
        if c.model_copy(update={"seed": 0}) != base:
            return f"member {i}'s train config differs from member 0's in more than its seed"
    c = cfgs[0]
    if c.pretrained:
        return f"init={c.init!r}: only scratch GPT-2s are fused"
    if c.dropout > 0:
        return f"dropout={c.dropout}: a fused dropout mask is not each member's own draw"
    if c.examples_per_batch is None:
        return "batch_tokens: each member's step count would depend on its data; use batch_size"
    return None if data is None else _data_fusable(data, len(cfgs))


def _data_fusable(data: Sequence[DataSpec], n: int) -> str | None:
    if len(data) != n:
        return f"{len(data)} data sets for {n} members"
    d0 = data[0]
    for i, d in enumerate(data[1:], start=1):
        if d.n_train != d0.n_train:
            return (
                f"member {i}'s data set has {d.n_train} training examples, member 0's "
                f"{d0.n_train}: they would train different numbers of steps"
            )
        if (d.alphabet, d.task) != (d0.alphabet, d0.task):
            return f"member {i}'s vocabulary (alphabet, task) differs from member 0's"
    return None
