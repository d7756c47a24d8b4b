"""Fused training: K same-shaped GPT-2s trained as one model, in one process, on one device.

A paper-scale study is a grid of small models (Fig. 2a: 16 GPT-2s of ~5 M parameters). One such
model leaves most of a GPU idle, and several processes sharing a GPU without NVIDIA MPS run
their kernels one after another, so packing processes shares memory, not compute. Fusing does
what HFTA (Wang et al., MLSys 2021) does: every parameter of the K members is stacked on a
leading member axis, each layer runs as one batched matrix product over the members
(``torch.baddbmm``), and one fused AdamW step updates all K. Each member still sees only its own
data set, batch order and seed:

- member ``k`` starts from exactly the weights ``build_model(cfgs[k])`` draws;
- its batch at step ``s`` is the one its own run would train on (`trainer.batching.epoch_plan`
  of its seed), right-padded to the group's widest batch; padding is ignored by the loss and,
  under causal attention, invisible to real positions;
- the loss is the sum of the members' masked mean losses, so each member's gradient is exactly
  its own; gradient clipping is per member; AdamW is elementwise, so a stacked step is K steps;
- evaluation copies member ``k``'s weights into a plain Hugging Face GPT-2 and runs the same
  evaluator a separate run uses; checkpoints are per member, in a separate run's format
  (``checkpoint_dir/m<k>/ckpt-…`` with the model's state dict and a plain AdamW state), so a
  fused trial resumes fused, and its members' checkpoints load into `trainer.train` too.

The result equals K separate `trainer.train` runs to float32 rounding (the padded shapes sum in
a different order); ``tests/trainer/test_fused.py`` checks losses, accuracies and weights, and
that a fused run resumes exactly. What may be fused (`fusable`): scratch GPT-2s whose configs
differ at most in ``seed``, without dropout (a fused dropout mask would not be the member's own
draw), batched in examples (``batch_size``: every member then has the same number of steps and
the same evaluation points).

Example::

    >>> cfgs = [TrainConfig(model="nano", max_steps=100, seed=s) for s in range(8)]
    >>> results = train_fused(cfgs, [generate(spec.with_updates(seed=s)) for s in range(8)])
    ...                                                                   # doctest: +SKIP
    >>> [r.metrics["test_acc"] for r in results]                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from trainer.batching import IGNORE, collate
from trainer.checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint
from trainer.config import TrainConfig, fusable
from trainer.errors import CheckpointError, ConfigError
from trainer.loop import (
    Counters,
    TrainResult,
    _due,
    _evaluate,
    _log_evaluation,
    _Run,
    _setup,
    _sync,
    _Window,
    compiled,
    lr_at,
    make_optimizer,
    to_device,
)

log = logging.getLogger(__name__)

#: Members per forward/backward pass on a CPU. All K at once make every activation K times
#: larger than a core's caches: on one core, K = 16 at once ran at 0.90x the speed of 16
#: separate runs, 4 at a time at parity (`benchmarks/bench_fused.py`). A GPU takes all K.
CPU_MEMBER_CHUNK = 4

#: ``report(member_metrics, checkpoint)``: one flat metrics dict per member, in member order,
#: and the directory holding every member's checkpoint (None without ``checkpoint_dir``).
FusedReport = Callable[[list[dict[str, float | int]], str | None], None]


#: The GPT-2 activations the fused forward computes, as `F.gelu`'s ``approximate``.
_GELU = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


class FusedGPT2(nn.Module):
    """K GPT-2s (`GPT2LMHeadModel`, same shape) as one module with stacked parameters.

    ``forward(input_ids)`` takes (K, B, T) token ids and returns (K, B, T, V) logits, member
    ``k``'s computed with member ``k``'s weights only. Parameters are kept in the members'
    ``named_parameters()`` order (the tied ``lm_head`` is ``wte``, as in GPT-2), each of shape
    ``(K, *member_shape)``; `load_member` writes member ``k`` back into a plain GPT-2.
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


def clip_per_member(stack: Sequence[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` of each member separately (same formula: coef = max/(norm+1e-6))."""
    grads = [p.grad for p in stack if p.grad is not None]
    if not grads:
        return
    sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)  # (K,)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def member_optimizer_state(opt_state: dict[str, Any], member: int) -> dict[str, Any]:
    """A plain (one-model) AdamW state dict: member ``member``'s slice of a fused one."""
    state = {
        i: {key: v if key == "step" else v[member].clone() for key, v in s.items()}
        for i, s in opt_state["state"].items()
    }
    return {"state": state, "param_groups": opt_state["param_groups"]}


def stack_optimizer_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fused AdamW state dict of K plain ones (the inverse of `member_optimizer_state`)."""
    first = states[0]
    stacked = {
        i: {
            key: v if key == "step" else torch.stack([s["state"][i][key] for s in states])
            for key, v in s0.items()
        }
        for i, s0 in first["state"].items()
    }
    return {"state": stacked, "param_groups": first["param_groups"]}


def member_dir(checkpoint_dir: str | Path, member: int) -> Path:
    """Where member ``member`` of a fused run keeps its checkpoints."""
    return Path(checkpoint_dir) / f"m{member}"


def train_fused(
    cfgs: Sequence[TrainConfig],
    datasets: Sequence[Any],
    report: FusedReport | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    *,
    gpu_memory_fraction: float | None = None,
    member_chunk: int | None = None,
) -> list[TrainResult]:
    """Train member ``k`` = ``(cfgs[k], datasets[k])`` for every k as one fused model.

    Returns one `TrainResult` per member, as `trainer.train` would for that member alone (its
    ``model`` is a plain GPT-2 holding the member's final weights). ``report`` is called at each
    evaluation with every member's metrics; each dict also holds ``fused_members`` (K). With
    ``checkpoint_dir``, member checkpoints go to ``checkpoint_dir/m<k>`` and a run resumes from
    them. ``member_chunk``: members per forward/backward pass (default: all of them on CUDA,
    `CPU_MEMBER_CHUNK` on a CPU); the optimizer step always takes all K. Raises `ConfigError`
    when the members cannot be fused (`fusable`) or their data sets
    give them different step counts.
    """
    if len(cfgs) != len(datasets):
        raise ConfigError(f"datasets: {len(datasets)} data sets for {len(cfgs)} members")
    if (why := fusable(cfgs)) is not None:
        raise ConfigError(f"fuse: cannot fuse these trials: {why}")
    if gpu_memory_fraction is not None and not 0 < gpu_memory_fraction <= 1:
        raise ConfigError(f"gpu_memory_fraction: must be in (0, 1], got {gpu_memory_fraction}")
    setups = [_setup(c, d, gpu_memory_fraction) for c, d in zip(cfgs, datasets, strict=True)]
    runs = [run for run, _ in setups]
    models = [model for _, model in setups]
    del setups
    _check_alike(runs)
    run0, device, n = runs[0], runs[0].device, len(runs)
    if member_chunk is not None and member_chunk < 1:
        raise ConfigError(f"member_chunk: must be >= 1, got {member_chunk}")
    chunk = member_chunk or (n if device.type == "cuda" else CPU_MEMBER_CHUNK)
    fused = FusedGPT2(models).to(device)
    template = models[0]  # evaluations and checkpoints go through a plain GPT-2
    del models
    optimizer = make_optimizer(fused, run0.cfg, stacked=True)
    counters = _resume(checkpoint_dir, cfgs, fused, optimizer, template)
    fwd = compiled(fused, run0.cfg, device)
    fused.train()
    windows = [_Window(torch.zeros((), device=device)) for _ in runs]
    last_path = str(checkpoint_dir) if counters[0].step and checkpoint_dir is not None else None
    failures: list[list[dict[str, str]]] = [[] for _ in runs]
    epoch, b0 = run0.plans.locate(counters[0].step)
    bar = tqdm(
        total=run0.total_steps,
        initial=counters[0].step,
        disable=not progress,
        unit="step",
        leave=False,
    )
    log.info("training %d fused members for %d steps", n, run0.total_steps)
    while counters[0].step < run0.total_steps:
        plans = [r.plans.plan(epoch) for r in runs]
        n_batches = len(plans[0])
        batch: FusedBatch | None = None
        for bi in range(b0, n_batches):
            batch = batch or _prepare(runs, [p[bi] for p in plans])
            _fused_step(runs, fused, fwd, optimizer, batch, counters, windows, chunk)
            # The step is queued on the GPU: collate and copy the next batch meanwhile.
            more = run0.cfg.prefetch and bi + 1 < n_batches
            batch = _prepare(runs, [p[bi + 1] for p in plans]) if more else None
            bar.update(1)
            if _due(run0, counters[0].step, end_of_epoch=bi == n_batches - 1):
                _sync(device)
                for w in windows:
                    w.stop()
                all_metrics = []
                for k, run in enumerate(runs):
                    model = fused.load_member(k, template)
                    metrics, failures[k] = _evaluate(
                        run, model, counters[k], windows[k], epoch + (bi + 1) / n_batches
                    )
                    metrics["fused_members"] = n
                    counters[k].history.append(metrics)
                    if checkpoint_dir is not None:
                        _save_member(checkpoint_dir, k, run, model, optimizer, counters[k])
                    all_metrics.append(metrics)
                if checkpoint_dir is not None:
                    last_path = str(checkpoint_dir)
                _log_evaluation(run0, all_metrics[0], bar)
                if report is not None:
                    report(all_metrics, last_path)
                for w in windows:
                    w.reset()
                fused.train()
            if counters[0].step >= run0.total_steps:
                break
        epoch, b0 = epoch + 1, 0
    bar.close()
    results = []
    for k, c in enumerate(counters):
        model = copy.deepcopy(fused.load_member(k, template))
        final = c.history[-1] if c.history else {}
        results.append(TrainResult(final, c.history, failures[k], last_path, model))
    return results


def _check_alike(runs: Sequence[_Run]) -> None:
    """Members must step together: same step count, epoch sizes and vocabulary."""
    first = runs[0]
    v0 = cast(Any, first.codec).vocab.size if first.codec.vocab is not None else None
    for k, r in enumerate(runs[1:], start=1):
        if r.total_steps != first.total_steps:
            raise ConfigError(
                f"fuse: member {k} trains {r.total_steps} steps, member 0 {first.total_steps} "
                "(their data sets differ in size)"
            )
        if r.plans.size(0) != first.plans.size(0):
            raise ConfigError(f"fuse: member {k}'s epochs have another number of batches")
        vk = cast(Any, r.codec).vocab.size if r.codec.vocab is not None else None
        if vk != v0:
            raise ConfigError(f"fuse: member {k}'s vocabulary has {vk} tokens, member 0's {v0}")


def _fused_step(
    runs: Sequence[_Run],
    fused: FusedGPT2,
    fwd: Any,
    optimizer: torch.optim.Optimizer,
    batch: FusedBatch,
    counters: Sequence[Counters],
    windows: Sequence[_Window],
    chunk: int,
) -> None:
    """One optimiser step of every member on its own batch (see the module docstring); like
    `trainer.loop._step`, it never waits for the GPU."""
    run0 = runs[0]
    cfg, device = run0.cfg, run0.device
    for g in optimizer.param_groups:
        g["lr"] = lr_at(counters[0].step, cfg, run0.total_steps)
    inputs, targets = batch.inputs, batch.targets
    parts = []
    # Members go through forward and backward `chunk` at a time (all at once on a GPU); the
    # gradients of each chunk land in its members' slices of the stacked parameters.
    for first in range(0, len(runs), chunk):
        last = first + chunk
        with torch.autocast(
            device.type, dtype=run0.amp_dtype or torch.bfloat16, enabled=run0.amp_dtype is not None
        ):
            logits = fwd(inputs[first:last], first)  # (chunk, B, T, V)
        losses = member_losses(logits, targets[first:last])
        losses.sum().backward()
        parts.append(losses.detach())
    if cfg.grad_clip > 0:
        clip_per_member(list(fused.stack), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    detached = torch.cat(parts)
    for k, (rows, n_tok) in enumerate(zip(batch.rows, batch.tokens, strict=True)):
        counters[k].step += 1
        counters[k].examples_seen += rows
        counters[k].tokens_seen += n_tok
        windows[k].loss_sum += detached[k]
        windows[k].steps += 1
        windows[k].tokens += n_tok


@dataclass(frozen=True)
class FusedBatch:
    """One fused step's (K, B, T) batch on its device, and each member's rows and tokens."""

    inputs: torch.Tensor
    targets: torch.Tensor
    rows: list[int]
    tokens: list[int]


def _prepare(runs: Sequence[_Run], batches: Sequence[np.ndarray]) -> FusedBatch:
    """Each member's own batch, right-padded to the widest, stacked and sent to the device."""
    inputs, targets = _stack_batches(runs, batches)
    run0 = runs[0]
    return FusedBatch(
        to_device(inputs, run0.device, run0.cfg.prefetch),
        to_device(targets, run0.device, run0.cfg.prefetch),
        [len(idx) for idx in batches],
        [int(r.lengths[idx].sum()) for r, idx in zip(runs, batches, strict=True)],
    )


def _stack_batches(
    runs: Sequence[_Run], batches: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, B, T) inputs and targets: each member's own batch, right-padded to the widest."""
    parts = [
        collate(r.train_seqs, idx, r.codec.pad_id, r.cfg.loss_on, multiple=r.cfg.pad_multiple)
        for r, idx in zip(runs, batches, strict=True)
    ]
    b = max(x.shape[0] for x, _ in parts)
    t = max(x.shape[1] for x, _ in parts)
    inputs = torch.full((len(parts), b, t), runs[0].codec.pad_id, dtype=parts[0][0].dtype)
    targets = torch.full((len(parts), b, t), IGNORE, dtype=parts[0][1].dtype)
    for k, (x, y) in enumerate(parts):
        inputs[k, : x.shape[0], : x.shape[1]] = x
        targets[k, : y.shape[0], : y.shape[1]] = y
    return inputs, targets


def member_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(K,) masked mean cross-entropy per member (`trainer.loop.masked_loss` of each)."""
    k, v = logits.shape[0], logits.shape[-1]
    ce = F.cross_entropy(
        logits.float().reshape(-1, v), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).reshape(k, -1)
    counts = (targets.reshape(k, -1) != IGNORE).sum(1)
    return ce.sum(1) / counts


def _save_member(
    checkpoint_dir: str | Path,
    member: int,
    run: _Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: Counters,
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": member_optimizer_state(optimizer.state_dict(), member),
        "rng": rng_state(),
    }
    meta = counters.meta(run.cfg, counters.history[-1]["wall_s"])
    save_checkpoint(member_dir(checkpoint_dir, member), counters.step, state, meta)


def _resume(
    checkpoint_dir: str | Path | None,
    cfgs: Sequence[TrainConfig],
    fused: FusedGPT2,
    optimizer: torch.optim.Optimizer,
    template: nn.Module,
) -> list[Counters]:
    """Every member's counters; with checkpoints, the fused weights and optimizer restored."""
    found = [
        find_checkpoint(member_dir(checkpoint_dir, k)) if checkpoint_dir else None
        for k in range(len(cfgs))
    ]
    if all(f is None for f in found):
        return [Counters() for _ in cfgs]
    if any(f is None for f in found):
        missing = [k for k, f in enumerate(found) if f is None]
        raise CheckpointError(f"checkpoint_dir: members {missing} of {checkpoint_dir} have none")
    loaded = [load_checkpoint(cast(Path, f)) for f in found]
    for k, ((_, meta), cfg) in enumerate(zip(loaded, cfgs, strict=True)):
        if meta["config"] != cfg.model_dump(mode="json"):
            raise CheckpointError(
                f"checkpoint_dir: member {k}'s checkpoint was written by a different TrainConfig"
            )
    steps = {meta["step"] for _, meta in loaded}
    if len(steps) != 1:
        raise CheckpointError(f"checkpoint_dir: members stopped at different steps {sorted(steps)}")
    for k, (state, _) in enumerate(loaded):
        template.load_state_dict(state["model"])
        fused.store_member(k, template)
    optimizer.load_state_dict(stack_optimizer_states([s["optimizer"] for s, _ in loaded]))
    log.info("fused run resumed from %s at step %d", checkpoint_dir, steps.pop())
    return [Counters.from_meta(meta) for _, meta in loaded]
