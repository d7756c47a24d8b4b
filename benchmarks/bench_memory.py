"""Training memory: the measured estimate per preset against the peak of real CUDA steps.

For each preset at its default batch (256 examples of the longest sequence the paper's string
lengths can produce, `DataSpec.max_seq_len`), prints the estimate by part
(`trainer.memory.estimate_train_memory`), the time it took, and the GPU fraction it asks for on
an 80 GB GPU. With CUDA, it then runs a few
training steps on batches of exactly that worst-case shape (the loop's own step: bf16 autocast,
`masked_loss`, clipping, fused AdamW) and prints the peak allocated and reserved memory, the
device memory in use (context included) and the ratios estimate / measured.

    python benchmarks/bench_memory.py                      # all presets
    python benchmarks/bench_memory.py --models tiny --steps 5 --max-seq-len 256

Expect the estimate above the allocator's peak (it includes ~512 MiB of CUDA context the
allocator does not see, and sums gradients with activations) and near the device memory in use.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from data import DataSpec, Vocab
from trainer import TrainConfig
from trainer.member import resolve_device
from trainer.memory import (
    CUDA_CONTEXT_BYTES,
    MemoryEstimate,
    MiB,
    estimate_train_memory,
    gpu_fraction_for,
)
from trainer.model import build_model
from trainer.step import make_optimizer, masked_loss

# bench_train's data: the paper's string lengths (z 10..50, x 2..20, y 1..20)
SPEC = DataSpec(n_instructions=500, examples_per_instruction=20, noop_fraction=0.3, seed=0)
PARTS = ("parameters", "gradients", "optimizer", "activations", "temporaries", "overhead")


def measure_cuda(cfg: TrainConfig, vocab_size: int, est: MemoryEstimate, steps: int) -> dict:
    """Peak memory of ``steps`` training steps on (est.rows, est.seq_len) batches, in bytes."""
    device, amp_dtype = resolve_device(cfg)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model = build_model(cfg, Vocab.build(SPEC.alphabet)).to(device)
    model.train()
    optimizer = make_optimizer(model, cfg)
    shape = (est.rows, est.seq_len)
    for _ in range(steps):  # the loop's step, on the worst-case batch every time
        inputs = torch.randint(vocab_size, shape, device=device)
        targets = torch.randint(vocab_size, shape, device=device)
        bf16 = amp_dtype is not None
        with torch.autocast("cuda", dtype=amp_dtype or torch.bfloat16, enabled=bf16):
            logits = model(input_ids=inputs).logits
        loss = masked_loss(logits, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return {
        "allocated": torch.cuda.max_memory_allocated(device),
        "reserved": torch.cuda.max_memory_reserved(device),
        "in_use": total - free,  # whole device: context, reserved blocks (and any other process)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["nano", "tiny", "small", "paper"])
    p.add_argument("--max-seq-len", type=int, default=SPEC.max_seq_len)
    p.add_argument("--gpu-gb", type=float, default=80.0, help="GPU size for the fraction (1e9 B)")
    p.add_argument("--steps", type=int, default=3, help="CUDA training steps per preset (>= 1)")
    args = p.parse_args()
    if args.steps < 1:
        p.error("--steps must be >= 1")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    vocab_size = Vocab.build(SPEC.alphabet).size
    build_model(TrainConfig(model="nano", max_steps=1), Vocab.build(SPEC.alphabet))  # imports
    cuda = torch.cuda.is_available()
    print(
        f"default batch, sequences up to {args.max_seq_len} tokens, vocab {vocab_size}; "
        f"fractions of a {args.gpu_gb:g} GB GPU with headroom 1.25"
    )
    for name in args.models:
        cfg = TrainConfig(model=name, max_steps=args.steps, seed=0)
        t0 = time.perf_counter()
        est = estimate_train_memory(cfg, vocab_size, args.max_seq_len)
        took = time.perf_counter() - t0
        try:
            fraction = f"{gpu_fraction_for(est, int(args.gpu_gb * 1e9)):g}"
        except ValueError as e:
            fraction = f"does not fit ({e})"
        shape = f"{est.dtype}, {est.rows} rows x {est.seq_len} tokens"
        print(f"\n{name}: {shape} (the estimate took {took:.2f} s)")
        for part in PARTS:
            print(f"  {part:<12} {getattr(est, part) / MiB:10.1f} MiB")
        print(f"  {'total':<12} {est.total / MiB:10.1f} MiB   -> GPU fraction {fraction}")
        if not cuda:
            print("  measured: needs CUDA (run on a GPU machine to compare)")
            continue
        m = measure_cuda(cfg, vocab_size, est, args.steps)
        allocator_part = est.total - CUDA_CONTEXT_BYTES  # what the caching allocator can see
        print(
            f"  measured: peak allocated {m['allocated'] / MiB:.1f} MiB, reserved "
            f"{m['reserved'] / MiB:.1f} MiB, device in use {m['in_use'] / MiB:.1f} MiB"
        )
        print(
            f"  estimate / measured: total / in use {est.total / m['in_use']:.2f}, "
            f"total / allocated {est.total / m['allocated']:.2f}, "
            f"(total - context) / allocated {allocator_part / m['allocated']:.2f}"
        )


if __name__ == "__main__":
    main()
