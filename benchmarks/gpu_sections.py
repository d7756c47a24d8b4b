"""The sections of `gpu_check.py`, one per process: ``python gpu_sections.py NAME --out DIR ...``.

`gpu_check.py` (which never imports torch, so it never holds a CUDA context) starts each section
here in its own process with a wall-clock bound, so that a crash, a hang or an out-of-memory
error ends that section only. A section appends every figure to ``DIR/rows.jsonl`` the moment it
is measured (one JSON object a line, flushed and fsynced): what a killed section measured stays.

Sections (``--quick``: toy sizes, the same code, for the CPU rehearsal in the test suite):

- ``smoke``: versions, the device, one fused forward/backward and a few `train` steps;
- ``fused``: `bench_fused` (fused K against K processes sharing the device and against one
  process training the K one after another, steady state) for the fig2a-mini model and the
  paper's model, K = 8, 1, 16, 4;
- ``fig2a_slice``: a real Fig. 2a trial (10^6 examples, I = 1000, the preset's lengths, model,
  batch and evaluation) trained for a timed slice, projected to the trial's and the 16-cell
  study's GPU-hours (separately, and fused at K = 16 from the ``fused`` rows);
- ``train_speed``: `trainer.loop.train`'s steady tokens/s and MFU against HF ``Trainer`` (same
  data, model, batch; eager), and ours compiled with CUDA graphs;
- ``evaluator``: our greedy decoder against HF ``generate`` (batched), fp32 and bf16;
- ``memory``: `trainer.memory`'s estimate per preset against the peak of real CUDA steps, and a
  fused group of 8 against ``estimate.fused(8)``;
- ``cuda_tests``: the ``gpu``-marked tests (pytest, warnings not turned into errors: the device
  has its own versions of torch and transformers, and a new deprecation is no failure).

``GPU_CHECK_INJECT`` (tests only) makes a section fail on purpose: ``hang``, ``oom`` (raises
``torch.OutOfMemoryError``), ``kill`` (the process kills itself with SIGKILL), or
``member-oom`` (a member process of the ``fused`` section raises ``torch.OutOfMemoryError``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import bench_fused  # noqa: E402
from bench_eval import hf_generate  # noqa: E402
from bench_memory import SPEC, measure_cuda  # noqa: E402
from bench_train import hf_trainer_tokens_per_s  # noqa: E402

from data import DataSpec, Vocab, generate  # noqa: E402
from trainer import TrainConfig  # noqa: E402
from trainer.decode import greedy_decode  # noqa: E402
from trainer.fused import clip_per_member, member_losses  # noqa: E402
from trainer.gpt2.fused import FusedGPT2  # noqa: E402
from trainer.loop import train  # noqa: E402
from trainer.memory import estimate_train_memory  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.perf import count_params, device_peak_flops, flops_per_token  # noqa: E402
from trainer.step import make_optimizer  # noqa: E402

MiB = 2**20
PRESET_NAMES = ("nano", "tiny", "small", "paper")


@dataclass(frozen=True)
class Ctx:
    """One section's settings and where its rows go."""

    section: str
    device: str
    quick: bool
    out: Path
    work: Path  # scratch shared by sections (a trained model), not returned
    time_s: float  # this section's wall-clock bound

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def emit(self, row: dict[str, Any]) -> None:
        """Append ``row`` to rows.jsonl at once (a section killed later keeps it)."""
        with open(self.out / "rows.jsonl", "a") as f:
            f.write(json.dumps({"section": self.section, **row}, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _sync(ctx: Ctx) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


class _Vocab:
    def __init__(self, size: int) -> None:
        self.size, self.pad_id, self.eos_id = size, 0, 1

    def decode(self, ids: list[int]) -> str:
        return ""


# --- smoke ------------------------------------------------------------------------------------


def smoke(ctx: Ctx) -> None:
    import transformers  # only its version is read here

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if ctx.cuda else platform.processor() or "cpu",
        "cuda": torch.version.cuda if ctx.cuda else None,
        "cpus": os.cpu_count(),
    }
    ctx.emit({"environment": env})
    device = torch.device(ctx.device)
    cfg = TrainConfig(model="nano", max_steps=3, batch_size=8, device=ctx.device)
    models = [build_model(cfg.model_copy(update={"seed": s}), _Vocab(13)) for s in (0, 1)]
    fused = FusedGPT2(models).to(device)
    ids = torch.randint(1, 13, (2, 4, 16), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ctx.cuda):
        member_losses(fused(ids), ids).sum().backward()
    t0 = time.perf_counter()
    ds = generate(DataSpec(n_instructions=20, examples_per_instruction=20, seed=0))
    result = train(cfg.model_copy(update={"eval_test_n": 8, "eval_train_n": 0}), ds)
    ctx.emit(
        {
            "fused_forward_backward": "ok",
            "train_steps": result.metrics["step"],
            "train_s": round(time.perf_counter() - t0, 1),
        }
    )


# --- fused against processes and sequential ---------------------------------------------------


def _fused_plan(ctx: Ctx) -> list[tuple[bench_fused.Setup, list[int]]]:
    """(setup, ks) per model shape: the headline K = 8 first."""
    d = ctx.device
    if ctx.quick:
        # K = 2 only: fused, 2 member processes (the spawn path) and 2 in a row, 3 steps each
        return [(bench_fused.Setup("mini", 8, steps=3, warmup=1, device=d), [2])]
    if ctx.cuda:
        return [
            (bench_fused.Setup("mini", 32, steps=150, warmup=20, device=d), [8, 1, 16, 4]),
            (
                bench_fused.Setup("paper", 256, "paper", steps=150, warmup=20, device=d),
                [8, 1, 16, 4],
            ),
        ]
    return [
        (bench_fused.Setup("mini", 8, steps=150, device=d), [1, 4, 8, 16]),
        (bench_fused.Setup("paper", 4, "mini", steps=150, device=d), [1, 4, 8, 16]),
    ]


def fused(ctx: Ctx) -> None:
    for setup, ks in _fused_plan(ctx):
        ctx.emit({"setup": vars(setup)})

        def emit(row: dict[str, Any], shape: str = setup.shape) -> None:
            ctx.emit({"shape": shape, **row})

        bench_fused.measure(setup, ks, runs=1, sides=bench_fused.SIDES, threads=1, emit=emit)


# --- a slice of a paper-scale Fig. 2a trial ---------------------------------------------------


def fig2a_slice(ctx: Ctx) -> None:
    n_i, s_per, steps, warm, test_n = (
        (100, 10, 6, 3, 16)
        if ctx.quick
        else (1000, 1000, 240 if ctx.cuda else 20, 40 if ctx.cuda else 10, 5000)
    )
    spec = DataSpec(  # sweeps/presets/fig2a.yaml's data at I = 1000
        n_instructions=n_i,
        examples_per_instruction=s_per,
        z_len=(10, 50),
        x_len=(2, 20),
        y_len=(1, 20),
        noop_fraction=0.0,
        test={"n_test": max(test_n, 100), "n_instructions": 1000 if not ctx.quick else 100},
        seed=0,
    )
    t0 = time.perf_counter()
    ds = generate(spec)
    gen_s = time.perf_counter() - t0
    epoch_tokens = int(np.diff(ds.encoded("train").offsets).sum())
    cfg = TrainConfig(
        model="nano" if ctx.quick else "paper",
        max_steps=steps,
        batch_size=256,
        device=ctx.device,
        eval_every=warm,
        eval_per_epoch=False,
        eval_test_n=test_n,
        seed=0,
    )
    h = train(cfg, ds).history
    tps = h[-1]["tokens_per_s"]
    window_s = (h[-1]["tokens_seen"] - h[-2]["tokens_seen"]) / tps
    eval_s = max(0.0, h[-1]["wall_s"] - h[-2]["wall_s"] - window_s)
    epochs = 50
    trial_h = (epochs * epoch_tokens / tps + epochs * eval_s) / 3600
    row: dict[str, Any] = {
        "examples": ds.train.num_rows,
        "generate_s": round(gen_s, 2),
        "tokens_per_epoch": epoch_tokens,
        "model": cfg.model,
        "steps_timed": steps - warm,
        "tokens_per_s": round(tps),
        "mfu": round(h[-1]["mfu"], 4) if "mfu" in h[-1] else None,
        "one_evaluation_s": round(eval_s, 2),
        "trial_gpu_hours": round(trial_h, 3),
        "study_gpu_hours_16_cells": round(16 * trial_h, 2),
    }
    k16 = _fused_k16(ctx.out / "rows.jsonl")
    if k16 is not None and not ctx.quick:
        study = (16 * epochs * epoch_tokens / k16 + 16 * epochs * eval_s) / 3600
        row["study_gpu_hours_fused_k16"] = round(study, 2)
    ctx.emit(row)


def _fused_k16(rows: Path) -> float | None:
    """The paper model's fused K = 16 tokens/s from the ``fused`` section's rows, if measured."""
    if not rows.exists():
        return None
    for line in rows.read_text().splitlines():
        r = json.loads(line)
        if r.get("shape") == "paper" and r.get("summary") and r.get("k") == 16:
            return r.get("fused_tokens_per_s")
    return None


# --- training speed ---------------------------------------------------------------------------


def _speed_cfg(ctx: Ctx, compiled: bool) -> TrainConfig:
    model, batch, steps, warm = (
        ("nano", 32, 8, 3)
        if ctx.quick
        else ("paper", 256, 160, 40)
        if ctx.cuda
        else ("tiny", 64, 60, 15)
    )
    return TrainConfig(
        model=model,  # type: ignore[arg-type]
        max_steps=steps,
        batch_size=batch,
        device=ctx.device,
        compile=compiled,
        cuda_graphs=compiled and ctx.cuda,
        pad_multiple=16 if compiled else 1,
        eval_every=warm,  # the last window is timed: compile and first steps left out
        eval_per_epoch=False,
        eval_test_n=16,
        eval_train_n=0,
        seed=0,
    )


def train_speed(ctx: Ctx) -> None:
    ds = generate(
        DataSpec(n_instructions=500, examples_per_instruction=20, noop_fraction=0.3, seed=0)
    )
    mean_len = float(np.diff(ds.encoded("train").offsets).mean())
    peak = device_peak_flops(torch.device(ctx.device))
    for compiled in [False] if ctx.quick else [False, True]:
        cfg = _speed_cfg(ctx, compiled)
        t0 = time.perf_counter()
        result = train(cfg, ds)
        last = result.history[-1]
        ctx.emit(
            {
                "who": "trainer.train" + (" compiled+graphs" if compiled else ""),
                "model": cfg.model,
                "batch": cfg.batch_size,
                "tokens_per_s": round(last["tokens_per_s"]),
                "mfu": round(last["mfu"], 4) if "mfu" in last else None,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        if compiled:
            continue  # HF's own compile is two more cold compiles: left out for time
        result.model.save_pretrained(ctx.work / "speed-model")  # the evaluator's model
        hf_cfg = result.model.config
        flops_tok = flops_per_token(
            count_params(result.model), hf_cfg.num_hidden_layers, hf_cfg.hidden_size, mean_len
        )
        t0 = time.perf_counter()
        warm = cfg.eval_every or 0
        hf_tps, hf_pad = hf_trainer_tokens_per_s(cfg, ds, cfg.max_steps or 0, ctx.cuda, False, warm)
        ctx.emit(
            {
                "who": "HF Trainer",
                "model": cfg.model,
                "batch": cfg.batch_size,
                "tokens_per_s": round(hf_tps),
                "mfu": round(hf_tps * flops_tok / peak, 4) if peak else None,
                "padding": round(hf_pad, 3),
                "ours_over_hf": round(last["tokens_per_s"] / hf_tps, 2),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )


# --- the evaluator ----------------------------------------------------------------------------


def evaluator(ctx: Ctx) -> None:
    from transformers import GPT2LMHeadModel  # the saved model's class, HF's own loader

    ds = generate(
        DataSpec(n_instructions=500, examples_per_instruction=20, noop_fraction=0.3, seed=0)
    )
    saved = ctx.work / "speed-model"
    if saved.exists():
        model = GPT2LMHeadModel.from_pretrained(saved, attn_implementation="sdpa")
    else:  # train_speed did not run: a briefly trained model of our own
        model = train(_speed_cfg(ctx, False), ds).model
    model = model.to(ctx.device).eval()
    enc = ds.encoded("test")
    n = min(len(enc), 64 if ctx.quick else 2000)
    prompts = [np.asarray(enc.prompt(i)) for i in range(n)]
    max_new = int((enc.lengths - enc.prompt_lens).max())
    eos, pad, batch = ds.vocab.eos_id, ds.vocab.pad_id, 256
    for bf16 in (False, True) if ctx.cuda else (False,):
        dtype = torch.bfloat16 if bf16 else None
        greedy_decode(model, prompts[:32], eos, max_new, batch_size=batch, autocast_dtype=dtype)
        hf_generate(model, prompts[:32], pad, eos, max_new, batch, bf16)  # warm-up, untimed
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for _ in range(1 if ctx.quick else 3):
            ours, s = _timed(
                ctx,
                partial(greedy_decode, model, prompts, eos, max_new, batch, autocast_dtype=dtype),
            )
            times["ours"].append(s)
            theirs, s = _timed(
                ctx, partial(hf_generate, model, prompts, pad, eos, max_new, batch, bf16)
            )
            times["hf"].append(s)
        ours_s, hf_s = statistics.median(times["ours"]), statistics.median(times["hf"])
        ctx.emit(
            {
                "precision": "bf16 autocast" if bf16 else "fp32",
                "prompts": n,
                "max_new_tokens": max_new,
                "ours_s": round(ours_s, 3),
                "hf_generate_s": round(hf_s, 3),
                "speedup": round(hf_s / ours_s, 2),
                "predictions_differing": sum(a != b for a, b in zip(ours, theirs, strict=True)),
            }
        )


def _timed(ctx: Ctx, fn: Callable[[], Any]) -> tuple[Any, float]:
    _sync(ctx)
    t0 = time.perf_counter()
    out = fn()
    _sync(ctx)
    return out, time.perf_counter() - t0


# --- memory -----------------------------------------------------------------------------------


def memory(ctx: Ctx) -> None:
    vocab_size = Vocab.build(SPEC.alphabet).size
    seq = SPEC.max_seq_len
    steps = 2 if ctx.quick else 3
    for name in PRESET_NAMES:
        cfg = TrainConfig(model=name, max_steps=steps, seed=0)  # type: ignore[arg-type]
        est = estimate_train_memory(cfg, vocab_size, seq)
        row: dict[str, Any] = {
            "preset": name,
            "batch": f"{est.rows} x {est.seq_len} tokens, {est.dtype}",
            "estimate_mib": round(est.total / MiB, 1),
        }
        if ctx.cuda:
            m = measure_cuda(cfg, vocab_size, est, steps)
            row |= {
                "peak_allocated_mib": round(m["allocated"] / MiB, 1),
                "device_in_use_mib": round(m["in_use"] / MiB, 1),
                "estimate_over_in_use": round(est.total / m["in_use"], 3),
            }
        ctx.emit(row)
    if ctx.cuda:
        k, cfg = 8, TrainConfig(model="tiny", max_steps=steps, seed=0)
        est = estimate_train_memory(cfg, vocab_size, seq).fused(k)
        m = measure_fused_cuda(cfg, k, vocab_size, est.rows // k, est.seq_len, steps)
        ctx.emit(
            {
                "preset": f"tiny, fused x{k}",
                "estimate_mib": round(est.total / MiB, 1),
                "peak_allocated_mib": round(m["allocated"] / MiB, 1),
                "device_in_use_mib": round(m["in_use"] / MiB, 1),
                "estimate_over_in_use": round(est.total / m["in_use"], 3),
            }
        )


def measure_fused_cuda(
    cfg: TrainConfig, k: int, vocab_size: int, rows: int, seq_len: int, steps: int
) -> dict[str, int]:
    """Peak memory of ``steps`` fused steps of K members on worst-case (rows, seq_len) batches."""
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    models = [build_model(cfg.model_copy(update={"seed": i}), _Vocab(vocab_size)) for i in range(k)]
    fused = FusedGPT2(models).to(device)
    del models
    opt = make_optimizer(fused, cfg, stacked=True)
    for _ in range(steps):
        ids = torch.randint(vocab_size, (k, rows, seq_len), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = fused(ids)
        member_losses(logits, ids).sum().backward()
        clip_per_member(list(fused.stack), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    out = {"allocated": torch.cuda.max_memory_allocated(device), "in_use": total - free}
    del fused, opt
    torch.cuda.empty_cache()
    return out


# --- the CUDA tests ---------------------------------------------------------------------------


def cuda_tests(ctx: Ctx) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    # -p no:warnings: the project's `filterwarnings = error` is for its own pinned versions;
    # the device's torch and transformers may warn about anything, which is no failure here.
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/trainer"]
    cmd += ["-p", "no:cacheprovider", "-p", "no:warnings"]
    t0 = time.perf_counter()
    try:  # a fixed argument list, no shell; ends before this section's own bound
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(5.0, ctx.time_s - 10),
        )
        output, status = proc.stdout + proc.stderr, ("ok" if proc.returncode == 0 else "failed")
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        status = "timeout"
    summary = [
        ln
        for ln in output.splitlines()
        if " in " in ln and ("passed" in ln or "skipped" in ln or "failed" in ln or "error" in ln)
    ]
    ctx.emit(
        {
            "tests": status,
            "summary": summary[-1] if summary else "",
            "seconds": round(time.perf_counter() - t0, 1),
            "output_tail": output[-3000:],
        }
    )
    if status != "ok":
        raise RuntimeError(f"the CUDA tests {status}: {summary[-1] if summary else ''}")


SECTIONS: dict[str, Callable[[Ctx], None]] = {
    "smoke": smoke,
    "fused": fused,
    "fig2a_slice": fig2a_slice,
    "train_speed": train_speed,
    "evaluator": evaluator,
    "memory": memory,
    "cuda_tests": cuda_tests,
}


def _inject(kind: str) -> None:
    """Fail on purpose, as the tests ask (see the module docstring)."""
    if kind == "hang":
        time.sleep(10**6)
    elif kind == "oom":
        raise torch.OutOfMemoryError("injected: CUDA out of memory (a test)")
    elif kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "member-oom":
        os.environ[bench_fused.INJECT_ENV] = "oom"  # member 1 of each processes run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("section", choices=sorted(SECTIONS))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--time-s", type=float, default=600.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1 if args.device == "cpu" else min(8, os.cpu_count() or 1))
    ctx = Ctx(args.section, args.device, args.quick, args.out, args.work, args.time_s)
    try:
        _inject(os.environ.get("GPU_CHECK_INJECT", ""))
        SECTIONS[args.section](ctx)
    except BaseException as e:  # the row names it; the orchestrator reads the exit status
        ctx.emit({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
