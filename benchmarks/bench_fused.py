"""Fused training against the same K models trained apart: steady-state aggregate tokens/s.

Member ``k`` is a GPT-2 of the chosen shape with seed ``k``, trained on its own data set (seed
``k``), same steps and batch for all. Three ways to train the K members, each measured over
``--steps`` optimiser steps after ``--warmup`` untimed ones:

- **fused**: one `trainer.fused.FusedStepper`, all K members in one model and one AdamW step;
- **processes**: K processes started together, each a `trainer.loop.ModelStepper` (on CUDA
  capped at 1/K of the GPU's memory, as ``gpu: auto`` packing would). Each child builds its
  model, creates its CUDA context and runs its warm-up steps *before* the common start, so
  its clock holds steady-state steps only, as the fused side's does;
- **sequential**: one process training the K models one after another (each warmed up first).

The clock covers exactly the timed steps (collating and copying each batch, the step, the next
batch prefetched while it runs) and a device sync at each end; model builds, warm-up and
evaluation are outside it. The figure is real (non-padding) training tokens of all members per
second; for processes, over the span from the first child's start to the last child's end.
Each K is measured ``--runs`` times, the sides in a rotating order; medians are printed with
the ratios, and every measurement is appended to ``--rows`` (JSON lines, flushed and fsynced) as
it is taken, so a run cut short keeps what it measured.

Shapes: ``mini`` is the fig2a-mini model (``tiny`` with 3 layers: 4 heads, hidden 128, 0.6 M
parameters) at batch 32 on fig2a-mini's data (8 letters, |z| = 6, |x| = |y| = 2: 20 tokens a
sequence); ``paper`` is the paper's model (6 layers, 4 heads, hidden 256) at batch 256 on the
paper's string lengths (z 10-50, x 2-20, y 1-20). On a CPU the paper shape needs a smaller
batch (``--batch-size``) to finish.

    python benchmarks/bench_fused.py --shape mini                     # CPU, one core
    python benchmarks/bench_fused.py --shape paper --batch-size 4 --data mini
    python benchmarks/bench_fused.py --device cuda --shape paper --runs 1

On a CPU every side keeps the core(s) it is given busy (``--cores``, default the last core: the
whole benchmark and its child processes are pinned to it, so "processes" share one device as
they would share a GPU); the question there is only that fusing is not slower. Each figure is
also given per CPU second (``tokens_per_cpu_s``): on a machine shared with other work, K
processes get K shares of a contended core and one process one share, which favours processes
on the wall clock for reasons that have nothing to do with them. On a GPU the
targets are fused K = 8 at >= 4x the 8 processes for the mini model and >= 1.5x for the paper
model (which fills more of the GPU alone).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing as mp
import os
import queue
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data import DataSpec, generate
from trainer import TrainConfig
from trainer.fused import FusedStepper
from trainer.loop import ModelStepper
from trainer.member import Member
from trainer.run import Stepper, sync

SIDES = ("fused", "processes", "sequential")
#: Seconds a child may take to build and warm up, and to run its timed steps, before the parent
#: gives up on it (kills every child and records the failure).
CHILD_READY_S = 600.0
CHILD_STEPS_S = 1800.0
#: Tests only: "oom" makes member 1 of every processes run raise torch.OutOfMemoryError.
INJECT_ENV = "BENCH_FUSED_INJECT"


@dataclass(frozen=True)
class Setup:
    """What every member shares; member k differs only in its seed (and its data's)."""

    shape: str = "mini"
    batch_size: int = 32
    data: str = "mini"  # "mini": fig2a-mini's strings; "paper": the paper's lengths
    steps: int = 150
    warmup: int = 10
    device: str = "cpu"
    precision: str = "auto"
    compile: bool = False

    def data_spec(self, k: int) -> DataSpec:
        if self.data == "mini":
            return DataSpec(
                n_instructions=64,
                examples_per_instruction=100,
                alphabet="abcdefgh",
                z_len=(6, 6),
                x_len=(2, 2),
                y_len=(2, 2),
                noop_fraction=0.0,
                test={"n_test": 16, "n_instructions": 16, "noop_fraction": 0.0},
                seed=k,
            )
        return DataSpec(  # the paper's lengths (DataSpec's defaults)
            n_instructions=100,
            examples_per_instruction=40,
            noop_fraction=0.0,
            test={"n_test": 16},
            seed=k,
        )

    def cfg(self, k: int) -> TrainConfig:
        dims: dict[str, Any] = (
            {"model": "tiny", "n_layer": 3, "n_positions": 32 if self.data == "mini" else 256}
            if self.shape == "mini"
            else {"model": "paper"}
        )
        return TrainConfig(
            **dims,
            max_steps=self.warmup + self.steps,
            batch_size=self.batch_size,
            lr=1e-3,
            device=self.device,
            precision=self.precision,  # type: ignore[arg-type]
            compile=self.compile,
            eval_per_epoch=False,
            eval_test_n=16,
            eval_train_n=0,
            seed=k,
        )


def batches(members: Sequence[Member], start: int) -> Iterator[list[np.ndarray]]:
    """Each member's batch indices of every step from ``start`` on (epochs wrap as in a run)."""
    epoch, b = members[0].plans.locate(start)
    while True:
        plans = [m.plans.plan(epoch) for m in members]
        for i in range(b, len(plans[0])):
            yield [p[i] for p in plans]
        epoch, b = epoch + 1, 0


def drive(stepper: Stepper, it: Iterator[list[np.ndarray]], first: int, n: int) -> int:
    """Steps ``first .. first + n - 1`` as the training loop runs them (the next batch is
    prepared while a step runs); the real tokens they trained on, all members together."""
    tokens = 0
    batch = stepper.prepare(next(it))
    for i in range(n):
        stepper.step(batch, first + i)
        tokens += sum(batch.tokens)
        batch = stepper.prepare(next(it)) if i + 1 < n else batch
    return tokens


@dataclass(frozen=True)
class Timing:
    """What the timed steps of one side (or one member process) took."""

    start: float  # wall clock (time.time)
    end: float
    tokens: int
    cpu_s: float  # CPU time of the process (all its threads) over the same steps


def timed(stepper: Stepper, setup: Setup, wait: Callable[[], None] | None = None) -> Timing:
    """Warm up (then ``wait()``, for a common start), and time ``setup.steps`` steps."""
    it = batches(stepper.members, 0)
    drive(stepper, it, 0, setup.warmup)  # CUDA context, kernels, allocator: before the clock
    device = stepper.members[0].device
    sync(device)
    if wait is not None:
        wait()
    t0, c0 = time.time(), time.process_time()
    tokens = drive(stepper, it, setup.warmup, setup.steps)
    sync(device)
    return Timing(t0, time.time(), tokens, time.process_time() - c0)


def fused_side(setup: Setup, k: int, datasets: list[Any]) -> list[Timing]:
    return [timed(FusedStepper([setup.cfg(i) for i in range(k)], datasets[:k]), setup)]


def sequential_side(setup: Setup, k: int, datasets: list[Any]) -> list[Timing]:
    return [timed(ModelStepper(setup.cfg(i), datasets[i]), setup) for i in range(k)]


def _child(setup: Setup, i: int, k: int, threads: int, go: Any, out: Any) -> None:
    """One member in its own process: build and warm up, say so, wait for the common start."""
    try:
        torch.set_num_threads(threads)
        if os.environ.get(INJECT_ENV) == "oom" and i == 1:
            raise torch.OutOfMemoryError("injected: CUDA out of memory (a test)")
        ds = generate(setup.data_spec(i))
        share = 1.0 / k if setup.device.startswith("cuda") and k > 1 else None
        stepper = ModelStepper(setup.cfg(i), ds, gpu_memory_fraction=share)

        def ready_then_wait() -> None:
            out.put(("ready", i))
            if not go.wait(CHILD_READY_S):
                raise TimeoutError("no common start came")

        out.put(("done", i, timed(stepper, setup, ready_then_wait)))
    except BaseException as e:  # every failure goes back to the parent, named
        out.put(("error", i, f"{type(e).__name__}: {e}"))
        raise


def processes_side(setup: Setup, k: int, threads: int) -> list[Timing]:
    """K member processes, started together after each has warmed up (see the module docstring).

    Every wait has a deadline and a child that dies is noticed (its exit code), so a crash or
    an out-of-memory child fails this measurement with its reason instead of hanging it.
    """
    if setup.device.startswith("cuda"):
        torch.cuda.empty_cache()  # what this process cached must not crowd the children
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(setup, i, k, threads, go, out)) for i in range(k)]
    try:
        for p in procs:
            p.start()
        _collect(procs, out, "ready", k, time.monotonic() + CHILD_READY_S)
        go.set()
        done = _collect(procs, out, "done", k, time.monotonic() + CHILD_STEPS_S)
    finally:
        _stop(procs)
    return [d[2] for d in done]


def _collect(procs: list[Any], out: Any, kind: str, n: int, deadline: float) -> list[tuple]:
    """``n`` messages of ``kind`` from the children, or an error naming why not."""
    got: list[tuple] = []
    while len(got) < n:
        try:
            msg = out.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a member process died (exit code {dead[0]})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"member processes: {len(got)} of {n} {kind} in time") from None
            continue
        if msg[0] == "error":
            raise RuntimeError(f"member process {msg[1]} failed: {msg[2]}")
        if msg[0] == kind:
            got.append(msg)
    return got


def _stop(procs: list[Any]) -> None:
    for p in procs:
        p.join(timeout=10)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=10)


def measure(
    setup: Setup,
    ks: Sequence[int],
    runs: int,
    sides: Sequence[str],
    threads: int,
    emit: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Every (K, run, side) measurement, emitted as it is taken; then one summary row per K."""
    datasets = [generate(setup.data_spec(i)) for i in range(max(ks))]
    for ds in datasets:
        ds.encoded("train"), ds.encoded("test")
    summaries = []
    for k in ks:
        figures: dict[str, list[float]] = {s: [] for s in sides}
        cpu_figures: dict[str, list[float]] = {s: [] for s in sides}
        for r in range(runs):
            for side in sides[r % len(sides) :] + sides[: r % len(sides)]:  # rotate the order
                row: dict[str, Any] = {"k": k, "run": r, "side": side}
                try:
                    row |= rates(side, _one(setup, side, k, datasets, threads))
                    figures[side].append(row["tokens_per_s"])
                    cpu_figures[side].append(row["tokens_per_cpu_s"])
                except Exception as e:  # noqa: BLE001 - the row says why; the others go on
                    row["error"] = f"{type(e).__name__}: {e}"
                emit(row)
        summaries.append(summary(k, figures) | summary(k, cpu_figures, "tokens_per_cpu_s"))
        emit(summaries[-1])
    return summaries


def rates(side: str, timings: list[Timing]) -> dict[str, float]:
    """Tokens per wall-clock second (sequential: over the sum of the members' times; fused and
    processes: from the first start to the last end) and per CPU second of the processes.

    On a shared CPU the second is the fair one: K processes get K shares of a contended core
    from the scheduler, one process one share, so wall-clock figures favour processes there.
    """
    tokens = sum(t.tokens for t in timings)
    if side == "sequential":
        wall = sum(t.end - t.start for t in timings)
    else:
        wall = max(t.end for t in timings) - min(t.start for t in timings)
    cpu = sum(t.cpu_s for t in timings)
    return {"tokens_per_s": round(tokens / wall, 1), "tokens_per_cpu_s": round(tokens / cpu, 1)}


def _one(setup: Setup, side: str, k: int, datasets: list[Any], threads: int) -> list[Timing]:
    try:
        if side == "fused":
            return fused_side(setup, k, datasets)
        if side == "processes":
            return processes_side(setup, k, threads)
        return sequential_side(setup, k, datasets)
    finally:  # what one side cached (or failed to allocate) must not crowd the next
        gc.collect()
        if setup.device.startswith("cuda"):
            torch.cuda.empty_cache()


def summary(k: int, figures: dict[str, list[float]], unit: str = "tokens_per_s") -> dict[str, Any]:
    """Medians per side (of figures in ``unit``) and the fused ratios against the others."""
    tag = "" if unit == "tokens_per_s" else "_cpu"
    row: dict[str, Any] = {"k": k, "summary": True}
    med = {s: statistics.median(v) for s, v in figures.items() if v}
    for side, value in med.items():
        row[f"{side}_{unit}"] = round(value, 1)
        row[f"{side}{tag}_runs"] = [round(x) for x in figures[side]]
    for other in ("processes", "sequential"):
        if "fused" in med and other in med:
            row[f"fused_over_{other}{tag}"] = round(med["fused"] / med[other], 3)
    return row


def appender(path: Path | None) -> Callable[[dict[str, Any]], None]:
    """Print each row, and append it to ``path`` (JSON lines, fsynced) when given."""

    def emit(row: dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)
        if path is not None:
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())

    return emit


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=["mini", "paper"], default="mini")
    p.add_argument("--data", choices=["mini", "paper"], help="default: the shape's own")
    p.add_argument("--batch-size", type=int, help="default: 32 (mini), 256 (paper)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cores", type=int, nargs="+", help="CPU cores to pin to (default: the last)")
    p.add_argument("--rows", type=Path, help="append every measurement here (JSON lines)")
    args = p.parse_args(argv)
    threads = 1
    if args.device == "cpu":
        cores = args.cores or sorted(os.sched_getaffinity(0))[-1:]
        os.sched_setaffinity(0, cores)  # children inherit it: one device for every side
        threads = len(cores)
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    setup = Setup(
        shape=args.shape,
        batch_size=args.batch_size or (32 if args.shape == "mini" else 256),
        data=args.data or args.shape,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
    )
    emit = appender(args.rows)
    emit(
        {
            "setup": asdict(setup),
            "ks": args.ks,
            "runs": args.runs,
            "threads": threads,
            "cores": sorted(os.sched_getaffinity(0)),
            "load_avg": os.getloadavg(),
            "cpus": os.cpu_count(),
        }
    )
    measure(setup, args.ks, args.runs, args.sides, threads, emit)


if __name__ == "__main__":
    main()
