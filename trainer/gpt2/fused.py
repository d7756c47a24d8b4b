"""`FusedGPT2`: K same-shaped GPT-2s as one module, every parameter stacked on a member axis.

Each layer runs as one batched matrix product over the members (``torch.baddbmm``), and the
embedding lookup as one gather over the stacked tables, so K small models make one GPU's worth
of work (HFTA, Wang et al., MLSys 2021). Member ``k``'s logits are computed from member ``k``'s
weights only; they equal HF's own forward of that member to float32 rounding (the products sum
in another order), tested in ``tests/trainer/test_gpt2_parity.py``.

`param_names` is the table of GPT-2's parameter names this forward reads; the constructor
checks it against the members' own ``named_parameters()``, so a transformers release that
renames one fails here, at once, by name.

Example::

    >>> fused = FusedGPT2([build_model(cfg.model_copy(update={"seed": s}), vocab)
    ...                    for s in range(4)])                      # doctest: +SKIP
    >>> fused(torch.randint(1, vocab.size, (4, 8, 20))).shape       # doctest: +SKIP
    torch.Size([4, 8, 20, <vocab size>])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from trainer.errors import ConfigError


def param_names(n_layer: int) -> list[str]:
    """``GPT2LMHeadModel``'s parameter names in ``named_parameters()`` order (the ``lm_head``
    is tied to ``wte``, so it is not listed)."""
    layer = [
        f"{m}.{w}"
        for m in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
        for w in ("weight", "bias")
    ]
    return [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        *(f"transformer.h.{i}.{name}" for i in range(n_layer) for name in layer),
        "transformer.ln_f.weight",
        "transformer.ln_f.bias",
    ]


#: The GPT-2 activations the fused forward computes, as `F.gelu`'s ``approximate``.
_GELU = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


class FusedGPT2(nn.Module):
    """K GPT-2s (`GPT2LMHeadModel`, same shape) as one module with stacked parameters.

    ``forward(input_ids)`` takes (K, B, T) token ids and returns (K, B, T, V) logits, member
    ``k``'s computed with member ``k``'s weights only. Parameters are kept in the members'
    ``named_parameters()`` order (`param_names`), each of shape ``(K, *member_shape)``;
    `load_member` writes member ``k`` back into a plain GPT-2, `store_member` the other way.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        first = cast(Any, models[0])
        self.n_layer, self.n_head = first.config.n_layer, first.config.n_head
        self.eps = first.config.layer_norm_epsilon
        act = first.config.activation_function
        if act not in _GELU:
            raise ConfigError(
                f"model: fused GPT-2 implements GELU ({', '.join(_GELU)}), got {act!r}"
            )
        self.gelu = _GELU[act]  # F.gelu's `approximate`
        self.names = [n for n, _ in first.named_parameters()]
        if self.names != param_names(self.n_layer):
            raise ConfigError(
                "model: this transformers' GPT-2 names its parameters differently from "
                "trainer.gpt2.fused.param_names; update the table and the forward"
            )
        params = [dict(m.named_parameters()) for m in models]  # once per model, not per name
        with torch.no_grad():
            stacked = [torch.stack([p[n].detach() for p in params]) for n in self.names]
        self.stack = nn.ParameterList(nn.Parameter(t.clone()) for t in stacked)
        self._at = {n: i for i, n in enumerate(self.names)}

    def p(self, name: str, members: slice) -> torch.Tensor:
        """Parameter ``name`` of ``members`` (a view: gradients reach the stacked tensor)."""
        return self.stack[self._at[name]][members]

    def _ln(self, x: torch.Tensor, prefix: str, sl: slice) -> torch.Tensor:
        w, b = self.p(prefix + ".weight", sl), self.p(prefix + ".bias", sl)
        y = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return y * w[:, None, :] + b[:, None, :]

    def _linear(self, x: torch.Tensor, prefix: str, sl: slice) -> torch.Tensor:
        # GPT-2's Conv1D stores (in, out): y = x @ W + b, one batched product over members.
        return torch.baddbmm(
            self.p(prefix + ".bias", sl)[:, None, :], x, self.p(prefix + ".weight", sl)
        )

    def forward(self, input_ids: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Logits of members ``first .. first + K - 1`` for their (K, B, T) ``input_ids``."""
        k, b, t = input_ids.shape
        sl = slice(first, first + k)
        wte = self.p("transformer.wte.weight", sl)  # (K, V, C)
        v, c = wte.shape[1], wte.shape[2]
        h, d = self.n_head, c // self.n_head
        # Member k's token i is row k*V+i of the stacked table: one gather for all members.
        rows = input_ids + torch.arange(k, device=input_ids.device)[:, None, None] * v
        wpe = self.p("transformer.wpe.weight", sl)
        x = F.embedding(rows, wte.reshape(k * v, c)) + wpe[:, None, :t]
        x = x.reshape(k, b * t, c)
        for i in range(self.n_layer):
            pre = f"transformer.h.{i}"
            qkv = self._linear(self._ln(x, f"{pre}.ln_1", sl), f"{pre}.attn.c_attn", sl)
            q, kk, vv = (z.reshape(k * b, t, h, d).transpose(1, 2) for z in qkv.split(c, dim=-1))
            att = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            att = att.transpose(1, 2).reshape(k, b * t, c)
            x = x + self._linear(att, f"{pre}.attn.c_proj", sl)
            m = self._linear(self._ln(x, f"{pre}.ln_2", sl), f"{pre}.mlp.c_fc", sl)
            x = x + self._linear(F.gelu(m, approximate=self.gelu), f"{pre}.mlp.c_proj", sl)
        x = self._ln(x, "transformer.ln_f", sl)
        return torch.bmm(x, wte.transpose(1, 2)).reshape(k, b, t, v)

    @torch.no_grad()
    def load_member(self, member: int, model: nn.Module) -> nn.Module:
        """Copy member ``member``'s weights into ``model`` (a plain GPT-2 of the same shape)."""
        params = dict(model.named_parameters())
        for name, stacked in zip(self.names, self.stack, strict=True):
            params[name].copy_(stacked[member])
        return model

    @torch.no_grad()
    def store_member(self, member: int, model: nn.Module) -> None:
        """Copy ``model``'s weights into member ``member`` (the inverse of `load_member`)."""
        params = dict(model.named_parameters())
        for name, stacked in zip(self.names, self.stack, strict=True):
            stacked[member].copy_(params[name])
