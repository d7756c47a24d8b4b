"""Training memory: a measured estimate of the CUDA bytes one run needs, and its GPU share.

`estimate_train_memory(cfg, vocab_size, max_seq_len)` builds the real model of ``cfg`` and runs one
training step on the largest batch the config can form, counting bytes instead of timing:

* **parameters, gradients, optimiser state** come from the real tensors: the model's parameters
  and buffers, the ``.grad`` tensors the backward pass leaves, and the state `make_optimizer`'s
  fused AdamW allocates on its first step (``exp_avg`` and ``exp_avg_sq`` in fp32, plus a 4-byte
  ``step`` per parameter tensor). Storages are counted once, so tied weights count once.
* **activations** are the tensors autograd saves for backward, caught with
  `torch.autograd.graph.saved_tensors_hooks` and deduplicated by storage (a saved view of a
  parameter is not counted again; autocast's bf16 copies of the weights are).
* **temporaries** are what the peak of live tensors during forward and backward exceeds
  activations + gradients by: the logits the loop holds, loss and gradient buffers. Live tensors
  are tracked op by op (a `TorchDispatchMode` that follows every output storage until it is freed).
* **overhead** is a constant for what no tensor shows: the CUDA context (~512 MiB, outside the
  caching allocator) and cuBLAS/cuBLASLt workspaces for the forward and autograd threads
  (4 x 32 MiB on Hopper, inside it).

The step runs on CPU under `FakeTensorMode` by default: every op dispatches as it would on CPU
tensors (autocast, SDPA backend choice, autograd formulas, output strides) but only computes
shapes, so it costs about a second whatever the batch (0.5-3 s for the presets here).
``fake=False`` runs real arithmetic instead (the tests check that both count the same bytes);
bf16 on a CPU without native bf16 is slow, so it measures at ``measure_rows`` rows and scales.

The precision is the one the config gets on CUDA: bf16 autocast for ``precision="auto"`` or
``"bf16"``. CPU autocast does not run the same op lists as CUDA autocast: CUDA also runs ``pow``,
``exp``, ``softmax``, ``layer_norm``... in fp32, so GPT-2's ``gelu_new`` saves fp32 tensors on CUDA
and bf16 ones on CPU (16 vs 10 bytes per MLP element). `_cuda_autocast_policy` applies the CUDA
lists on top of CPU autocast so that the saved tensors have the CUDA dtypes.

**Scaling in batch rows.** At a fixed sequence length every saved tensor is either proportional
to the batch rows or independent of them (weight casts), and so is the live total after every
op. With ``measure_rows`` set below the batch, the step runs at ``measure_rows // 2`` and
``measure_rows`` rows; activations and each point of the live-bytes trace are extrapolated
linearly to the full batch, and the peak is taken after extrapolating (the peak can move from
the end of backward to its start as the batch grows).

**Dropout** is measured as zero and its CUDA cost added: each `nn.Dropout` call saves a bool mask
of its input's size (CPU dropout would save a bf16 noise tensor and push SDPA onto the math
backend, which saves the full attention matrix; CUDA's flash kernel keeps only an RNG state).

Limits: the CUDA caching allocator rounds blocks to 512 bytes and fragments (reserved > allocated);
kernel workspaces inside an op (flash-attention backward's fp32 ``dq`` accumulator, about
B*T*C*4 bytes) are invisible to the dispatcher; evaluation (greedy decoding with a KV cache, no
gradients) is assumed to stay below the training step; ``compile=True`` usually saves fewer
tensors than eager. `gpu_fraction_for`'s ``headroom`` covers these.

Example (the ``tiny`` preset at its default batch, sequences up to its 256 positions)::

    >>> est = estimate_train_memory(TrainConfig(model="tiny", max_steps=1), 31, 256)
    >>> print(est)                                                     # doctest: +SKIP
    bf16, 256 rows x 255 tokens: parameters 1.7 + gradients 1.7 + optimizer 3.3 + activations
    1464.3 + temporaries 360.7 + overhead 640.0 = 2471.6 MiB
    >>> gpu_fraction_for(est, 80 * 10**9)                              # doctest: +SKIP
    0.125
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from trainer.config import TrainConfig
from trainer.errors import ConfigError
from trainer.model import build_model
from trainer.step import make_optimizer, masked_loss

log = logging.getLogger(__name__)

MiB = 1 << 20
CUDA_CONTEXT_BYTES = 512 * MiB  # driver context + lazily loaded kernels, outside the allocator
CUBLAS_WORKSPACE_BYTES = 4 * 32 * MiB  # cuBLAS + cuBLASLt, forward and autograd threads (Hopper)
CUDA_OVERHEAD_BYTES = CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES
DEFAULT_CPU_MEASURE_ROWS = 8  # real-arithmetic runs measure at 4 and 8 rows and scale


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on the CUDA device for one training run, by part (see the module docstring)."""

    parameters: int  # parameters and buffers
    gradients: int  # .grad of every trainable parameter
    optimizer: int  # AdamW exp_avg, exp_avg_sq (fp32) and step
    activations: int  # saved for backward at the largest batch, dropout masks included
    temporaries: int  # live-tensor peak beyond activations + gradients
    overhead: int  # CUDA context and library workspaces (a constant)
    rows: int  # batch rows of the largest batch
    seq_len: int  # its input width in tokens (longest sequence - 1)
    dtype: str  # "bf16" (autocast) or "fp32"
    measured_rows: tuple[int, ...]  # rows actually run: (rows,) or the two scaled from

    @property
    def total(self) -> int:
        """Sum of the parts: the device memory the run needs."""
        return (
            self.parameters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.temporaries
            + self.overhead
        )

    def describe(self) -> str:
        """One line in MiB, e.g. ``bf16, 256 rows x 255 tokens: parameters 1.7 + ... MiB``."""
        parts = ("parameters", "gradients", "optimizer", "activations", "temporaries", "overhead")
        terms = " + ".join(f"{p} {getattr(self, p) / MiB:.1f}" for p in parts)
        how = "" if self.measured_rows == (self.rows,) else f" (scaled from {self.measured_rows})"
        return (
            f"{self.dtype}, {self.rows} rows x {self.seq_len} tokens: {terms} "
            f"= {self.total / MiB:.1f} MiB{how}"
        )

    __str__ = describe

    def fused(self, k: int) -> MemoryEstimate:
        """The memory of K such runs fused into one model (`trainer.fused`).

        Every part that belongs to a member (weights, gradients, AdamW state, the activations
        and temporaries of its batch) is stacked K times; the CUDA context and library
        workspaces (``overhead``) exist once per process. A scaling, not a measurement:
        ``benchmarks/gpu_check.py`` compares it with the peak of a real fused run.
        """
        return replace(
            self,
            parameters=k * self.parameters,
            gradients=k * self.gradients,
            optimizer=k * self.optimizer,
            activations=k * self.activations,
            temporaries=k * self.temporaries,
            rows=k * self.rows,
        )


def gpu_fraction_for(
    estimate: MemoryEstimate,
    gpu_memory_bytes: int,
    headroom: float = 1.25,
    granularity: int = 8,
) -> float:
    """The smallest ``k / granularity`` (k >= 1) of a GPU that holds ``headroom * estimate.total``.

    Worked example: the ``tiny`` preset at its default batch (256 rows of up to 256 tokens, bf16)
    totals 2471.6 MiB (2.59e9 bytes). With the default headroom it needs 3.24e9 bytes; an 80 GB
    GPU in eighths offers 1e10 bytes per eighth, so k = 1 and the fraction is ``0.125``: eight
    such trials share one GPU. The ``paper`` preset at the same batch (9965 MiB, 1.31e10 bytes
    with headroom) needs two eighths: ``0.25``.

    Raises ValueError naming the numbers when even the whole GPU is too small.
    """
    if gpu_memory_bytes <= 0:
        raise ValueError(f"gpu_memory_bytes: must be positive, got {gpu_memory_bytes}")
    if headroom < 1:
        raise ValueError(f"headroom: must be >= 1, got {headroom}")
    if granularity < 1:
        raise ValueError(f"granularity: must be >= 1, got {granularity}")
    need = headroom * estimate.total
    if need > gpu_memory_bytes:
        raise ValueError(
            f"the run needs {headroom} x {estimate.total / MiB:.0f} MiB = {need / MiB:.0f} MiB, "
            f"more than the GPU's {gpu_memory_bytes / MiB:.0f} MiB"
        )
    k = max(1, math.ceil(need * granularity / gpu_memory_bytes))
    while k > 1 and (k - 1) * gpu_memory_bytes >= need * granularity:  # float rounding
        k -= 1
    return min(k, granularity) / granularity


def worst_batch_shape(cfg: TrainConfig, max_seq_len: int) -> tuple[int, int]:
    """(rows, input width) of the largest batch ``cfg`` forms from sequences <= ``max_seq_len``.

    Examples per batch: that many rows of the longest sequence (inputs drop its last token).
    A token budget packs ``rows * length <= batch_tokens`` (at least one row), so the worst case
    is the length whose packing holds the most input tokens, e.g. ``batch_tokens=1000,
    max_seq_len=300``: 3 rows of 300 give 897 input tokens, 4 rows of 250 give 996.
    """
    if (bs := cfg.examples_per_batch) is not None:
        return bs, max_seq_len - 1
    budget = cfg.batch_tokens
    assert budget is not None  # TrainConfig sets exactly one of the two
    best = (1, max_seq_len - 1)
    for length in range(max_seq_len, 1, -1):  # ties go to the longest rows
        rows = max(1, budget // length)
        if rows * (length - 1) > best[0] * best[1]:
            best = (rows, length - 1)
    return best


def estimate_train_memory(
    cfg: TrainConfig,
    vocab_size: int,
    max_seq_len: int,
    *,
    measure_rows: int | None = None,
    fake: bool = True,
    overhead_bytes: int = CUDA_OVERHEAD_BYTES,
) -> MemoryEstimate:
    """Measured CUDA memory of training ``cfg`` on sequences of at most ``max_seq_len`` tokens.

    ``vocab_size`` is the data set's (``ds.vocab.size``; ignored for pretrained checkpoints) and
    ``max_seq_len`` its longest encoded sequence, prompt + completion + eos
    (``seq_lengths(ds.encoded("train")).max()``). ``measure_rows`` caps the rows actually run
    (None: the whole batch with fake tensors, 8 with ``fake=False``); above it the result is
    scaled linearly in rows. Results are cached per (memory-relevant fields, vocab, length).

    Example (``nano`` has 118,464 fp32 parameters in 28 tensors)::

        >>> est = estimate_train_memory(TrainConfig(model="nano", max_steps=1), 31, 64)
        >>> est.gradients, est.optimizer                          # doctest: +SKIP
        (473856, 947824)
        >>> est.rows, est.seq_len, est.dtype                      # doctest: +SKIP
        (256, 63, 'bf16')
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size: must be >= 2, got {vocab_size}")
    if max_seq_len < 2:
        raise ValueError(f"max_seq_len: must be >= 2 (one input and one target), got {max_seq_len}")
    if not cfg.pretrained and max_seq_len > cfg.dims.n_positions:
        raise ConfigError(
            f"n_positions: {cfg.dims.n_positions} is shorter than the longest sequence "
            f"({max_seq_len})"
        )
    if measure_rows is not None and measure_rows < 4:
        raise ValueError(f"measure_rows: must be >= 4 (scaling also runs half), got {measure_rows}")
    if overhead_bytes < 0:
        raise ValueError(f"overhead_bytes: must be >= 0, got {overhead_bytes}")
    if measure_rows is None and not fake:
        measure_rows = DEFAULT_CPU_MEASURE_ROWS
    rows, width = worst_batch_shape(cfg, max_seq_len)
    # auto means bf16 autocast on CUDA, and the estimate is for CUDA (unless pinned to the CPU)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cfg.device != "cpu")
    parts = _measure_cached(
        _memory_config(cfg),
        None if cfg.pretrained else vocab_size,
        rows,
        width,
        bf16,
        measure_rows if measure_rows is not None and rows > measure_rows else None,
        fake,
    )
    return MemoryEstimate(
        parameters=parts.parameters,
        gradients=parts.gradients,
        optimizer=parts.optimizer,
        activations=parts.activations,
        temporaries=parts.temporaries,
        overhead=overhead_bytes,
        rows=rows,
        seq_len=width,
        dtype="bf16" if bf16 else "fp32",
        measured_rows=parts.measured_rows,
    )


# --- measurement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """What one measured step found (bytes)."""

    rows: int
    parameters: int
    gradients: int
    optimizer: int
    saved: int  # saved for backward (dropout at zero)
    masks: int  # bool masks CUDA dropout would save on top
    trace: tuple[int, ...]  # live bytes after every allocation, forward + backward


@dataclass(frozen=True)
class _Parts:
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    temporaries: int
    measured_rows: tuple[int, ...]


def _memory_config(cfg: TrainConfig) -> TrainConfig:
    """Only the fields that shape memory (model and adapters), so the cache ignores lr, seed..."""
    if cfg.pretrained:
        return TrainConfig(model=None, init=cfg.init, lora=cfg.lora, max_steps=1)
    d = cfg.dims
    return TrainConfig(
        model=None,
        n_layer=d.n_layer,
        n_head=d.n_head,
        n_embd=d.n_embd,
        n_positions=d.n_positions,
        dropout=cfg.dropout,
        max_steps=1,
    )


@functools.lru_cache(maxsize=256)
def _measure_cached(
    cfg: TrainConfig,
    vocab_size: int | None,
    rows: int,
    width: int,
    bf16: bool,
    measure_rows: int | None,
    fake: bool,
) -> _Parts:
    if measure_rows is None:
        run = _measure(cfg, vocab_size, rows, width, bf16, fake)
        saved, masks, peak = float(run.saved), float(run.masks), float(max(run.trace))
        measured: tuple[int, ...] = (rows,)
    else:
        small = _measure(cfg, vocab_size, measure_rows // 2, width, bf16, fake)
        run = _measure(cfg, vocab_size, measure_rows, width, bf16, fake)
        saved, masks, peak = _extrapolate(small, run, rows)
        measured = (small.rows, run.rows)
    return _Parts(
        parameters=run.parameters,
        gradients=run.gradients,
        optimizer=run.optimizer,
        activations=math.ceil(saved + masks),
        # the masks were never allocated, so they are not in the peak either
        temporaries=max(0, math.ceil(peak - saved) - run.gradients),
        measured_rows=measured,
    )


def _extrapolate(a: _Run, b: _Run, rows: int) -> tuple[float, float, float]:
    """(saved, masks, live-bytes peak) at ``rows``, linear in rows through runs ``a`` and ``b``."""
    t = (rows - a.rows) / (b.rows - a.rows)
    saved = a.saved + t * (b.saved - a.saved)
    masks = a.masks + t * (b.masks - a.masks)
    if len(a.trace) == len(b.trace):
        peak = max(x + t * (y - x) for x, y in zip(a.trace, b.trace, strict=True))
    else:  # the op sequence should not depend on rows; if it does, scale the peaks themselves
        log.debug("live-bytes traces differ in length (%d, %d)", len(a.trace), len(b.trace))
        peak = max(a.trace) + t * (max(b.trace) - max(a.trace))
    return saved, masks, peak


class _SizedVocab:
    """The `VocabLike` a scratch model needs: only the size matters for memory."""

    def __init__(self, size: int) -> None:
        self.size, self.pad_id, self.eos_id = size, 0, 1

    def decode(self, ids: list[int]) -> str:
        return ""


@functools.lru_cache(maxsize=64)  # the two scaling runs and direct runs share measurements
def _measure(
    cfg: TrainConfig, vocab_size: int | None, rows: int, width: int, bf16: bool, fake: bool
) -> _Run:
    """One forward + backward + optimiser step of ``rows x width`` tokens, counting bytes."""
    model = build_model(cfg, _SizedVocab(vocab_size) if vocab_size is not None else None)
    model.train()
    parameters = _unique_bytes([*model.parameters(), *model.buffers()])
    masks = _DropoutMasks(model)
    mode: Any = None
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode()
        _to_fake(model, mode)
    params = [p for p in model.parameters() if p.requires_grad]
    skip = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in skip:
            saved.setdefault(key, t.untyped_storage().nbytes())
        return t

    with mode if mode is not None else contextlib.nullcontext():
        with _LiveBytes() as live:
            # Token values do not change memory; the loop holds inputs and targets like this.
            inputs = torch.zeros((rows, width), dtype=torch.long)
            targets = torch.zeros((rows, width), dtype=torch.long)
            with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    with _cuda_autocast_policy(bf16):
                        logits = model(input_ids=inputs).logits  # (B, T, V), held like the loop
                loss = masked_loss(logits, targets)
            loss.backward()
        del logits, loss, inputs, targets
        gradients = _unique_bytes([p.grad for p in params if p.grad is not None])
        optimizer = make_optimizer(model, cfg)
        optimizer.step()
        states = [t for s in optimizer.state.values() for t in s.values()]
        opt_bytes = _unique_bytes([t for t in states if isinstance(t, torch.Tensor)])
    return _Run(
        rows=rows,
        parameters=parameters,
        gradients=gradients,
        optimizer=opt_bytes,
        saved=sum(saved.values()),
        masks=masks.close(),
        trace=tuple(live.trace) or (0,),
    )


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def _storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's storage (the StorageImpl address): views share it."""
    return int(t.untyped_storage()._cdata)


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        seen.setdefault(_storage_key(t), t.untyped_storage().nbytes())
    return sum(seen.values())


def _to_fake(model: torch.nn.Module, mode: Any) -> None:
    """Swap every parameter and buffer for a fake tensor of the same shape (ties kept)."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in memo:
                    memo[id(p)] = torch.nn.Parameter(mode.from_tensor(p), p.requires_grad)
                module._parameters[name] = memo[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                if id(b) not in memo:
                    memo[id(b)] = mode.from_tensor(b)
                module._buffers[name] = memo[id(b)]


class _DropoutMasks:
    """Zero every dropout while counting the bool masks CUDA's `native_dropout` would save."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.bytes = 0
        self.handles: list[Any] = []
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout) and m.p > 0:
                m.p = 0.0  # also keeps SDPA (which reads attn_dropout.p) on the flash backend
                self.handles.append(m.register_forward_hook(self._count))

    def _count(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        self.bytes += output.numel()  # one byte per element

    def close(self) -> int:
        for h in self.handles:
            h.remove()
        return self.bytes


class _LiveBytes(TorchDispatchMode):
    """Follows every storage an op creates until it is freed; records the live total."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.trace: list[int] = []
        self.open = True
        self.gc_was_enabled = gc.isenabled()

    def __enter__(self) -> _LiveBytes:
        # Frees by reference count only, so the trace is the same run after run (a collection
        # triggered by unrelated Python allocations would free cycles at varying points).
        gc.disable()
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.open = False  # storages freed later (logits, grads) belong to no trace
        if self.gc_was_enabled:
            gc.enable()
        super().__exit__(*exc)

    def _freed(self, key: int) -> None:
        # Not a trace point: a peak follows an allocation, and the order in which autograd
        # releases a node's saved tensors is not fixed (the total after the next op is).
        if self.open and key in self.live:
            self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = int(storage._cdata), storage.nbytes()
            if key in self.live or nbytes == 0:
                continue  # a view, or an output aliasing an input
            self.live[key] = nbytes
            self.current += nbytes
            self.trace.append(self.current)
            weakref.finalize(storage, self._freed, key).atexit = False
        return out


# CUDA autocast lists that CPU autocast lacks (PyTorch AMP docs, "CUDA Ops that can autocast to
# float32 / to lower precision"). Matched by Python name, so torch.pow, Tensor.pow and x ** 3 all
# hit "pow"/"__pow__"; the few that take a dtype get dtype=float32 instead of a copy.
_CUDA_FP32 = frozenset(
    "pow __pow__ __rpow__ __rdiv__ __rtruediv__ acos asin cosh sinh tan erfinv exp expm1 log "
    "log10 log1p log2 reciprocal rsqrt softplus layer_norm group_norm norm normalize "
    "cosine_similarity cosine_embedding_loss poisson_nll_loss hinge_embedding_loss kl_div "
    "l1_loss smooth_l1_loss huber_loss mse_loss margin_ranking_loss multilabel_margin_loss "
    "soft_margin_loss triplet_margin_loss multi_margin_loss binary_cross_entropy_with_logits "
    "nll_loss cross_entropy dist pdist cdist renorm logsumexp".split()
)
_CUDA_FP32_DTYPE_ARG = frozenset("softmax log_softmax softmin cumsum cumprod prod sum".split())
_CUDA_LOWER = frozenset("addmv addr mv einsum chain_matmul multi_dot".split())
_LOW_DTYPES = (torch.bfloat16, torch.float16)


class _CudaAutocastPolicy(TorchFunctionMode):
    """Inside an enabled CPU autocast region, also apply CUDA autocast's own op lists."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if torch.is_autocast_enabled("cpu"):
            if name in _CUDA_FP32:
                args, kwargs = tree_map(_to_dtype(torch.float32), (args, kwargs))
            elif name in _CUDA_FP32_DTYPE_ARG and "dtype" not in kwargs and _first_low(args):
                kwargs = {**kwargs, "dtype": torch.float32}
            elif name in _CUDA_LOWER:
                low = torch.get_autocast_dtype("cpu")
                args, kwargs = tree_map(_to_dtype(low, from_fp32=True), (args, kwargs))
        return func(*args, **kwargs)


def _to_dtype(dtype: torch.dtype, from_fp32: bool = False) -> Any:
    src = (torch.float32,) if from_fp32 else _LOW_DTYPES

    def cast(x: Any) -> Any:
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.dtype in src else x

    return cast


def _first_low(args: Any) -> bool:
    return bool(args) and isinstance(args[0], torch.Tensor) and args[0].dtype in _LOW_DTYPES


@contextlib.contextmanager
def _cuda_autocast_policy(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with _CudaAutocastPolicy():
        yield
