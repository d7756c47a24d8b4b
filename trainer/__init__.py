"""divsweep trainer: build, train and evaluate string-rewrite models on CPU or GPU, without Ray.

The package itself is light: what it exports here (the config, its rules, the errors) imports
without torch, so specs and services validate configs without loading it. What runs models
comes from its module (see docs/ARCHITECTURE.md, section "trainer")::

    from trainer import TrainConfig, LoraSpec, TrainerError, ConfigError     # no torch
    from trainer.loop import train, TrainResult                               # one model
    from trainer.fused import train_fused                                     # K models as one
    from trainer.model import build_model, build_codec
    from trainer.evaluate import evaluate, EvalResult
    from trainer.memory import MemoryEstimate, estimate_train_memory, gpu_fraction_for

    cfg = TrainConfig(model="nano", epochs=3, batch_size=64, lr=1e-3, seed=0)
    result = train(cfg, ds, report=None, checkpoint_dir=None)
    result.metrics["test_acc"]

    est = estimate_train_memory(cfg, ds.vocab.size, max_seq_len=120)   # measured, cached
    fraction = gpu_fraction_for(est, gpu_memory_bytes=80 * 10**9)     # e.g. 0.125
    train(cfg, ds, gpu_memory_fraction=fraction)                        # stays within its share

Importing this package builds nothing and touches no files.
"""

from trainer.config import PRESETS, LoraSpec, ModelDims, TrainConfig, fusable
from trainer.errors import CheckpointError, ConfigError, TrainerError

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "LoraSpec",
    "ModelDims",
    "TrainConfig",
    "TrainerError",
    "fusable",
]
