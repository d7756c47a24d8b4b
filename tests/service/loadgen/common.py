"""What a simulated sweep writes: a pure function of the spec, so the client can check every row
(see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

TOKEN = "loadgen-token-0123456789"
SUBMITTER = "loadgen"
AXIS_FIELD = "data.n_instructions"
AXIS_VALUES = (10, 100)

# ------------------------------------------------------------------------------------------------
# What a writer writes (shared by both halves)
# ------------------------------------------------------------------------------------------------


def trial_id(i: int) -> str:
    return f"trial_{i:05d}"


def metric_values(i: int, step: int) -> dict[str, Any]:
    """The metrics trial ``i`` reports at ``step`` (exact binary fractions: JSON/Parquet safe)."""
    return {
        "step": step,
        "test_acc": ((7 * i + 3 * step) % 64) / 64,
        "train_loss": 1.0 / 2 ** min(step, 20) + i / 1024,
    }


def row_position(seq: int, n_trials: int) -> tuple[int, int]:
    """``(trial index, step)`` of the row with ``seq`` (rows are written round-robin)."""
    return (seq - 1) % n_trials, (seq - 1) // n_trials
