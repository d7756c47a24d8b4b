"""Training throughput: `trainer.train` against Hugging Face `Trainer`, same run, same everything.

Both train the same GPT-2 (same config, same initial weights) on the same examples with the same
batch size, fp32 on CPU, loss on the output tokens, linear lr schedule. The baseline is HF
`Trainer` as one would use it: its default random sampler, a collator that pads each batch to its
longest sequence, no reporting, no saving, no evaluation. Throughput counts real (non-pad)
tokens per second of training.

    python benchmarks/bench_train.py                 # defaults: tiny model, batch 64, 150 steps
    python benchmarks/bench_train.py --model paper --steps 60 --threads 2
    python benchmarks/bench_train.py --ablate 3      # and what each step knob gives alone

Prints both figures and the ratio (target: >= 1.5x on the 2-core CPU). On CUDA it trains ours in
bf16 and prints MFU as well (the HF baseline then uses bf16 too).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch

from data import DataSpec, generate
from trainer import TrainConfig
from trainer.batching import IGNORE
from trainer.loop import train
from trainer.model import build_model


def hf_trainer_tokens_per_s(
    cfg: TrainConfig, ds, steps: int, bf16: bool, compile: bool = False, warmup: int = 0
) -> tuple[float, float]:
    """(real tokens/s, padding fraction) of transformers.Trainer on the same model and data.

    ``compile``: HF's own ``torch_compile=True``. ``warmup`` > 0: the clock starts after that
    many steps (compilation and allocator warm-up left out; at most one prefetched batch's
    tokens off), else it covers the whole ``trainer.train()``.
    """
    from transformers import Trainer, TrainerCallback, TrainingArguments

    enc = ds.encoded("train")
    rows = []
    for i in range(len(enc)):
        seq = np.asarray(enc.sequence(i), dtype=np.int64)
        labels = seq.copy()
        labels[: int(enc.prompt_lens[i])] = IGNORE  # HF shifts labels inside the model
        rows.append({"input_ids": seq, "labels": labels})
    counted = {"real": 0, "padded": 0}

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = np.full((len(batch), width), ds.vocab.pad_id, dtype=np.int64)
        lab = np.full((len(batch), width), IGNORE, dtype=np.int64)
        for j, r in enumerate(batch):
            ids[j, : len(r["input_ids"])] = r["input_ids"]
            lab[j, : len(r["labels"])] = r["labels"]
        counted["real"] += sum(len(r["input_ids"]) for r in batch)
        counted["padded"] += ids.size
        mask = np.arange(width)[None, :] < np.array([len(r["input_ids"]) for r in batch])[:, None]
        return {
            "input_ids": torch.from_numpy(ids),
            "labels": torch.from_numpy(lab),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        }

    model = build_model(cfg, ds.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=cfg.examples_per_batch,
            max_steps=steps,
            learning_rate=cfg.lr,
            lr_scheduler_type="linear",
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.grad_clip,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=cfg.seed,
            use_cpu=not torch.cuda.is_available(),
            bf16=bf16,
            torch_compile=compile,
            remove_unused_columns=False,
        )
        mark: dict[str, float] = {}

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    mark["t"], mark["tokens"] = time.perf_counter(), counted["real"]

        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=collate,
            callbacks=[Clock()] if warmup else None,
        )
        t0 = time.perf_counter()
        trainer.train()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - mark.get("t", t0)
    real = counted["real"] - mark.get("tokens", 0)
    return real / elapsed, 1 - counted["real"] / counted["padded"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-instructions", type=int, default=500)
    p.add_argument(
        "--ablate",
        type=int,
        default=0,
        metavar="RUNS",
        help="also time each step knob alone (RUNS interleaved runs, medians)",
    )
    p.add_argument("--ablate-steps", type=int, default=60, help="steps per ablation run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    cuda = torch.cuda.is_available()
    # The paper's string lengths (DataSpec defaults: z 10..50, x 2..20, y 1..20), 30 % no-ops.
    spec = DataSpec(
        n_instructions=args.n_instructions,
        examples_per_instruction=20,
        noop_fraction=0.3,
        seed=0,
        test={"n_test": 100},
    )
    ds = generate(spec)
    lengths = np.diff(ds.encoded("train").offsets)
    print(
        f"data: {ds.train.num_rows} train examples, length {lengths.min()}..{lengths.max()} "
        f"(mean {lengths.mean():.1f}); model {args.model}, batch {args.batch_size}, "
        f"{args.steps} steps, {'cuda bf16' if cuda else f'cpu fp32, {args.threads} thread(s)'}"
    )
    cfg = TrainConfig(
        model=args.model,
        max_steps=args.steps,
        batch_size=args.batch_size,
        eval_per_epoch=False,
        eval_test_n=1,
        eval_train_n=0,
        seed=0,
    )
    t0 = time.perf_counter()
    ours = train(cfg, ds)
    ours_wall = time.perf_counter() - t0
    ours_tps = ours.metrics["tokens_per_s"]
    ours_e2e = ours.metrics["tokens_seen"] / ours_wall
    hf_tps, hf_pad = hf_trainer_tokens_per_s(cfg, ds, args.steps, bf16=cuda)
    print(
        f"trainer.train      : {ours_tps:10.0f} tokens/s (training steps); "
        f"{ours_e2e:.0f} tokens/s end to end incl. setup and final eval"
    )
    print(f"transformers.Trainer: {hf_tps:10.0f} tokens/s (padding: {hf_pad:.0%} of its tokens)")
    print(f"ratio (ours / HF)  : {ours_tps / hf_tps:.2f}x  (end to end: {ours_e2e / hf_tps:.2f}x)")
    if "mfu" in ours.metrics:
        print(f"MFU: {ours.metrics['mfu']:.3f}, peak memory {ours.metrics['peak_mem_gb']:.2f} GB")
    if args.ablate:
        steps = args.ablate_steps
        ablate(cfg.model_copy(update={"max_steps": steps}), ds, steps, args.ablate)


#: One step knob changed from the default config at a time (`TrainConfig`'s step fields).
VARIANTS: dict[str, dict[str, object]] = {
    "default (fused AdamW, prefetch)": {},
    "fused_optimizer=False (foreach AdamW)": {"fused_optimizer": False},
    "prefetch=False": {"prefetch": False},
    "pad_multiple=16": {"pad_multiple": 16},
    "compile=True": {"compile": True},
    "compile=True, pad_multiple=16": {"compile": True, "pad_multiple": 16},
}


def ablate(cfg: TrainConfig, ds, steps: int, runs: int) -> None:
    """Steady tokens/s of each variant (the clock starts after a fifth of the steps, so
    compilation is left out), ``runs`` interleaved runs each, medians."""
    warm = max(1, steps // 5)
    base = cfg.model_copy(update={"eval_every": warm})
    cuda = torch.cuda.is_available()
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(runs):
        for name, change in VARIANTS.items():
            if cuda and change.get("compile"):
                change = {**change, "cuda_graphs": True}
            result = train(base.model_copy(update=change), ds)
            figures[name].append(result.history[-1]["tokens_per_s"])
    hf = [hf_trainer_tokens_per_s(cfg, ds, steps, bf16=cuda, warmup=warm)[0] for _ in range(runs)]
    ref = float(np.median(figures["default (fused AdamW, prefetch)"]))
    print(f"\nstep knobs, steady tokens/s after step {warm}, median of {runs} interleaved runs:")
    for name, values in figures.items():
        med = float(np.median(values))
        print(
            f"  {name:<40} {med:10.0f}  ({med / ref:.2f}x default, {med / np.median(hf):.2f}x HF)"
            f"  runs: {', '.join(f'{v:.0f}' for v in values)}"
        )
    runs_hf = ", ".join(f"{v:.0f}" for v in hf)
    print(f"  {'HF Trainer (same clock)':<40} {np.median(hf):10.0f}  runs: {runs_hf}")


if __name__ == "__main__":
    main()
