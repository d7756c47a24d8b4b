"""The pieces of one optimiser step that both steppers share (`trainer.loop`, `trainer.fused`).

`lr_at` (the schedule), `make_optimizer` (AdamW with weight decay on matrices, fused kernel),
`masked_loss` (cross-entropy over the non-padding targets), `compiled` (torch.compile, with CUDA
graphs when asked), `Batch` and `to_device` (a batch on its way to the device without stalling
the host).

Example::

    >>> cfg = TrainConfig(model="nano", max_steps=100, lr=1e-3, warmup_steps=10)
    >>> lr_at(0, cfg, 100), lr_at(9, cfg, 100), lr_at(55, cfg, 100)
    (0.0001, 0.001, 0.0005)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainer.batching import IGNORE
from trainer.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then the decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.lr * (1.0 - frac)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group's learning rate."""
    for g in optimizer.param_groups:
        g["lr"] = lr


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, *, stacked: bool = False
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, norms); fused where supported.

    ``stacked``: every parameter carries a leading member axis (`trainer.fused`), so a matrix
    has three dimensions. Parameters are grouped in ``model.parameters()`` order either way, so
    a fused run's optimizer state slices into a plain run's, index for index.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    matrix_dims = 3 if stacked else 2
    decay = [p for p in params if p.dim() >= matrix_dims]
    no_decay = [p for p in params if p.dim() < matrix_dims]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused: one kernel for every parameter; foreach: a few batched kernels (the fallback).
    fused = cfg.fused_optimizer
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, fused=fused, foreach=None if fused else True
    )


def masked_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the non-IGNORE targets; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )


def compiled(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Any:
    """What the step calls: ``model``, or torch.compile of it (with CUDA graphs when asked)."""
    if not cfg.compile:
        return model
    mode = "reduce-overhead" if cfg.cuda_graphs and device.type == "cuda" else None
    return torch.compile(model, mode=mode)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """bf16 autocast on ``device`` when ``dtype`` is set, else a disabled context."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@dataclass(frozen=True)
class Batch:
    """One step's batch on its device: (B, T) for one model, (K, B, T) for K fused members,
    and each member's rows and real (non-padding) tokens."""

    inputs: torch.Tensor
    targets: torch.Tensor
    rows: tuple[int, ...]
    tokens: tuple[int, ...]


def to_device(t: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    """``t`` on ``device``; from pinned memory without blocking the host when ``pin``.

    A copy from ordinary (pageable) memory makes the host wait for the GPU's queue to drain
    first, so one per step would stall every step on the one before it.
    """
    if device.type != "cuda":
        return t.to(device)
    if pin:
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
