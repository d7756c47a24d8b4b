"""Exceptions raised by the trainer.

The tree is small on purpose::

    TrainerError            anything the trainer refuses or cannot do
    ├── ConfigError         a TrainConfig field holds a bad value (the message names the field)
    └── CheckpointError     a checkpoint directory is missing files or belongs to another run

`ConfigModel` is the base of the trainer's pydantic configs (`TrainConfig`, `PretrainSpec`): a
direct call raises `ConfigError` with every field's message instead of pydantic's
`ValidationError`.

Example::

    >>> from trainer import TrainConfig, ConfigError
    >>> try:
    ...     TrainConfig(model=None, n_layer=2, n_head=3, n_embd=64, max_steps=10)
    ... except ConfigError as e:
    ...     print(e)
    n_embd: 64 is not divisible by n_head=3
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

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


class ConfigModel(BaseModel):
    """A pydantic model whose direct construction raises `ConfigError` (``field: rule; ...``).

    Only a direct call goes through this wrapper: as a nested field (or with
    ``model_validate_json(..., strict=True)``) pydantic must validate with its own rules, or the
    wrapper's lax re-validation would let ``true`` pass for an int (pydantic-settings marks its
    own ``__init__`` the same way, ``__pydantic_base_init__``).

        >>> class Knob(ConfigModel):
        ...     n: int
        >>> Knob(n="x")
        Traceback (most recent call last):
        ...
        trainer.errors.ConfigError: n: Input should be a valid integer, unable to parse string ...
    """

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e)) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]
