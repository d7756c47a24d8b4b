"""What one training run reads, set up once: `Member` and `setup_member`.

A member is one model's share of a training run: its config, data set, codec, encoded splits,
device, batch plans, step count, the rows its evaluations decode and what throughput figures
need. `trainer.train` trains one member, `trainer.fused.train_fused` K of them as one model; both
set each member up here and hand them to the one loop (`trainer.run`).

The batches of epoch ``e`` are a pure function of the member's seed and ``e``
(`trainer.batching.epoch_plan`, with one batch *order* seed shared by every run), so a
checkpoint only needs the step number to find its place again (`EpochPlans.locate`).

Example::

    >>> member, model = setup_member(TrainConfig(model="nano", max_steps=50), ds)  # doctest: +SKIP
    >>> member.total_steps, member.plans.locate(20)                                 # doctest: +SKIP
    (50, (0, 20))
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from trainer.batching import Sequences, epoch_plan, seq_lengths
from trainer.config import TrainConfig
from trainer.errors import ConfigError
from trainer.evaluate import SALTS, sample_indices
from trainer.model import Codec, build_codec, build_model
from trainer.perf import count_params, device_peak_flops, flops_per_token

log = logging.getLogger(__name__)

#: Every run shuffles its batch order with this seed (see `trainer.batching.epoch_plan`).
SHARED_ORDER_SEED = 0x0D0E


def resolve_device(cfg: TrainConfig) -> tuple[torch.device, torch.dtype | None]:
    """The device and the autocast dtype (None: plain fp32) a config asks for."""
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {cfg.device!r} requested but CUDA is not available")
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ConfigError(f"precision: bf16 autocast needs CUDA, but device resolved to {device}")
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return device, (torch.bfloat16 if use_bf16 else None)


class EpochPlans:
    """Batches of each epoch, computed on demand; maps a global step to (epoch, batch)."""

    def __init__(self, lengths: np.ndarray, cfg: TrainConfig) -> None:
        self.lengths, self.cfg = lengths, cfg
        self._sizes: list[int] = []

    def plan(self, epoch: int) -> list[np.ndarray]:
        c = self.cfg
        return epoch_plan(
            self.lengths,
            c.seed,
            epoch,
            c.examples_per_batch,
            c.batch_tokens,
            c.bucket_chunk,
            order_seed=SHARED_ORDER_SEED,
        )

    def size(self, epoch: int) -> int:
        """Number of batches (steps) in epoch ``epoch``."""
        if (bs := self.cfg.examples_per_batch) is not None:
            # Same count every epoch: full chunks hold `bucket_chunk` batches, the rest is ceil'd.
            n, per_chunk = len(self.lengths), bs * self.cfg.bucket_chunk
            return (n // per_chunk) * self.cfg.bucket_chunk + -(-(n % per_chunk) // bs)
        while len(self._sizes) <= epoch:
            self._sizes.append(len(self.plan(len(self._sizes))))
        return self._sizes[epoch]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, index of the batch within it) of global step ``step``."""
        epoch = 0
        while step >= self.size(epoch):
            step -= self.size(epoch)
            epoch += 1
        return epoch, step


def cap_gpu_memory(device: torch.device, fraction: float | None) -> float | None:
    """Cap the CUDA allocator at ``fraction`` of ``device``; the share in GB (None: no cap).

    Set before the model is built, so every allocation of the run counts against it. The cap
    lasts for the process (Ray gives each trial its own worker process).
    """
    if fraction is None:
        return None
    if not 0 < fraction <= 1:  # NaN fails too
        raise ConfigError(f"gpu_memory_fraction: must be in (0, 1], got {fraction}")
    if device.type != "cuda":
        log.debug("gpu_memory_fraction=%s ignored on %s", fraction, device.type)
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    total = torch.cuda.get_device_properties(device).total_memory
    log.info("CUDA memory capped at %.3f of %s (%.2f GB)", fraction, device, fraction * total / 1e9)
    return fraction * total / 1e9


@dataclass(frozen=True)
class Member:
    """Everything the loop reads of one member and nothing it changes (`setup_member`)."""

    cfg: TrainConfig
    dataset: Any
    codec: Codec
    train_seqs: Sequences
    test_seqs: Sequences
    fresh_seqs: Sequences  # training rules on inputs no training example has
    lengths: np.ndarray  # tokens of each training sequence
    device: torch.device
    amp_dtype: torch.dtype | None
    total_steps: int
    plans: EpochPlans
    test_idx: np.ndarray  # rows each evaluation decodes
    train_idx: np.ndarray
    fresh_idx: np.ndarray
    flops_tok: float
    peak_flops: float | None
    share_gb: float | None  # the GPU memory share, when capped
    t_start: float  # perf_counter at setup (the run's wall clock)


def setup_member(
    cfg: TrainConfig, dataset: Any, gpu_memory_fraction: float | None = None
) -> tuple[Member, torch.nn.Module]:
    """Device, codec, encoded splits, the model on its device, the step count, the samples the
    evaluations decode, and what throughput figures need."""
    t_start = time.perf_counter()
    device, amp_dtype = resolve_device(cfg)
    share_gb = cap_gpu_memory(device, gpu_memory_fraction)
    vocab = getattr(dataset, "vocab", None)
    codec = build_codec(cfg, vocab)
    train_seqs, test_seqs = codec.encode(dataset, "train"), codec.encode(dataset, "test")
    fresh_seqs = codec.encode(dataset, "fresh")
    lengths = seq_lengths(train_seqs)
    _check_widths(cfg, lengths, seq_lengths(test_seqs))
    model = build_model(cfg, vocab).to(device)
    plans = EpochPlans(lengths, cfg)
    total_steps = cfg.max_steps or sum(plans.size(e) for e in range(cfg.epochs or 0))
    n_params = count_params(model)
    hf_cfg = cast(Any, model).config  # the real dims, also for pretrained checkpoints
    flops_tok = flops_per_token(
        n_params, hf_cfg.num_hidden_layers, hf_cfg.hidden_size, float(lengths.mean())
    )
    log.info(
        "training %d params on %s (%s) for %d steps, %d train / %d test examples",
        n_params,
        device,
        amp_dtype or "fp32",
        total_steps,
        len(lengths),
        dataset.test.num_rows,
    )
    member = Member(
        cfg,
        dataset,
        codec,
        train_seqs,
        test_seqs,
        fresh_seqs,
        lengths,
        device,
        amp_dtype,
        total_steps,
        plans,
        sample_indices(dataset.test.num_rows, cfg.eval_test_n, cfg.seed, salt=SALTS["test"]),
        sample_indices(dataset.train.num_rows, cfg.eval_train_n, cfg.seed, salt=SALTS["train"]),
        sample_indices(dataset.fresh.num_rows, cfg.eval_fresh_n, cfg.seed, salt=SALTS["fresh"]),
        flops_tok,
        device_peak_flops(device),
        share_gb,
        t_start,
    )
    return member, model


def _check_widths(cfg: TrainConfig, train_lengths: np.ndarray, test_lengths: np.ndarray) -> None:
    """Every sequence, and every batch padded to ``pad_multiple``, fits the position table."""
    n_pos = cfg.dims.n_positions if not cfg.pretrained else None
    longest = int(max(train_lengths.max(), test_lengths.max()))
    if n_pos is not None and longest > n_pos:
        raise ConfigError(f"n_positions: {n_pos} is shorter than the longest sequence ({longest})")
    padded = -(-(int(train_lengths.max()) - 1) // cfg.pad_multiple) * cfg.pad_multiple
    if n_pos is not None and padded > n_pos:
        raise ConfigError(
            f"pad_multiple: {cfg.pad_multiple} pads the widest batch to {padded} positions, "
            f"more than n_positions={n_pos}"
        )
