"""The size of a trial's model, from its train config alone (no weights read): what the
service's limits (`sweeps.specs.limits`) and the cost plan (`sweeps.reporting.plan`) both need.

Closed form for a scratch GPT-2, the builtin models' recorded size, or a meta-device build of a
local checkpoint's ``config.json``::

    >>> model_size(TrainConfig(model="paper", epochs=1), 31).n_params
    4812544
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from trainer.builtin import builtin_model_size, is_builtin
from trainer.config import ModelDims, TrainConfig


def gpt2_params(dims: ModelDims, vocab_size: int) -> int:
    """Parameters of the scratch GPT-2 `trainer.build_model` builds (the head is tied).

    Token and position embeddings ``(V + P) d``; per layer two LayerNorms ``4 d``, attention
    ``4 d^2 + 4 d`` and MLP ``8 d^2 + 5 d``; a final LayerNorm ``2 d``. The ``paper`` model over
    26 letters: ``gpt2_params(ModelDims(6, 4, 256, 256), 31) == 4_812_544``.
    """
    d = dims.n_embd
    return (vocab_size + dims.n_positions) * d + dims.n_layer * (12 * d * d + 13 * d) + 2 * d


@dataclass(frozen=True)
class ModelSize:
    """What the FLOP count needs of a model; layers and width are None when only N is known."""

    n_params: int
    n_layer: int | None
    n_embd: int | None
    label: str


def model_size(
    train: TrainConfig, vocab_size: int, n_params: int | None = None
) -> ModelSize | None:
    """The size of the trial's model (None when unknown).

    Closed form for a scratch GPT-2 (`gpt2_params`), a meta-device build of a local checkpoint's
    ``config.json``, or ``n_params`` when given: ``model_size(TrainConfig(model="paper",
    epochs=1), 31).n_params == 4_812_544``.
    """
    if n_params is not None:
        return ModelSize(n_params, None, None, "given with --params")
    if not train.pretrained:
        d = train.dims
        name = f"GPT-2 {train.model}" if train.model else "GPT-2"
        return ModelSize(
            gpt2_params(d, vocab_size),
            d.n_layer,
            d.n_embd,
            f"{name}: {d.n_layer} layers, {d.n_head} heads, hidden {d.n_embd}, "
            f"{d.n_positions} positions; vocab {vocab_size}",
        )
    return _checkpoint_size(train.init)


@cache  # a grid has many cells over one checkpoint
def _checkpoint_size(init: str) -> ModelSize | None:
    if is_builtin(init):
        return ModelSize(*builtin_model_size(init))
    if not (Path(init) / "config.json").is_file():
        return None
    # torch and transformers (seconds to import) load only to size a local checkpoint
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.perf import count_params  # imports torch, as above

    cfg = AutoConfig.from_pretrained(init, local_files_only=True)
    with torch.device("meta"):  # shapes only: no memory, no weights read
        model = AutoModelForCausalLM.from_config(cfg)
    return ModelSize(
        count_params(model),
        int(cfg.num_hidden_layers),
        int(cfg.hidden_size),
        f"{cfg.model_type} checkpoint {init} (LoRA adapters not counted)",
    )
