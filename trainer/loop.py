"""`train`: one model trained by the one loop (`trainer.run`) with a `ModelStepper`.

Setup (device, codec, encoded splits, model: `trainer.member`), an AdamW optimiser, resume from
the latest checkpoint, then `trainer.run.run`: length-bucketed batches (lr from
`trainer.step.lr_at`, forward, masked loss, backward, clip, step), and at each evaluation point
the test set and a sample of training rules decoded, a checkpoint written and
``report(metrics, checkpoint)`` called. The data order of epoch ``e`` is a pure function of
``(seed, e)``, so a checkpoint only needs the step number plus the model, optimiser and RNG states
to resume exactly.

Example::

    >>> from data import DataSpec, generate
    >>> from trainer import TrainConfig
    >>> ds = generate(DataSpec(n_instructions=20, examples_per_instruction=20, seed=0))
    >>> result = train(TrainConfig(model="nano", max_steps=50, batch_size=32), ds)  # doctest: +SKIP
    >>> sorted(result.metrics)[:3]                                                  # doctest: +SKIP
    ['epoch', 'examples_seen', 'lr']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.batching import collate
from trainer.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainer.config import TrainConfig
from trainer.errors import CheckpointError
from trainer.member import setup_member
from trainer.run import Counters, Metrics, TrainResult, run
from trainer.step import (
    Batch,
    autocast,
    compiled,
    lr_at,
    make_optimizer,
    masked_loss,
    set_lr,
    to_device,
)

log = logging.getLogger(__name__)

#: ``report(metrics, checkpoint)``: called at each evaluation with flat scalar metrics and the
#: path of the checkpoint just written (None without a checkpoint directory).
Report = Callable[[Metrics, str | None], None]


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
    stepper = ModelStepper(cfg, dataset, gpu_memory_fraction)
    one = None if report is None else _first_member(report)
    [result] = run(stepper, one, checkpoint_dir, progress)
    return result


def _first_member(report: Report) -> Callable[[list[Metrics], str | None], None]:
    return lambda metrics, checkpoint: report(metrics[0], checkpoint)


class ModelStepper:
    """The `trainer.run.Stepper` of one model: forward, masked loss, backward, clip, AdamW.

    Its checkpoints (``checkpoint_dir/ckpt-<step>``) hold the model's state dict, the optimiser's
    and the RNG states (`trainer.checkpoint`); `trainer.fused` writes its members' in the same
    format, so this stepper resumes a fused member too.
    """

    def __init__(
        self, cfg: TrainConfig, dataset: Any, gpu_memory_fraction: float | None = None
    ) -> None:
        member, self.module = setup_member(cfg, dataset, gpu_memory_fraction)
        self.members = [member]
        self.tags: dict[str, int] = {}
        self.optimizer = make_optimizer(self.module, cfg)
        self.fwd = compiled(self.module, cfg, member.device)

    def load(self, checkpoint_dir: str | Path | None) -> tuple[list[Counters], str | None]:
        """Restore model, optimiser, RNG and counters from the latest checkpoint of this config;
        fresh counters (and the seed) when there is none."""
        cfg = self.members[0].cfg
        ckpt = find_checkpoint(checkpoint_dir)
        if ckpt is None:
            torch.manual_seed(cfg.seed)  # dropout draws, when dropout > 0
            return [Counters()], None
        state, meta = load_checkpoint(ckpt)
        if meta["config"] != cfg.model_dump(mode="json"):
            raise CheckpointError(f"checkpoint_dir: {ckpt} was written by a different TrainConfig")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        counters = Counters.from_meta(meta)
        log.info("resumed from %s at step %d", ckpt, counters.step)
        return [counters], str(ckpt)

    def prepare(self, batches: Sequence[np.ndarray]) -> Batch:
        """Batch ``batches[0]`` collated, padded to ``pad_multiple`` and on its way to the
        device."""
        m = self.members[0]
        [idx] = batches
        inputs, targets = collate(
            m.train_seqs, idx, m.codec.pad_id, m.cfg.loss_on, multiple=m.cfg.pad_multiple
        )
        return Batch(
            to_device(inputs, m.device, m.cfg.prefetch),
            to_device(targets, m.device, m.cfg.prefetch),
            (len(idx),),
            (int(m.lengths[idx].sum()),),
        )

    def step(self, batch: Batch, step: int) -> torch.Tensor:
        """One optimiser step: lr, forward, masked loss, backward, clip, step.

        Nothing here waits for the GPU (no ``.item()``, no pageable copies): the loss stays on
        the device, and the host runs ahead to prepare the next batch.
        """
        m = self.members[0]
        set_lr(self.optimizer, lr_at(step, m.cfg, m.total_steps))
        with autocast(m.device, m.amp_dtype):
            logits = self.fwd(input_ids=batch.inputs).logits  # (B, T, V)
        loss = masked_loss(logits, batch.targets)
        loss.backward()
        if m.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), m.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().reshape(1)

    def model(self, member: int) -> torch.nn.Module:
        return self.module

    def train_mode(self) -> None:
        self.module.train()

    def save(self, checkpoint_dir: str | Path, member: int, counters: Counters) -> str:
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
        }
        meta = counters.meta(self.members[0].cfg)
        return str(save_checkpoint(checkpoint_dir, counters.step, state, meta))

    def final_model(self, member: int) -> torch.nn.Module:
        return self.module
