"""The training loop, written once: epochs → steps → evaluation points (evaluate, checkpoint,
report), driving a `Stepper`.

A stepper is one way of turning batches into optimiser steps. There are two:
`trainer.loop.ModelStepper` (one model: what `trainer.train` runs) and
`trainer.fused.FusedStepper` (K same-shaped GPT-2s stepped as one model: `train_fused`). The
loop does not know which it drives: every run has K >= 1 *members* (`trainer.member.Member`),
stepping together through their own batches, each with its own counters, loss window, metrics
and checkpoint. A new way to train (another precision, another parallelism) is a new stepper,
not a copy of this loop.

Top to bottom: restore the members' counters from ``checkpoint_dir`` (`Stepper.load`), then for
each epoch's batches: collate (`Stepper.prepare`; the next batch is prepared while the step runs
on the GPU), step (`Stepper.step`, which never waits for the GPU), count; at each evaluation
point (`due`) evaluate every member (`evaluate_member`), save its checkpoint (`Stepper.save`)
and call ``report(metrics_of_each_member, checkpoint)``.

Example (what `trainer.train` does)::

    >>> stepper = ModelStepper(cfg, ds)                                  # doctest: +SKIP
    >>> [result] = run(stepper, report=lambda ms, ckpt: print(ms[0]["step"]))  # doctest: +SKIP
    >>> result.metrics["test_acc"]                                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from trainer.config import TrainConfig
from trainer.evaluate import METRIC_PREFIX, evaluate_split
from trainer.member import Member
from trainer.perf import mfu, peak_memory_gb
from trainer.step import Batch, lr_at

log = logging.getLogger(__name__)

Metrics = dict[str, float | int]
#: ``report(member_metrics, checkpoint)``: one flat metrics dict per member, in member order, and
#: the path to hand back with them (None without a ``checkpoint_dir``).
MembersReport = Callable[[list[Metrics], str | None], None]


@dataclass
class TrainResult:
    """What a finished run hands back, per member."""

    metrics: Metrics  # the last reported metrics
    history: list[Metrics]  # every reported dict, in order
    failures: list[dict[str, str]]  # a few failed test examples of the last evaluation
    checkpoint: str | None  # the last checkpoint path reported, when checkpoint_dir was given
    model: torch.nn.Module = field(repr=False)  # the trained model (on its training device)


@dataclass
class Counters:
    """How far a member got; with the config it is the checkpoint's metadata, so a resumed run
    continues exactly (the data order is a pure function of the seed and the epoch)."""

    step: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    wall_s: float = 0.0  # wall time of the run up to the last checkpoint (earlier processes)
    history: list[Metrics] = field(default_factory=list)

    def meta(self, cfg: TrainConfig) -> dict[str, Any]:
        """The checkpoint metadata, at the wall time of the last evaluation."""
        return {
            "step": self.step,
            "examples_seen": self.examples_seen,
            "tokens_seen": self.tokens_seen,
            "wall_s": self.history[-1]["wall_s"],
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


class Stepper(Protocol):
    """One way of training a run's members; `run` drives it.

    ``members`` step together (same step count and evaluation points); ``tags`` are added to
    every member's metrics (e.g. ``{"fused_members": K}``).
    """

    @property
    def members(self) -> Sequence[Member]: ...

    @property
    def tags(self) -> dict[str, int]: ...

    def load(self, checkpoint_dir: str | Path | None) -> tuple[list[Counters], str | None]:
        """Each member's counters, with model and optimiser state restored from the latest
        checkpoints in ``checkpoint_dir`` (fresh counters without one), and the checkpoint
        path to report until the next one is written."""
        ...

    def prepare(self, batches: Sequence[np.ndarray]) -> Batch:
        """Each member's batch (rows of its training split), collated and sent to the device."""
        ...

    def step(self, batch: Batch, step: int) -> torch.Tensor:
        """Optimiser step number ``step`` (0-based) of every member; (K,) losses, on the device
        (reading them would wait for the GPU)."""
        ...

    def model(self, member: int) -> torch.nn.Module:
        """Member ``member`` as a plain model (for the evaluator)."""
        ...

    def train_mode(self) -> None:
        """Put what the steps run back in training mode (after an evaluation)."""
        ...

    def save(self, checkpoint_dir: str | Path, member: int, counters: Counters) -> str:
        """Write member ``member``'s checkpoint; the path to report."""
        ...

    def final_model(self, member: int) -> torch.nn.Module:
        """Member ``member``'s trained model, to hand back in its `TrainResult`."""
        ...


@dataclass
class Window:
    """A member's training since the last evaluation: the loss sum (kept on the device, so a
    step never waits for the GPU) and the tokens and seconds behind ``tokens_per_s``."""

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


def run(
    stepper: Stepper,
    report: MembersReport | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
) -> list[TrainResult]:
    """Train ``stepper``'s members to the end, evaluating, checkpointing and reporting as it goes;
    one `TrainResult` per member. ``progress`` shows a tqdm bar over the steps."""
    members, first = stepper.members, stepper.members[0]
    counters, last_path = stepper.load(checkpoint_dir)
    stepper.train_mode()
    windows = [Window(torch.zeros((), device=first.device)) for _ in members]
    failures: list[list[dict[str, str]]] = [[] for _ in members]
    epoch, start = first.plans.locate(counters[0].step)
    bar = tqdm(
        total=first.total_steps,
        initial=counters[0].step,
        disable=not progress,
        unit="step",
        leave=False,
    )
    while counters[0].step < first.total_steps:
        plans = [m.plans.plan(epoch) for m in members]
        n_batches = len(plans[0])
        batch: Batch | None = None
        for b in range(start, n_batches):
            batch = batch or stepper.prepare([p[b] for p in plans])
            losses = stepper.step(batch, counters[0].step)
            _count(counters, windows, batch, losses)
            # The step is queued on the GPU: collate and copy the next batch meanwhile.
            more = first.cfg.prefetch and b + 1 < n_batches
            batch = stepper.prepare([p[b + 1] for p in plans]) if more else None
            bar.update(1)
            if due(first, counters[0].step, end_of_epoch=b == n_batches - 1):
                point = epoch + (b + 1) / n_batches
                last_path = _evaluation_point(
                    stepper, counters, windows, failures, point, checkpoint_dir, last_path
                )
                _log_evaluation(first, counters[0].history[-1], bar)
                if report is not None:
                    report([c.history[-1] for c in counters], last_path)
                for w in windows:
                    w.reset()
                stepper.train_mode()
            if counters[0].step >= first.total_steps:
                break
        epoch, start = epoch + 1, 0
    bar.close()
    return [
        TrainResult(
            c.history[-1] if c.history else {}, c.history, f, last_path, stepper.final_model(k)
        )
        for k, (c, f) in enumerate(zip(counters, failures, strict=True))
    ]


def _count(
    counters: Sequence[Counters], windows: Sequence[Window], batch: Batch, losses: torch.Tensor
) -> None:
    for k, (rows, n_tok) in enumerate(zip(batch.rows, batch.tokens, strict=True)):
        counters[k].step += 1
        counters[k].examples_seen += rows
        counters[k].tokens_seen += n_tok
        windows[k].loss_sum += losses[k]
        windows[k].steps += 1
        windows[k].tokens += n_tok


def _evaluation_point(
    stepper: Stepper,
    counters: Sequence[Counters],
    windows: Sequence[Window],
    failures: list[list[dict[str, str]]],
    epoch: float,
    checkpoint_dir: str | Path | None,
    last_path: str | None,
) -> str | None:
    """Evaluate every member, append its metrics to its history and save its checkpoint; the
    checkpoint path to report."""
    sync(stepper.members[0].device)
    for w in windows:
        w.stop()
    for k, member in enumerate(stepper.members):
        metrics, failures[k] = evaluate_member(
            member, stepper.model(k), counters[k], windows[k], epoch
        )
        metrics.update(stepper.tags)
        counters[k].history.append(metrics)
        if checkpoint_dir is not None:
            last_path = stepper.save(checkpoint_dir, k, counters[k])
    return last_path


def due(member: Member, step: int, end_of_epoch: bool) -> bool:
    """Evaluate now: at the last step, every ``eval_every`` steps, or at an epoch's end."""
    cfg = member.cfg
    return (
        step == member.total_steps
        or (cfg.eval_every is not None and step % cfg.eval_every == 0)
        or (cfg.eval_per_epoch and end_of_epoch)
    )


def evaluate_member(
    member: Member, model: torch.nn.Module, counters: Counters, window: Window, epoch: float
) -> tuple[Metrics, list[dict[str, str]]]:
    """The metrics of this evaluation point (training window, test set, train-rule sample,
    memory, wall time) and a few failed test examples."""
    cfg, device = member.cfg, member.device
    metrics: Metrics = {
        "step": counters.step,
        "epoch": epoch,
        "examples_seen": counters.examples_seen,
        "tokens_seen": counters.tokens_seen,
        "train_loss": float(window.loss_sum) / max(1, window.steps),
        "lr": lr_at(counters.step - 1, cfg, member.total_steps),
        "tokens_per_s": window.tokens / max(window.seconds, 1e-9),
    }
    if member.peak_flops is not None:
        metrics["mfu"] = mfu(metrics["tokens_per_s"], member.flops_tok, member.peak_flops)
    test = evaluate_split(
        model,
        member.dataset.test,
        member.test_seqs,
        member.codec,
        member.test_idx,
        "test",
        cfg.eval_batch_size,
        cfg.n_failures,
        autocast_dtype=member.amp_dtype,
    )
    metrics.update(test.metrics)
    # Training rules on fresh inputs ("has it learnt its rules?"), then re-decoded training
    # examples ("has it memorised them?"): only the first tells learning from memorising.
    for split, table, seqs, idx in (
        ("fresh", member.dataset.fresh, member.fresh_seqs, member.fresh_idx),
        ("train", member.dataset.train, member.train_seqs, member.train_idx),
    ):
        if len(idx):
            metrics.update(
                evaluate_split(
                    model,
                    table,
                    seqs,
                    member.codec,
                    idx,
                    METRIC_PREFIX[split],
                    cfg.eval_batch_size,
                    0,
                    by_occurrence=False,
                    autocast_dtype=member.amp_dtype,
                ).metrics
            )
    if (mem := peak_memory_gb(device)) is not None:
        metrics["peak_mem_gb"] = mem
        if member.share_gb is not None:
            metrics["mem_share_gb"] = member.share_gb
            metrics["peak_mem_of_share"] = mem / member.share_gb
    metrics["wall_s"] = counters.wall_s + time.perf_counter() - member.t_start
    return metrics, test.failures


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing a window must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _log_evaluation(member: Member, metrics: Metrics, bar: Any) -> None:
    log.info(
        "step %d/%d loss %.4f test_acc %.3f fresh_acc %s (%.0f tok/s)",
        metrics["step"],
        member.total_steps,
        metrics["train_loss"],
        metrics.get("test_acc", float("nan")),
        f"{metrics['fresh_acc']:.3f}" if "fresh_acc" in metrics else "-",
        metrics["tokens_per_s"],
    )
    bar.set_postfix(
        loss=f"{metrics['train_loss']:.3f}", test_acc=f"{metrics.get('test_acc', float('nan')):.3f}"
    )
