"""Throughput bookkeeping: parameter counts, FLOPs per token, model FLOP utilisation (MFU), peak
memory.

MFU follows the PaLM / nanoGPT estimate: a training token costs ``6 * N`` FLOPs for the weights
(forward + backward) plus ``12 * n_layer * n_embd * T`` for attention over a context of ``T``.
It is reported against the device's dense bf16 peak, looked up by name, or taken from the
``DIVSWEEP_PEAK_FLOPS`` environment variable for devices not in the table.

Example::

    >>> flops_per_token(n_params=5_000_000, n_layer=6, n_embd=256, seq_len=120)
    32211840
    >>> round(mfu(tokens_per_s=1e6, flops_tok=3.2e7, peak=989e12), 4)
    0.0324
"""

from __future__ import annotations

import os

import torch

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' data sheets (SXM parts).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "A40": 149.7e12,
    "L40S": 362e12,
    "L4": 121e12,
}


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: float) -> int:
    """Training FLOPs per token (forward and backward)."""
    return int(6 * n_params + 12 * n_layer * n_embd * seq_len)


def device_peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of a CUDA device, from the table or DIVSWEEP_PEAK_FLOPS; else None."""
    env = os.environ.get("DIVSWEEP_PEAK_FLOPS")
    if env:
        return float(env)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in name:
            return peak
    return None


def mfu(tokens_per_s: float, flops_tok: float, peak: float) -> float:
    """Achieved FLOP/s as a fraction of ``peak``."""
    return tokens_per_s * flops_tok / peak


def peak_memory_gb(device: torch.device) -> float | None:
    """Peak allocated CUDA memory in GB since the start (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters; tied weights are counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
