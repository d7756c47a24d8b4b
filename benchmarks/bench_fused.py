"""Fused training (`trainer.fused`) against K separate trainings of the same K models.

Member ``k`` is a GPT-2 of the chosen preset with seed ``k``, trained on its own data set (the
paper's string lengths, seed ``k``), same steps and batch for all. Two ways to train them:

- **fused**: one `train_fused` call, all K members in one model and one optimizer step;
- **separate**: K `train` calls, either one after another in this process (``--separate
  sequential``, what one CPU core does best) or as K processes started together, each capped
  at 1/K of the GPU's memory as ``gpu: auto`` packing would (``--separate processes``).

The figure is aggregate tokens/s: real (non-padding) training tokens of all members over the
wall time of the training calls (each call's setup, its K model builds, and one final
16-example evaluation per member are inside it, the same for both sides). Each K runs
``--runs`` times, alternating the two sides; medians are printed with the ratio.

    python benchmarks/bench_fused.py                      # CPU, 1 thread, nano, K = 1 4 8 16
    python benchmarks/bench_fused.py --device cuda --model paper --separate processes --steps 60

On one CPU core there is little to gain (the core is already busy with one small model); the
question is that fusing is not slower. On a GPU the target is fused K = 8 at >= 4x the
aggregate tokens/s of 8 processes sharing it.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from data import DataSpec, generate
from trainer import TrainConfig
from trainer.fused import train_fused
from trainer.loop import train


@dataclass(frozen=True)
class Setup:
    """What every member shares; member k differs only in its seed."""

    model: str = "nano"
    steps: int = 30
    batch_size: int = 64
    n_instructions: int = 100
    examples_per_instruction: int = 20
    device: str = "cpu"
    precision: str = "auto"
    compile: bool = False

    def data_spec(self, k: int) -> DataSpec:
        # The paper's string lengths (DataSpec defaults: z 10..50, x 2..20, y 1..20).
        return DataSpec(
            n_instructions=self.n_instructions,
            examples_per_instruction=self.examples_per_instruction,
            noop_fraction=0.3,
            seed=k,
            test={"n_test": 16},
        )

    def cfg(self, k: int) -> TrainConfig:
        return TrainConfig(
            model=self.model,  # type: ignore[arg-type]
            max_steps=self.steps,
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,  # type: ignore[arg-type]
            compile=self.compile,
            eval_per_epoch=False,
            eval_test_n=16,
            eval_train_n=0,
            seed=k,
        )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fused_tokens_per_s(setup: Setup, k: int, datasets: list[Any]) -> float:
    """Aggregate tokens/s of one fused run of members 0..k-1."""
    cfgs = [setup.cfg(i) for i in range(k)]
    _sync(setup.device)
    t0 = time.perf_counter()
    results = train_fused(cfgs, datasets[:k])
    _sync(setup.device)
    wall = time.perf_counter() - t0
    return sum(r.metrics["tokens_seen"] for r in results) / wall


def sequential_tokens_per_s(setup: Setup, k: int, datasets: list[Any]) -> float:
    """Aggregate tokens/s of k `train` calls one after another in this process."""
    tokens, wall = 0, 0.0
    for i in range(k):
        _sync(setup.device)
        t0 = time.perf_counter()
        result = train(setup.cfg(i), datasets[i])
        _sync(setup.device)
        wall += time.perf_counter() - t0
        tokens += int(result.metrics["tokens_seen"])
    return tokens / wall


def _member_process(setup: Setup, i: int, k: int, threads: int, barrier: Any, out: Any) -> None:
    torch.set_num_threads(threads)
    ds = generate(setup.data_spec(i))
    ds.encoded("train"), ds.encoded("test")  # encode before the clock starts
    share = 1.0 / k if setup.device.startswith("cuda") and k > 1 else None
    barrier.wait()
    t0 = time.time()
    result = train(setup.cfg(i), ds, gpu_memory_fraction=share)
    out.put((t0, time.time(), int(result.metrics["tokens_seen"])))


def processes_tokens_per_s(setup: Setup, k: int, threads: int) -> float:
    """Aggregate tokens/s of k `train` processes started together (first start to last end)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [
        ctx.Process(target=_member_process, args=(setup, i, k, threads, barrier, out))
        for i in range(k)
    ]
    for p in procs:
        p.start()
    rows = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a member process failed with exit code {p.exitcode}")
    start, end = min(r[0] for r in rows), max(r[1] for r in rows)
    return sum(r[2] for r in rows) / (end - start)


def compare(
    setup: Setup, ks: list[int], runs: int, separate: str, threads: int, log: Any = print
) -> list[dict[str, Any]]:
    """For each K: ``runs`` alternating measurements of both sides, medians and the ratio."""
    datasets = [generate(setup.data_spec(i)) for i in range(max(ks))]
    for ds in datasets:
        ds.encoded("train"), ds.encoded("test")
    # One untimed fused and separate run: allocator, kernels, compile caches.
    fused_tokens_per_s(setup, 1, datasets)
    sequential_tokens_per_s(setup, 1, datasets)
    rows = []
    for k in ks:
        fused, apart = [], []
        for _ in range(runs):
            fused.append(fused_tokens_per_s(setup, k, datasets))
            if separate == "processes":
                apart.append(processes_tokens_per_s(setup, k, threads))
            else:
                apart.append(sequential_tokens_per_s(setup, k, datasets))
        row = {
            "k": k,
            "fused_tokens_per_s": statistics.median(fused),
            "separate_tokens_per_s": statistics.median(apart),
            "fused_runs": fused,
            "separate_runs": apart,
        }
        row["ratio"] = row["fused_tokens_per_s"] / row["separate_tokens_per_s"]
        log(
            f"K={k:3d}  fused {row['fused_tokens_per_s']:10.0f} tok/s   "
            f"{separate} {row['separate_tokens_per_s']:10.0f} tok/s   "
            f"ratio {row['ratio']:.2f}x   (runs: fused "
            + ", ".join(f"{x:.0f}" for x in fused)
            + "; separate "
            + ", ".join(f"{x:.0f}" for x in apart)
            + ")"
        )
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", default="nano")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--separate", choices=["sequential", "processes"], default="sequential")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    setup = Setup(
        model=args.model,
        steps=args.steps,
        batch_size=args.batch_size,
        device=args.device,
        compile=args.compile,
    )
    print(
        f"{args.model}, batch {args.batch_size}, {args.steps} steps per member, "
        f"{args.device} ({args.threads} thread(s)), separate = {args.separate}, "
        f"{args.runs} runs per K (medians)"
    )
    rows = compare(setup, args.ks, args.runs, args.separate, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
