"""The code version that goes into every trial's identity: a hash of the code that makes results.

A trial's result is a function of its data spec, train config, seed *and the code* of ``data/``
and ``trainer/``. Reusing a stored result after that code changed would silently mix two
versions, so the trial key (`sweeps.specs.spec.TrialPlan.trial_key`) includes this hash.

It is the sha256 of every ``*.py`` file of the two packages (relative path and bytes, in path
order), not a git commit: it is the same on a laptop, in a ``ray job submit --working-dir``
upload and in an installed wheel, and it ignores edits elsewhere (the service, the sweep layer,
docs). Any edit to those two packages, even a comment, changes it; that errs on the side of
re-running. ``DIVSWEEP_CODE_VERSION`` overrides it (e.g. to pin a released version's results
across a refactor you have checked does not change numbers).

Example::

    >>> len(code_version())
    16
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import cache
from pathlib import Path

#: The packages whose code determines a trial's numbers.
RESULT_PACKAGES = ("data", "trainer")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"code_version: package {name!r} is not importable")
    return Path(spec.origin).resolve().parent


@cache
def source_hash(packages: tuple[str, ...] = RESULT_PACKAGES) -> str:
    """sha256 (16 hex) over ``(package/relative/path, bytes)`` of every ``.py`` file."""
    h = hashlib.sha256()
    for name in packages:
        root = _package_dir(name)
        for path in sorted(root.rglob("*.py")):
            rel = f"{name}/{path.relative_to(root).as_posix()}"
            h.update(rel.encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_version() -> str:
    """``$DIVSWEEP_CODE_VERSION`` if set, else `source_hash` of ``data/`` and ``trainer/``."""
    return os.environ.get("DIVSWEEP_CODE_VERSION") or source_hash()
