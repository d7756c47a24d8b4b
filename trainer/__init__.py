"""divsweep trainer: build, train and evaluate string-rewrite models on CPU or GPU, without Ray.

Public API (see docs/ARCHITECTURE.md, section "trainer")::

    from trainer import TrainConfig, LoraSpec, train, TrainResult, build_model, evaluate, EvalResult
    from trainer import TrainerError, ConfigError
    from trainer import MemoryEstimate, estimate_train_memory, gpu_fraction_for

    cfg = TrainConfig(model="nano", epochs=3, batch_size=64, lr=1e-3, seed=0)
    result = train(cfg, ds, report=None, checkpoint_dir=None)
    result.metrics["test_acc"]

    est = estimate_train_memory(cfg, ds.vocab.size, max_seq_len=120)   # measured, cached
    fraction = gpu_fraction_for(est, gpu_memory_bytes=80 * 10**9)     # e.g. 0.125
    train(cfg, ds, gpu_memory_fraction=fraction)                        # stays within its share

Importing this package builds nothing and touches no files; torch and transformers are imported
by the modules that need them.
"""

from trainer.config import PRESETS, LoraSpec, ModelDims, TrainConfig
from trainer.errors import CheckpointError, ConfigError, TrainerError
from trainer.evaluate import EvalResult, evaluate
from trainer.loop import TrainResult, lr_at, train
from trainer.memory import MemoryEstimate, estimate_train_memory, gpu_fraction_for
from trainer.model import build_codec, build_model

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "EvalResult",
    "LoraSpec",
    "MemoryEstimate",
    "ModelDims",
    "TrainConfig",
    "TrainResult",
    "TrainerError",
    "build_codec",
    "build_model",
    "estimate_train_memory",
    "evaluate",
    "gpu_fraction_for",
    "lr_at",
    "train",
]
