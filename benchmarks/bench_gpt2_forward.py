"""Which fused GPT-2 forward to keep: `torch.func` over HF's own forward, or `FusedGPT2`.

PyTorch documents model ensembling with ``torch.func.stack_module_state`` (every parameter of K
same-shaped models stacked on a leading axis), ``functional_call`` (run a module with given
tensors as its parameters) and ``vmap`` (map that over the member axis): K models through HF's
own ``GPT2LMHeadModel.forward``, with no forward of ours to keep in step with transformers.
`trainer.gpt2.fused.FusedGPT2` is our own stacked forward (each layer one ``baddbmm`` over
members). Both are called here without a padding mask (causal SDPA), as training calls them.

For each model and K it measures, against K plain HF forwards of the members:

- **equality**: max abs error of the logits, and of the gradients of a masked loss;
- **speed**: one training step's forward + backward (the loss summed over members), median of
  ``--repeats`` timings, the two sides interleaved; ratio = vmap time / FusedGPT2 time.

    python benchmarks/bench_gpt2_forward.py                   # CPU, 1 thread, mini + paper model
    python benchmarks/bench_gpt2_forward.py --ks 4 8 --repeats 7 --device cuda

The decision rule (issue #23): keep the ``torch.func`` route if it is within 10 % of
`FusedGPT2` (ratio <= 1.10), else keep `FusedGPT2` with everything that reaches into HF's GPT-2
internals in one subpackage (`trainer.gpt2`).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from trainer import TrainConfig
from trainer.gpt2.fused import FusedGPT2
from trainer.model import build_model


@dataclass(frozen=True)
class Shape:
    """A model (its `TrainConfig` fields) and the batch it trains on."""

    name: str
    fields: dict[str, Any]
    batch: int
    width: int  # tokens per sequence


#: The fig2a-mini model (0.6 M parameters, batch 32 of 20 tokens) and the paper's model (on a
#: CPU at batch 16 of 64 tokens: the paper's 256 x ~90 takes seconds a step on one core).
SHAPES = {
    "mini": Shape("mini", {"model": "tiny", "n_layer": 3, "n_positions": 32}, 32, 20),
    "paper": Shape("paper", {"model": "paper"}, 16, 64),
}
VOCAB = 13  # fig2a-mini's: 8 letters and 5 specials


class _Vocab:
    size, pad_id, eos_id = VOCAB, 0, 1

    def decode(self, ids: list[int]) -> str:
        return ""


def members(shape: Shape, k: int, device: str) -> list[torch.nn.Module]:
    """K members of ``shape``, seeds 0..k-1, in train mode (dropout is 0)."""
    return [
        build_model(TrainConfig(**shape.fields, max_steps=1, seed=s), _Vocab()).to(device)
        for s in range(k)
    ]


class VmapEnsemble:
    """K HF GPT-2s as ``vmap(functional_call(base, stacked state))``: PyTorch's ensembling."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        self.params, self.buffers = stack_module_state(models)  # leaves with requires_grad
        # A real copy, not one on the meta device: HF keeps tensors outside the state dict.
        self.base = copy.deepcopy(models[0])

    def _one(self, params: dict, buffers: dict, ids: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.base, (params, buffers), (ids,), {"use_cache": False})
        return out.logits

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return vmap(self._one)(self.params, self.buffers, ids)  # (K, B, T, V)

    def grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.params.values()]

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    k, v = logits.shape[0], logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), reduction="none")
    return ce.reshape(k, -1).mean(1).sum()


def equality(models: list[torch.nn.Module], ids: torch.Tensor) -> dict[str, float]:
    """Max abs errors of both routes' logits and gradients against each member's own forward."""
    targets = ids.roll(-1, dims=-1)
    want = torch.stack([m(input_ids=ids[k]).logits for k, m in enumerate(models)])
    _loss(want, targets).backward()
    want_grads = [
        torch.stack([dict(m.named_parameters())[n].grad for m in models])
        for n, _ in models[0].named_parameters()
    ]
    fused, ens = FusedGPT2(models), VmapEnsemble(models)
    got_f, got_v = fused(ids), ens(ids)
    _loss(got_f, targets).backward()
    _loss(got_v, targets).backward()

    def worst(grads: list[torch.Tensor]) -> float:
        return max(float((a - b).abs().max()) for a, b in zip(grads, want_grads, strict=True))

    return {
        "fused_logits_err": float((got_f - want).abs().max()),
        "vmap_logits_err": float((got_v - want).abs().max()),
        "fused_grad_err": worst([p.grad for p in fused.stack]),
        "vmap_grad_err": worst(ens.grads()),
    }


def _timed(step: Any, sync: Any) -> float:
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - t0


def speed(models: list[torch.nn.Module], ids: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of one forward + backward of each route (interleaved, after a warm-up)."""
    targets = ids.roll(-1, dims=-1)
    fused, ens = FusedGPT2(models), VmapEnsemble(models)
    device = ids.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def fused_step() -> None:
        _loss(fused(ids), targets).backward()
        fused.zero_grad(set_to_none=True)

    def vmap_step() -> None:
        _loss(ens(ids), targets).backward()
        ens.zero_grad()

    for fn in (fused_step, vmap_step, fused_step, vmap_step):  # warm-up: allocator, kernels
        fn()
    times: dict[str, list[float]] = {"fused": [], "vmap": []}
    for _ in range(repeats):
        times["fused"].append(_timed(fused_step, sync))
        times["vmap"].append(_timed(vmap_step, sync))
    f, v = statistics.median(times["fused"]), statistics.median(times["vmap"])
    return {"fused_ms": 1e3 * f, "vmap_ms": 1e3 * v, "vmap_over_fused": v / f}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["mini", "paper"])
    p.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # vmap falls back to a loop for SDPA's CPU kernel and says so once per call site.
    warnings.filterwarnings("ignore", message=".*batching rule.*")
    print(f"{args.device}, {args.threads} thread(s), median of {args.repeats} interleaved steps")
    rows = []
    for name in args.shapes:
        shape = SHAPES[name]
        for k in args.ks:
            torch.manual_seed(k)
            models = members(shape, k, args.device)
            ids = torch.randint(2, VOCAB, (k, shape.batch, shape.width), device=args.device)
            row: dict[str, Any] = {"model": name, "k": k, "batch": shape.batch}
            row |= equality(models, ids)
            for m in models:
                m.zero_grad(set_to_none=True)
            row |= speed(models, ids, args.repeats)
            rows.append(row)
            print(
                f"{name:5s} K={k:2d}  FusedGPT2 {row['fused_ms']:8.1f} ms  vmap "
                f"{row['vmap_ms']:8.1f} ms  vmap/fused {row['vmap_over_fused']:.2f}x   "
                f"max abs err logits: fused {row['fused_logits_err']:.1e} vmap "
                f"{row['vmap_logits_err']:.1e}; grads: fused {row['fused_grad_err']:.1e} vmap "
                f"{row['vmap_grad_err']:.1e}",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
