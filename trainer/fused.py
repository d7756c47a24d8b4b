"""Fused training: K same-shaped GPT-2s trained as one model, in one process, on one device.

A paper-scale study is a grid of small models (Fig. 2a: 16 GPT-2s of ~5 M parameters). One such
model leaves most of a GPU idle, and several processes sharing a GPU without NVIDIA MPS run
their kernels one after another, so packing processes shares memory, not compute. Fusing does
what HFTA (Wang et al., MLSys 2021) does: every parameter of the K members is stacked on a
leading member axis (`trainer.gpt2.fused.FusedGPT2`: each layer one batched matrix product over
the members), and one fused AdamW step updates all K. `FusedStepper` is that step for the one
training loop (`trainer.run`); each member still sees only its own data set, batch order and
seed:

- member ``k`` starts from exactly the weights ``build_model(cfgs[k])`` draws;
- its batch at step ``s`` is the one its own run would train on (`trainer.batching.epoch_plan`
  of its seed), right-padded to the group's widest batch; padding is ignored by the loss and,
  under causal attention, invisible to real positions;
- the loss is the sum of the members' masked mean losses, so each member's gradient is exactly
  its own; gradient clipping is per member; AdamW is elementwise, so a stacked step is K steps;
- evaluation copies member ``k``'s weights into a plain Hugging Face GPT-2 and runs the same
  evaluator a separate run uses; checkpoints are per member, in a separate run's format
  (``checkpoint_dir/m<k>/ckpt-…`` with the model's state dict and a plain AdamW state), so a
  fused trial resumes fused, and its members' checkpoints load into `trainer.loop.train` too.

The result equals K separate `trainer.loop.train` runs to float32 rounding (the padded shapes
sum in a different order); ``tests/trainer/test_fused.py`` checks losses, accuracies and
weights, and that a fused run resumes exactly. What may be fused is decided in one place,
`trainer.config.fusable`.

Example::

    >>> cfgs = [TrainConfig(model="nano", max_steps=100, seed=s) for s in range(8)]
    >>> results = train_fused(cfgs, [generate(spec.with_updates(seed=s)) for s in range(8)])
    ...                                                                   # doctest: +SKIP
    >>> [r.metrics["test_acc"] for r in results]                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.batching import IGNORE, collate
from trainer.checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint
from trainer.config import TrainConfig, fusable
from trainer.errors import CheckpointError, ConfigError
from trainer.gpt2.fused import FusedGPT2
from trainer.member import Member, setup_member
from trainer.run import Counters, MembersReport, TrainResult, run
from trainer.step import Batch, autocast, compiled, lr_at, make_optimizer, set_lr, to_device

log = logging.getLogger(__name__)

#: Members per forward/backward pass on a CPU. All K at once make every activation K times
#: larger than a core's caches: on one core, K = 16 at once ran at 0.90x the speed of 16
#: separate runs, 4 at a time at parity (`benchmarks/bench_fused.py`). A GPU takes all K.
CPU_MEMBER_CHUNK = 4


def train_fused(
    cfgs: Sequence[TrainConfig],
    datasets: Sequence[Any],
    report: MembersReport | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    *,
    gpu_memory_fraction: float | None = None,
    member_chunk: int | None = None,
) -> list[TrainResult]:
    """Train member ``k`` = ``(cfgs[k], datasets[k])`` for every k as one fused model.

    Returns one `TrainResult` per member, as `trainer.loop.train` would for that member alone
    (its ``model`` is a plain GPT-2 holding the member's final weights). ``report`` is called at
    each evaluation with every member's metrics; each dict also holds ``fused_members`` (K).
    With ``checkpoint_dir``, member checkpoints go to ``checkpoint_dir/m<k>`` and a run resumes
    from them. ``member_chunk``: members per forward/backward pass (default: all of them on
    CUDA, `CPU_MEMBER_CHUNK` on a CPU); the optimizer step always takes all K. Raises
    `ConfigError` when the members cannot be fused (`trainer.config.fusable`).
    """
    stepper = FusedStepper(cfgs, datasets, gpu_memory_fraction, member_chunk)
    log.info("training %d fused members for %d steps", len(cfgs), stepper.members[0].total_steps)
    return run(stepper, report, checkpoint_dir, progress)


class FusedStepper:
    """The `trainer.run.Stepper` of K fused members (see the module docstring)."""

    def __init__(
        self,
        cfgs: Sequence[TrainConfig],
        datasets: Sequence[Any],
        gpu_memory_fraction: float | None = None,
        member_chunk: int | None = None,
    ) -> None:
        if len(cfgs) != len(datasets):
            raise ConfigError(f"datasets: {len(datasets)} data sets for {len(cfgs)} members")
        if (why := fusable(cfgs, [d.spec for d in datasets])) is not None:
            raise ConfigError(f"fuse: cannot fuse these trials: {why}")
        if member_chunk is not None and member_chunk < 1:
            raise ConfigError(f"member_chunk: must be >= 1, got {member_chunk}")
        pairs = zip(cfgs, datasets, strict=True)
        setups = [setup_member(c, d, gpu_memory_fraction) for c, d in pairs]
        self.members: list[Member] = [member for member, _ in setups]
        models = [model for _, model in setups]
        del setups
        device, n = self.members[0].device, len(self.members)
        self.chunk = member_chunk or (n if device.type == "cuda" else CPU_MEMBER_CHUNK)
        self.fused = FusedGPT2(models).to(device)
        self.template = models[0]  # evaluations and checkpoints go through a plain GPT-2
        del models
        self.tags = {"fused_members": n}
        self.optimizer = make_optimizer(self.fused, self.members[0].cfg, stacked=True)
        self.fwd = compiled(self.fused, self.members[0].cfg, device)

    def load(self, checkpoint_dir: str | Path | None) -> tuple[list[Counters], str | None]:
        """Every member's counters; with checkpoints, the fused weights and optimizer restored."""
        counters = _resume(checkpoint_dir, self.members, self.fused, self.optimizer, self.template)
        resumed = counters[0].step and checkpoint_dir is not None
        return counters, str(checkpoint_dir) if resumed else None

    def prepare(self, batches: Sequence[np.ndarray]) -> Batch:
        """Each member's own batch, right-padded to the widest, stacked and sent to the device."""
        inputs, targets = stack_batches(self.members, batches)
        first = self.members[0]
        return Batch(
            to_device(inputs, first.device, first.cfg.prefetch),
            to_device(targets, first.device, first.cfg.prefetch),
            tuple(len(idx) for idx in batches),
            tuple(int(m.lengths[idx].sum()) for m, idx in zip(self.members, batches, strict=True)),
        )

    def step(self, batch: Batch, step: int) -> torch.Tensor:
        """One optimiser step of every member on its own batch; like the plain step, it never
        waits for the GPU."""
        first = self.members[0]
        set_lr(self.optimizer, lr_at(step, first.cfg, first.total_steps))
        parts = []
        # Members go through forward and backward `chunk` at a time (all at once on a GPU); the
        # gradients of each chunk land in its members' slices of the stacked parameters.
        for lo in range(0, len(self.members), self.chunk):
            hi = lo + self.chunk
            with autocast(first.device, first.amp_dtype):
                logits = self.fwd(batch.inputs[lo:hi], lo)  # (chunk, B, T, V)
            losses = member_losses(logits, batch.targets[lo:hi])
            losses.sum().backward()
            parts.append(losses.detach())
        if first.cfg.grad_clip > 0:
            clip_per_member(list(self.fused.stack), first.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return torch.cat(parts)

    def model(self, member: int) -> nn.Module:
        return self.fused.load_member(member, self.template)

    def train_mode(self) -> None:
        self.fused.train()

    def save(self, checkpoint_dir: str | Path, member: int, counters: Counters) -> str:
        """Member ``member``'s checkpoint in a plain run's format, under ``m<member>/``; the
        directory holding every member's is what a report hands on."""
        state = {
            "model": self.fused.load_member(member, self.template).state_dict(),
            "optimizer": member_optimizer_state(self.optimizer.state_dict(), member),
            "rng": rng_state(),
        }
        meta = counters.meta(self.members[member].cfg)
        save_checkpoint(member_dir(checkpoint_dir, member), counters.step, state, meta)
        return str(checkpoint_dir)

    def final_model(self, member: int) -> nn.Module:
        return copy.deepcopy(self.fused.load_member(member, self.template))


def clip_per_member(stack: Sequence[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` of each member separately (same formula: coef = max/(norm+1e-6))."""
    grads = [p.grad for p in stack if p.grad is not None]
    if not grads:
        return
    sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)  # (K,)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def member_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(K,) masked mean cross-entropy per member (`trainer.step.masked_loss` of each)."""
    k, v = logits.shape[0], logits.shape[-1]
    ce = F.cross_entropy(
        logits.float().reshape(-1, v), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).reshape(k, -1)
    counts = (targets.reshape(k, -1) != IGNORE).sum(1)
    return ce.sum(1) / counts


def stack_batches(
    members: Sequence[Member], batches: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, B, T) inputs and targets: each member's own batch, right-padded to the widest."""
    parts = [
        collate(m.train_seqs, idx, m.codec.pad_id, m.cfg.loss_on, multiple=m.cfg.pad_multiple)
        for m, idx in zip(members, batches, strict=True)
    ]
    b = max(x.shape[0] for x, _ in parts)
    t = max(x.shape[1] for x, _ in parts)
    inputs = torch.full((len(parts), b, t), members[0].codec.pad_id, dtype=parts[0][0].dtype)
    targets = torch.full((len(parts), b, t), IGNORE, dtype=parts[0][1].dtype)
    for k, (x, y) in enumerate(parts):
        inputs[k, : x.shape[0], : x.shape[1]] = x
        targets[k, : y.shape[0], : y.shape[1]] = y
    return inputs, targets


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


def _resume(
    checkpoint_dir: str | Path | None,
    members: Sequence[Member],
    fused: FusedGPT2,
    optimizer: torch.optim.Optimizer,
    template: nn.Module,
) -> list[Counters]:
    """Every member's counters; with checkpoints, the fused weights and optimizer restored."""
    found = [
        find_checkpoint(member_dir(checkpoint_dir, k)) if checkpoint_dir else None
        for k in range(len(members))
    ]
    if all(f is None for f in found):
        return [Counters() for _ in members]
    if any(f is None for f in found):
        missing = [k for k, f in enumerate(found) if f is None]
        raise CheckpointError(f"checkpoint_dir: members {missing} of {checkpoint_dir} have none")
    loaded = [load_checkpoint(cast(Path, f)) for f in found]
    for k, ((_, meta), m) in enumerate(zip(loaded, members, strict=True)):
        if meta["config"] != m.cfg.model_dump(mode="json"):
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
