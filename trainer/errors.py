"""Exceptions raised by the trainer.

The tree is small on purpose::

    TrainerError            anything the trainer refuses or cannot do
    ├── ConfigError         a TrainConfig field holds a bad value (the message names the field)
    └── CheckpointError     a checkpoint directory is missing files or belongs to another run

Example::

    >>> from trainer import TrainConfig, ConfigError
    >>> try:
    ...     TrainConfig(model=None, n_layer=2, n_head=3, n_embd=64, max_steps=10)
    ... except ConfigError as e:
    ...     print(e)
    n_embd: 64 is not divisible by n_head=3
"""

from __future__ import annotations

from pydantic import ValidationError

from data.errors import error_details, format_details


class TrainerError(Exception):
    """Base class of every error the trainer raises on purpose."""


class ConfigError(TrainerError, ValueError):
    """A configuration value breaks a rule; the message starts with the field name."""


class CheckpointError(TrainerError):
    """A checkpoint cannot be read or does not match the run resuming from it."""


def format_validation_error(e: ValidationError) -> str:
    """Render pydantic errors as ``field: message; ...`` (`data.errors.error_details`)."""
    return format_details(error_details(e.errors()))
