"""`train`: the training loop, top to bottom on one screen, with small named pieces beside it.

Setup (device, codec, encoded splits, model, optimiser, resume) → loop over length-bucketed
batches (lr from `lr_at`, forward, masked loss, backward, clip, step) → at each evaluation point
decode the test set and a sample of training rules, write a checkpoint, call
``report(metrics, checkpoint)``. The data order of epoch ``e`` is a pure function of
``(seed, e)`` (`trainer.batching.epoch_plan`), so a checkpoint only needs the step number plus the
model, optimiser and RNG states to resume exactly.

Example::

    >>> from data import DataSpec, generate
    >>> from trainer import TrainConfig, train
    >>> ds = generate(DataSpec(n_instructions=20, examples_per_instruction=20, seed=0))
    >>> result = train(TrainConfig(model="nano", max_steps=50, batch_size=32), ds)  # doctest: +SKIP
    >>> sorted(result.metrics)[:3]                                                  # doctest: +SKIP
    ['epoch', 'examples_seen', 'lr']
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from trainer.batching import IGNORE, collate, epoch_plan, seq_lengths
from trainer.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainer.config import TrainConfig
from trainer.errors import CheckpointError, ConfigError
from trainer.evaluate import evaluate_split, sample_indices
from trainer.model import build_codec, build_model
from trainer.perf import count_params, device_peak_flops, flops_per_token, mfu, peak_memory_gb

log = logging.getLogger(__name__)

Report = Callable[[dict[str, float | int], str | None], None]


@dataclass
class TrainResult:
    """What a finished run hands back."""

    metrics: dict[str, float | int]  # the last reported metrics
    history: list[dict[str, float | int]]  # every reported dict, in order
    failures: list[dict[str, str]]  # a few failed test examples of the last evaluation
    checkpoint: str | None  # the final checkpoint directory, when checkpoint_dir was given
    model: torch.nn.Module = field(repr=False)  # the trained model (on its training device)


# --- small pure helpers ---------------------------------------------------------------------


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


#: Every run shuffles its batch order with this seed (see `trainer.batching.epoch_plan`).
SHARED_ORDER_SEED = 0x0D0E


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


def _cap_gpu_memory(device: torch.device, fraction: float | None) -> float | None:
    """Cap the CUDA allocator at ``fraction`` of ``device``; the share in GB (None: no cap).

    Set before the model is built, so every allocation of the run counts against it. The cap
    lasts for the process (Ray gives each trial its own worker process).
    """
    if fraction is None:
        return None
    if device.type != "cuda":
        log.debug("gpu_memory_fraction=%s ignored on %s", fraction, device.type)
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    total = torch.cuda.get_device_properties(device).total_memory
    log.info("CUDA memory capped at %.3f of %s (%.2f GB)", fraction, device, fraction * total / 1e9)
    return fraction * total / 1e9


# --- what one run carries -------------------------------------------------------------------


@dataclass
class Counters:
    """How far training got; with the config it is the checkpoint's metadata, so a resumed run
    continues exactly (the data order is a pure function of the seed and the epoch)."""

    step: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    wall_s: float = 0.0  # wall time of the run up to the last checkpoint (earlier processes)
    history: list[dict[str, float | int]] = field(default_factory=list)

    def meta(self, cfg: TrainConfig, wall_s: float) -> dict[str, Any]:
        """The checkpoint metadata at total wall time ``wall_s``."""
        return {
            "step": self.step,
            "examples_seen": self.examples_seen,
            "tokens_seen": self.tokens_seen,
            "wall_s": wall_s,
            "history": self.history,
            "config": cfg.model_dump(mode="json"),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Counters:
        return cls(
            meta["step"],
            meta["examples_seen"],
            meta["tokens_seen"],
            meta["wall_s"],
            meta["history"],
        )


@dataclass
class _Window:
    """Training since the last evaluation: the loss sum (kept on the device, so a step never
    waits for the GPU) and the tokens and seconds behind ``tokens_per_s``."""

    loss_sum: torch.Tensor
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def stop(self) -> None:
        """End the timed part of the window (before an evaluation)."""
        self.seconds += time.perf_counter() - self.started

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.steps, self.tokens, self.seconds = 0, 0, 0.0
        self.started = time.perf_counter()


@dataclass(frozen=True)
class _Run:
    """Everything the loop reads and nothing it changes: set up once by `train`."""

    cfg: TrainConfig
    dataset: Any
    codec: Any
    train_seqs: Any
    test_seqs: Any
    lengths: np.ndarray
    device: torch.device
    amp_dtype: torch.dtype | None
    total_steps: int
    plans: EpochPlans
    test_idx: np.ndarray
    train_idx: np.ndarray
    flops_tok: float
    peak_flops: float | None
    share_gb: float | None
    t_start: float


# --- the loop -------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    dataset: Any,
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    *,
    gpu_memory_fraction: float | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``dataset`` (a `data.RewriteDataset`), evaluating and reporting as it goes.

    ``report(metrics, checkpoint)`` is called at each evaluation with flat scalar metrics and the
    path of the checkpoint just written (None without ``checkpoint_dir``). If ``checkpoint_dir``
    already holds a checkpoint of this config, training resumes from it exactly. ``progress``
    shows a tqdm bar over the steps (for the CLI).

    ``gpu_memory_fraction`` (0 < f <= 1) caps this process's CUDA caching allocator at that share
    of the device (``torch.cuda.set_per_process_memory_fraction``), so trials that share a GPU
    stay within their part (`trainer.memory` estimates the share); the metrics then include
    ``mem_share_gb`` and ``peak_mem_of_share``. It is ignored on the CPU.
    """
    if gpu_memory_fraction is not None and not 0 < gpu_memory_fraction <= 1:  # NaN fails too
        raise ConfigError(f"gpu_memory_fraction: must be in (0, 1], got {gpu_memory_fraction}")
    run, model = _setup(cfg, dataset, gpu_memory_fraction)
    optimizer = make_optimizer(model, cfg)
    plans = run.plans
    counters, last_path = _resume(checkpoint_dir, cfg, model, optimizer)
    fwd = compiled(model, cfg, run.device)

    model.train()
    window = _Window(torch.zeros((), device=run.device))
    failures: list[dict[str, str]] = []
    epoch, k = plans.locate(counters.step)
    bar = tqdm(
        total=run.total_steps, initial=counters.step, disable=not progress, unit="step", leave=False
    )
    while counters.step < run.total_steps:
        plan = plans.plan(epoch)
        batch: Batch | None = None
        for b in range(k, len(plan)):
            _step(run, model, fwd, optimizer, batch or _prepare(run, plan[b]), counters, window)
            # The step is queued on the GPU: collate and copy the next batch meanwhile.
            batch = _prepare(run, plan[b + 1]) if cfg.prefetch and b + 1 < len(plan) else None
            bar.update(1)
            if _due(run, counters.step, end_of_epoch=b == len(plan) - 1):
                _sync(run.device)
                window.stop()
                metrics, failures = _evaluate(
                    run, model, counters, window, epoch + (b + 1) / len(plan)
                )
                counters.history.append(metrics)
                if checkpoint_dir is not None:
                    state = {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": rng_state(),
                    }
                    meta = counters.meta(cfg, metrics["wall_s"])
                    last_path = str(save_checkpoint(checkpoint_dir, counters.step, state, meta))
                _log_evaluation(run, metrics, bar)
                if report is not None:
                    report(metrics, last_path)
                window.reset()
                model.train()
            if counters.step >= run.total_steps:
                break
        epoch, k = epoch + 1, 0
    bar.close()

    final = counters.history[-1] if counters.history else {}
    return TrainResult(final, counters.history, failures, last_path, model)


def _setup(
    cfg: TrainConfig, dataset: Any, gpu_memory_fraction: float | None
) -> tuple[_Run, torch.nn.Module]:
    """Device, codec, encoded splits, the model on its device, the step count, the samples the
    evaluations decode, and what throughput figures need."""
    t_start = time.perf_counter()
    device, amp_dtype = resolve_device(cfg)
    share_gb = _cap_gpu_memory(device, gpu_memory_fraction)
    vocab = getattr(dataset, "vocab", None)
    codec = build_codec(cfg, vocab)
    train_seqs, test_seqs = codec.encode(dataset, "train"), codec.encode(dataset, "test")
    lengths = seq_lengths(train_seqs)
    n_pos = cfg.dims.n_positions if not cfg.pretrained else None
    longest = int(max(lengths.max(), seq_lengths(test_seqs).max()))
    if n_pos is not None and longest > n_pos:
        raise ConfigError(f"n_positions: {n_pos} is shorter than the longest sequence ({longest})")
    padded = -(-(int(lengths.max()) - 1) // cfg.pad_multiple) * cfg.pad_multiple
    if n_pos is not None and padded > n_pos:
        raise ConfigError(
            f"pad_multiple: {cfg.pad_multiple} pads the widest batch to {padded} positions, "
            f"more than n_positions={n_pos}"
        )
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
    run = _Run(
        cfg,
        dataset,
        codec,
        train_seqs,
        test_seqs,
        lengths,
        device,
        amp_dtype,
        total_steps,
        plans,
        sample_indices(dataset.test.num_rows, cfg.eval_test_n, cfg.seed, salt=0),
        sample_indices(dataset.train.num_rows, cfg.eval_train_n, cfg.seed, salt=1),
        flops_tok,
        device_peak_flops(device),
        share_gb,
        t_start,
    )
    return run, model


def _resume(
    checkpoint_dir: str | Path | None,
    cfg: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[Counters, str | None]:
    """Restore model, optimiser, RNG and counters from the latest checkpoint of this config;
    fresh counters (and the seed) when there is none."""
    ckpt = find_checkpoint(checkpoint_dir)
    if ckpt is None:
        torch.manual_seed(cfg.seed)  # dropout draws, when dropout > 0
        return Counters(), None
    state, meta = load_checkpoint(ckpt)
    if meta["config"] != cfg.model_dump(mode="json"):
        raise CheckpointError(f"checkpoint_dir: {ckpt} was written by a different TrainConfig")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    counters = Counters.from_meta(meta)
    log.info("resumed from %s at step %d", ckpt, counters.step)
    return counters, str(ckpt)


def compiled(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Any:
    """What the step calls: ``model``, or torch.compile of it (with CUDA graphs when asked)."""
    if not cfg.compile:
        return model
    mode = "reduce-overhead" if cfg.cuda_graphs and device.type == "cuda" else None
    return torch.compile(model, mode=mode)


@dataclass(frozen=True)
class Batch:
    """One step's batch on its device, and what the counters need of it."""

    inputs: torch.Tensor
    targets: torch.Tensor
    rows: int
    tokens: int  # real (non-padding) tokens


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


def _prepare(run: _Run, idx: np.ndarray) -> Batch:
    """Batch ``idx`` collated, padded to ``pad_multiple`` and on its way to the device."""
    cfg = run.cfg
    inputs, targets = collate(
        run.train_seqs, idx, run.codec.pad_id, cfg.loss_on, multiple=cfg.pad_multiple
    )
    return Batch(
        to_device(inputs, run.device, cfg.prefetch),
        to_device(targets, run.device, cfg.prefetch),
        len(idx),
        int(run.lengths[idx].sum()),
    )


def _step(
    run: _Run,
    model: torch.nn.Module,
    fwd: Any,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    counters: Counters,
    window: _Window,
) -> None:
    """One optimiser step on ``batch``: lr, forward, masked loss, backward, clip, step.

    Nothing here waits for the GPU (no ``.item()``, no pageable copies): the loss is summed on
    the device, and the host runs ahead to prepare the next batch.
    """
    cfg = run.cfg
    for g in optimizer.param_groups:
        g["lr"] = lr_at(counters.step, cfg, run.total_steps)
    inputs, targets = batch.inputs, batch.targets
    with torch.autocast(
        run.device.type, dtype=run.amp_dtype or torch.bfloat16, enabled=run.amp_dtype is not None
    ):
        logits = fwd(input_ids=inputs).logits  # (B, T, V)
    loss = masked_loss(logits, targets)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    counters.step += 1
    counters.examples_seen += batch.rows
    counters.tokens_seen += batch.tokens
    window.loss_sum += loss.detach()
    window.steps += 1
    window.tokens += batch.tokens


def _due(run: _Run, step: int, end_of_epoch: bool) -> bool:
    """Evaluate now: at the last step, every ``eval_every`` steps, or at an epoch's end."""
    cfg = run.cfg
    return (
        step == run.total_steps
        or (cfg.eval_every is not None and step % cfg.eval_every == 0)
        or (cfg.eval_per_epoch and end_of_epoch)
    )


def _evaluate(
    run: _Run, model: torch.nn.Module, counters: Counters, window: _Window, epoch: float
) -> tuple[dict[str, float | int], list[dict[str, str]]]:
    """The metrics of this evaluation point (training window, test set, train-rule sample,
    memory, wall time) and a few failed test examples."""
    cfg, device = run.cfg, run.device
    metrics: dict[str, float | int] = {
        "step": counters.step,
        "epoch": epoch,
        "examples_seen": counters.examples_seen,
        "tokens_seen": counters.tokens_seen,
        "train_loss": float(window.loss_sum) / max(1, window.steps),
        "lr": lr_at(counters.step - 1, cfg, run.total_steps),
        "tokens_per_s": window.tokens / max(window.seconds, 1e-9),
    }
    if run.peak_flops is not None:
        metrics["mfu"] = mfu(metrics["tokens_per_s"], run.flops_tok, run.peak_flops)
    test = evaluate_split(
        model,
        run.dataset.test,
        run.test_seqs,
        run.codec,
        run.test_idx,
        "test",
        cfg.eval_batch_size,
        cfg.n_failures,
        autocast_dtype=run.amp_dtype,
    )
    metrics.update(test.metrics)
    if len(run.train_idx):
        metrics.update(
            evaluate_split(
                model,
                run.dataset.train,
                run.train_seqs,
                run.codec,
                run.train_idx,
                "train",
                cfg.eval_batch_size,
                0,
                by_occurrence=False,
                autocast_dtype=run.amp_dtype,
            ).metrics
        )
    if (mem := peak_memory_gb(device)) is not None:
        metrics["peak_mem_gb"] = mem
        if run.share_gb is not None:
            metrics["mem_share_gb"] = run.share_gb
            metrics["peak_mem_of_share"] = mem / run.share_gb
    metrics["wall_s"] = counters.wall_s + time.perf_counter() - run.t_start
    return metrics, test.failures


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing a window must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _log_evaluation(run: _Run, metrics: dict[str, float | int], bar: Any) -> None:
    log.info(
        "step %d/%d loss %.4f test_acc %.3f train_acc %s (%.0f tok/s)",
        metrics["step"],
        run.total_steps,
        metrics["train_loss"],
        metrics.get("test_acc", float("nan")),
        f"{metrics['train_acc']:.3f}" if "train_acc" in metrics else "-",
        metrics["tokens_per_s"],
    )
    bar.set_postfix(
        loss=f"{metrics['train_loss']:.3f}", test_acc=f"{metrics.get('test_acc', float('nan')):.3f}"
    )
