"""One prepared command that proves divsweep's GPU path, writing a JSON and a Markdown report.

    python benchmarks/gpu_check.py --out /tmp/gpu-report              # a CUDA machine, <= 6 min
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/r  # the same code, < 1 min

It needs torch, transformers, accelerate, pytest, pyarrow and pydantic, and neither Ray nor
the rest of the service (``trainer/`` and ``data/`` never import Ray). A GPU machine without
network gets pydantic as wheels: ``bash scripts/gpu_wheels.sh`` here, then there::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --out $OUT

Sections, in order (each one's figures land in the report as soon as it ends, so a run cut
short keeps what it measured; a section that would overrun ``--budget-s`` is skipped, and says
so):

1. ``cuda_tests``: the ``gpu``-marked tests of ``tests/trainer`` (pytest, in a subprocess);
2. ``memory``: for each preset (nano ... paper), `trainer.memory`'s estimate against the peak of
   real CUDA steps on the worst-case batch (`bench_memory.measure_cuda`), and a fused group of
   8 ``tiny`` members against ``estimate.fused(8)``;
3. ``train_speed``: the ``paper`` model in bf16 (fp32 ``nano`` on the CPU): `trainer.train`'s
   steady tokens/s and MFU against HF ``Trainer`` on the same data, model and batch, each eager
   and compiled (ours with CUDA graphs and ``pad_multiple=16``; HF with ``torch_compile``);
4. ``evaluator``: our greedy decoder against HF ``generate`` (batched) on the GPU, fp32 and
   bf16: time and the number of predictions that differ;
5. ``fused``: fused K = 1, 4, 8, 16 against K processes sharing the GPU, each capped at 1/K
   of its memory (`bench_fused`), aggregate tokens/s;
6. ``fig2a_slice``: a real Fig. 2a trial (10^6 examples, I = 1000, the preset's lengths,
   model, batch and evaluation) trained for a timed slice, projected to the trial's and the
   16-cell study's GPU-hours (separately, and with fused K = 16 from section 5).

``--quick`` shrinks every section (nano, a few steps, two fused widths, 10^3 examples) so the
script runs in the test suite (``tests/trainer/test_gpu_check.py``) and cannot rot.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from data import DataSpec, Vocab, generate  # noqa: E402
from trainer import TrainConfig  # noqa: E402
from trainer.loop import train  # noqa: E402
from trainer.perf import device_peak_flops, flops_per_token  # noqa: E402

MiB = 2**20
PRESET_NAMES = ("nano", "tiny", "small", "paper")


@dataclass
class Check:
    """The run's settings, its clock and the report being written."""

    device: str
    quick: bool
    out: Path
    budget_s: float
    started: float = field(default_factory=time.perf_counter)
    report: dict[str, Any] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)  # what one section hands the next

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "report.json").write_text(json.dumps(self.report, indent=1, default=str))
        (self.out / "report.md").write_text(markdown(self.report))


def _sync(check: Check) -> None:
    if check.cuda:
        torch.cuda.synchronize()


# --- 1. the CUDA tests ------------------------------------------------------------------------


def cuda_tests(check: Check) -> dict[str, Any]:
    if not check.cuda:
        return {"status": "skipped", "why": "no CUDA device: the gpu-marked tests skip"}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(  # a fixed argument list, no shell
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "gpu",
            "tests/trainer",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The tests get at most 150 s (compiling with CUDA graphs is most of it), so the
        # measurements after them keep their time.
        output, _ = proc.communicate(timeout=min(150.0, max(30.0, check.left() - 190)))
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        status = "failed"
        output += "\n[gpu_check: the CUDA tests ran out of their time and were stopped]"
    tail = output[-3000:]
    summary = [
        line
        for line in tail.splitlines()
        if any(f" {word}" in line for word in ("passed", "failed", "skipped", "error"))
        and " in " in line
    ]
    return {
        "status": status,
        "returncode": proc.returncode,
        "summary": summary[-1] if summary else "",
        "seconds": round(time.perf_counter() - t0, 1),
        "output_tail": tail,
    }


# --- 2. memory --------------------------------------------------------------------------------


def memory(check: Check) -> dict[str, Any]:
    from bench_memory import SPEC, measure_cuda

    from trainer.memory import estimate_train_memory

    vocab_size = Vocab.build(SPEC.alphabet).size
    seq = SPEC.max_seq_len
    steps = 2 if check.quick else 3
    rows = []
    for name in PRESET_NAMES:
        cfg = TrainConfig(model=name, max_steps=steps, seed=0)  # type: ignore[arg-type]
        est = estimate_train_memory(cfg, vocab_size, seq)
        row: dict[str, Any] = {
            "preset": name,
            "batch": f"{est.rows} x {est.seq_len} tokens, {est.dtype}",
            "estimate_mib": round(est.total / MiB, 1),
        }
        if check.cuda:
            m = measure_cuda(cfg, vocab_size, est, steps)
            row |= {
                "peak_allocated_mib": round(m["allocated"] / MiB, 1),
                "device_in_use_mib": round(m["in_use"] / MiB, 1),
                "estimate_over_in_use": round(est.total / m["in_use"], 3),
            }
        rows.append(row)
    fused_row: dict[str, Any] = {"status": "skipped", "why": "needs CUDA"}
    if check.cuda:
        k = 8
        cfg = TrainConfig(model="tiny", max_steps=steps, seed=0)
        est = estimate_train_memory(cfg, vocab_size, seq).fused(k)
        m = measure_fused_cuda(cfg, k, vocab_size, est.rows // k, est.seq_len, steps)
        fused_row = {
            "members": k,
            "preset": "tiny",
            "estimate_mib": round(est.total / MiB, 1),
            "peak_allocated_mib": round(m["allocated"] / MiB, 1),
            "device_in_use_mib": round(m["in_use"] / MiB, 1),
            "estimate_over_in_use": round(est.total / m["in_use"], 3),
        }
    return {"status": "ok", "seq_len": seq, "presets": rows, "fused": fused_row}


def measure_fused_cuda(
    cfg: TrainConfig, k: int, vocab_size: int, rows: int, seq_len: int, steps: int
) -> dict[str, int]:
    """Peak memory of ``steps`` fused steps of K members on worst-case (rows, seq_len) batches."""
    from trainer.fused import clip_per_member, member_losses
    from trainer.gpt2.fused import FusedGPT2
    from trainer.model import build_model
    from trainer.step import make_optimizer

    class _V:
        size, pad_id, eos_id = vocab_size, 0, 1

        def decode(self, ids: list[int]) -> str:
            return ""

    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    models = [build_model(cfg.model_copy(update={"seed": i}), _V()) for i in range(k)]
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


# --- 3. training speed ------------------------------------------------------------------------


def _speed_setup(check: Check) -> tuple[str, int, int, int]:
    """(model, batch, steps, warm-up steps) of the speed comparisons."""
    if check.quick:
        return "nano", 32, 8, 3
    if check.cuda:
        return "paper", 256, 160, 40
    return "tiny", 64, 60, 15


def train_speed(check: Check) -> dict[str, Any]:
    from bench_train import hf_trainer_tokens_per_s

    from trainer.perf import count_params

    model, batch, steps, warm = _speed_setup(check)
    ds = generate(
        DataSpec(n_instructions=500, examples_per_instruction=20, noop_fraction=0.3, seed=0)
    )
    lengths = np.diff(ds.encoded("train").offsets)
    rows: list[dict[str, Any]] = []
    peak = device_peak_flops(torch.device(check.device))
    compile_modes = [False] if check.quick else [False, True]
    trained = None
    for compiled in compile_modes:
        cfg = TrainConfig(
            model=model,  # type: ignore[arg-type]
            max_steps=steps,
            batch_size=batch,
            device=check.device,
            compile=compiled,
            cuda_graphs=compiled and check.cuda,
            pad_multiple=16 if compiled else 1,
            eval_every=warm,
            eval_per_epoch=False,
            eval_test_n=16,
            eval_train_n=0,
            seed=0,
        )
        t0 = time.perf_counter()
        result = train(cfg, ds)
        last = result.history[-1]  # the window after the warm-up: compile and first steps out
        rows.append(
            {
                "who": "trainer.train" + (" compiled+graphs" if compiled else ""),
                "tokens_per_s": round(last["tokens_per_s"]),
                "mfu": round(last["mfu"], 4) if "mfu" in last else None,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        trained = trained or result.model
        n_params = count_params(result.model)
        hf_cfg = result.model.config
        flops_tok = flops_per_token(
            n_params, hf_cfg.num_hidden_layers, hf_cfg.hidden_size, float(lengths.mean())
        )
        t0 = time.perf_counter()
        hf_tps, hf_pad = hf_trainer_tokens_per_s(
            cfg, ds, steps, bf16=check.cuda, compile=compiled, warmup=warm
        )
        rows.append(
            {
                "who": "HF Trainer" + (" torch_compile" if compiled else ""),
                "tokens_per_s": round(hf_tps),
                "mfu": round(hf_tps * flops_tok / peak, 4) if peak else None,
                "padding": round(hf_pad, 3),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        check.report["train_speed"] = {"status": "running", "rows": rows}
        check.save()
    ratios = {
        f"{rows[i]['who']} / {rows[i + 1]['who']}": round(
            rows[i]["tokens_per_s"] / rows[i + 1]["tokens_per_s"], 2
        )
        for i in range(0, len(rows), 2)
    }
    check.scratch["model"] = trained
    check.scratch["ds"] = ds
    return {
        "status": "ok",
        "model": model,
        "batch": batch,
        "steps": steps,
        "timed_after_step": warm,
        "precision": "bf16 autocast" if check.cuda else "fp32",
        "peak_flops": peak,
        "rows": rows,
        "ratios": ratios,
    }


# --- 4. the evaluator -------------------------------------------------------------------------


def evaluator(check: Check) -> dict[str, Any]:
    from bench_eval import hf_generate

    from trainer.decode import greedy_decode

    model = check.scratch.get("model")
    ds = check.scratch.get("ds")
    if model is None or ds is None:
        return {"status": "skipped", "why": "needs the model trained by train_speed"}
    model = model.to(check.device).eval()
    enc = ds.encoded("test")
    n = min(len(enc), 64 if check.quick else 2000)
    prompts = [np.asarray(enc.prompt(i)) for i in range(n)]
    max_new = int((enc.lengths - enc.prompt_lens).max())
    eos, pad = ds.vocab.eos_id, ds.vocab.pad_id
    batch = 256
    rows = []
    for bf16 in (False, True) if check.cuda else (False,):
        dtype = torch.bfloat16 if bf16 else None
        greedy_decode(model, prompts[:32], eos, max_new, batch_size=batch, autocast_dtype=dtype)
        hf_generate(model, prompts[:32], pad, eos, max_new, batch, bf16)  # warm-up, untimed
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for _ in range(1 if check.quick else 3):
            _sync(check)
            t0 = time.perf_counter()
            ours = greedy_decode(
                model, prompts, eos, max_new, batch_size=batch, autocast_dtype=dtype
            )
            _sync(check)
            times["ours"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = hf_generate(model, prompts, pad, eos, max_new, batch, bf16)
            _sync(check)
            times["hf"].append(time.perf_counter() - t0)
        ours_s, hf_s = statistics.median(times["ours"]), statistics.median(times["hf"])
        rows.append(
            {
                "precision": "bf16 autocast" if bf16 else "fp32",
                "prompts": n,
                "ours_s": round(ours_s, 3),
                "hf_generate_s": round(hf_s, 3),
                "speedup": round(hf_s / ours_s, 2),
                "predictions_differing": sum(a != b for a, b in zip(ours, theirs, strict=True)),
            }
        )
    return {"status": "ok", "batch": batch, "max_new_tokens": max_new, "rows": rows}


# --- 5. fused against processes ---------------------------------------------------------------


def fused(check: Check) -> dict[str, Any]:
    from bench_fused import Setup, compare

    if check.quick:
        setup, ks, separate = (
            Setup(model="nano", steps=4, batch_size=16, device=check.device),
            [1, 2],
            "sequential",
        )
    elif check.cuda:
        setup, ks, separate = (
            Setup(model="paper", steps=40, batch_size=256, device=check.device),
            [1, 4, 8, 16],
            "processes",
        )
    else:
        setup, ks, separate = (
            Setup(model="nano", steps=30, device=check.device),
            [1, 4, 8, 16],
            "sequential",
        )
    lines: list[str] = []
    rows = compare(setup, ks, runs=1, separate=separate, threads=1, log=lines.append)
    for r in rows:
        r.pop("fused_runs"), r.pop("separate_runs")
        r["fused_tokens_per_s"] = round(r["fused_tokens_per_s"])
        r["separate_tokens_per_s"] = round(r["separate_tokens_per_s"])
        r["ratio"] = round(r["ratio"], 2)
    check.scratch["fused"] = {"model": setup.model, "batch": setup.batch_size, "rows": rows}
    return {
        "status": "ok",
        "model": setup.model,
        "batch": setup.batch_size,
        "steps_per_member": setup.steps,
        "separate": separate
        + (" (each capped at 1/K of the GPU's memory)" if separate == "processes" else ""),
        "rows": rows,
    }


# --- 6. a slice of a paper-scale Fig. 2a trial ------------------------------------------------


def fig2a_slice(check: Check) -> dict[str, Any]:
    n_i, s_per, steps, warm, test_n = (
        (100, 10, 6, 3, 16)
        if check.quick
        else (1000, 1000, 240 if check.cuda else 20, 40 if check.cuda else 10, 5000)
    )
    spec = DataSpec(  # sweeps/presets/fig2a.yaml's data at I = 1000
        n_instructions=n_i,
        examples_per_instruction=s_per,
        z_len=(10, 50),
        x_len=(2, 20),
        y_len=(1, 20),
        noop_fraction=0.0,
        test={"n_test": max(test_n, 100), "n_instructions": 1000 if not check.quick else 100},
        seed=0,
    )
    t0 = time.perf_counter()
    ds = generate(spec)
    gen_s = time.perf_counter() - t0
    epoch_tokens = int(np.diff(ds.encoded("train").offsets).sum())
    cfg = TrainConfig(
        model="nano" if check.quick else "paper",
        max_steps=steps,
        batch_size=256,
        lr=1e-3,
        device=check.device,
        eval_every=warm,
        eval_per_epoch=False,
        eval_test_n=test_n,
        seed=0,
    )
    result = train(cfg, ds)
    h = result.history
    tps = h[-1]["tokens_per_s"]
    window_s = (h[-1]["tokens_seen"] - h[-2]["tokens_seen"]) / tps
    eval_s = max(0.0, h[-1]["wall_s"] - h[-2]["wall_s"] - window_s)
    epochs = 50
    trial_h = (epochs * epoch_tokens / tps + epochs * eval_s) / 3600
    out: dict[str, Any] = {
        "status": "ok",
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
    f = check.scratch.get("fused")
    if f and f["model"] == cfg.model and f["batch"] == 256:
        k16 = [r for r in f["rows"] if r["k"] == 16]
        if k16:
            fused_tps = k16[0]["fused_tokens_per_s"]
            study = (16 * epochs * epoch_tokens / fused_tps + 16 * epochs * eval_s) / 3600
            out["study_gpu_hours_fused_k16"] = round(study, 2)
    return out


# --- the report -------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# divsweep GPU check, {report.get('date', '')}", ""]
    env = report.get("environment", {})
    lines += [f"- {k}: {v}" for k, v in env.items()]
    for name, sec in report.items():
        if name in ("date", "environment") or not isinstance(sec, dict):
            continue
        lines += ["", f"## {name}: {sec.get('status', '?')}", ""]
        for key, value in sec.items():
            if key in ("status", "output_tail") or isinstance(value, list):
                continue
            lines.append(f"- {key}: {value}")
        for key, value in sec.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                cols = list(dict.fromkeys(c for row in value for c in row))
                lines += [
                    "",
                    f"{key}:",
                    "",
                    "| " + " | ".join(cols) + " |",
                    "|" + "---|" * len(cols),
                ]
                lines += [
                    "| " + " | ".join(str(row.get(c, "")) for c in cols) + " |" for row in value
                ]
        if sec.get("output_tail"):
            lines += ["", "```", sec["output_tail"][-1500:], "```"]
    return "\n".join(lines) + "\n"


SECTIONS: list[tuple[str, Callable[[Check], dict[str, Any]], float]] = [
    # name, function, seconds it needs at least (full mode) to be worth starting
    ("cuda_tests", cuda_tests, 60),
    ("memory", memory, 20),
    ("train_speed", train_speed, 60),
    ("evaluator", evaluator, 15),
    ("fused", fused, 60),
    ("fig2a_slice", fig2a_slice, 40),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory for report.json, report.md")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="every section at toy size (< 1 min)")
    p.add_argument("--budget-s", type=float, default=None, help="default: 340 (quick: 55)")
    p.add_argument("--only", nargs="+", choices=[s[0] for s in SECTIONS], help="run only these")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here (use --device cpu)")
    torch.set_num_threads(1 if args.device == "cpu" else min(8, os.cpu_count() or 1))
    check = Check(args.device, args.quick, args.out, args.budget_s or (55 if args.quick else 340))
    check.report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    check.report["environment"] = {
        "device": torch.cuda.get_device_name() if check.cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mode": "quick" if args.quick else "full",
    }
    failed = False
    for name, fn, need in SECTIONS:
        if args.only and name not in args.only:
            continue
        need = need / 10 if args.quick else need
        if check.left() < need:
            check.report[name] = {"status": "skipped", "why": f"under {need:.0f} s of budget left"}
            check.save()
            continue
        t0 = time.perf_counter()
        try:
            check.report[name] = fn(check)
        except Exception as e:  # one broken section must not hide the others' figures
            failed = True
            logging.exception("section %s failed", name)
            check.report[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        check.report[name]["section_s"] = round(time.perf_counter() - t0, 1)
        failed |= check.report[name].get("status") == "failed"
        check.save()
        print(
            f"{name}: {check.report[name].get('status')} ({check.report[name]['section_s']} s)",
            flush=True,
        )
    check.report["total_s"] = round(time.perf_counter() - check.started, 1)
    check.save()
    print(f"report: {args.out / 'report.md'} ({check.report['total_s']} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
