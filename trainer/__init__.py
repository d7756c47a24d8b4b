"""divsweep trainer: build, train and evaluate string-rewrite models on CPU or GPU, without Ray.

Public API (see docs/ARCHITECTURE.md, section "trainer")::

    from trainer import TrainConfig, LoraSpec, train, TrainResult, build_model, evaluate, EvalResult
    from trainer import TrainerError, ConfigError

    cfg = TrainConfig(model="nano", epochs=3, batch_size=64, lr=1e-3, seed=0)
    result = train(cfg, ds, report=None, checkpoint_dir=None)
    result.metrics["test_acc"]

Importing this package builds nothing and touches no files; torch and transformers are imported
by the modules that need them.
"""

from trainer.config import PRESETS, LoraSpec, ModelDims, TrainConfig
from trainer.errors import CheckpointError, ConfigError, TrainerError
from trainer.evaluate import EvalResult, evaluate
from trainer.loop import TrainResult, lr_at, train
from trainer.model import build_codec, build_model

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "EvalResult",
    "LoraSpec",
    "ModelDims",
    "TrainConfig",
    "TrainResult",
    "TrainerError",
    "build_codec",
    "build_model",
    "evaluate",
    "lr_at",
    "train",
]
