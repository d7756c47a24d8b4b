"""Atomic, resumable checkpoints.

Layout under a run's checkpoint directory::

    ckpt-000120/            one complete checkpoint (state.pt + meta.json)
    LATEST                  the name of the newest complete checkpoint (replaced atomically)

A checkpoint is written to ``ckpt-000120.tmp``, fsynced, renamed into place, and only then does
``LATEST`` point at it, so a crash at any moment leaves the previous checkpoint readable. Older
checkpoints are removed after ``LATEST`` moves. `find_checkpoint` accepts either the run directory
or one checkpoint directory itself (which is what Ray Tune hands back on restore).

Example::

    >>> path = save_checkpoint(run_dir, 120, {"model": sd}, {"step": 120})  # doctest: +SKIP
    >>> find_checkpoint(run_dir) == path                                  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.io import write_bytes_atomic
from trainer.errors import CheckpointError

STATE = "state.pt"
META = "meta.json"
LATEST = "LATEST"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int = 1
) -> Path:
    """Write ``state`` (torch.save) and ``meta`` (JSON) as ``run_dir/ckpt-<step>``; return it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{step:09d}"
    final = run_dir / name
    tmp = run_dir / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / STATE, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    write_bytes_atomic(tmp / META, json.dumps(meta, sort_keys=True).encode())
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_bytes_atomic(run_dir / LATEST, name.encode())
    _fsync_dir(run_dir)
    old = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for p in old[: max(0, len(old) - keep)]:
        if p != final:
            shutil.rmtree(p, ignore_errors=True)
    return final


def find_checkpoint(path: str | Path | None) -> Path | None:
    """The checkpoint to resume from: ``path`` itself, the one LATEST names, or None."""
    if path is None:
        return None
    path = Path(path)
    if (path / META).is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        ckpt = path / latest.read_text().strip()
        if not (ckpt / META).is_file():
            raise CheckpointError(f"checkpoint_dir: LATEST names {ckpt}, which is incomplete")
        return ckpt
    return None


def load_checkpoint(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, meta)`` of one checkpoint directory."""
    try:
        meta = json.loads((ckpt / META).read_text())
        state = torch.load(ckpt / STATE, map_location="cpu", weights_only=False)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint_dir: cannot read {ckpt}: {e}") from e
    return state, meta


def rng_state() -> dict[str, Any]:
    """Every random generator the loop may touch (dropout draws from torch's)."""
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
