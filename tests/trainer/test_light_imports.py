"""Light modules stay light: the config and the builtin-model table import without torch or Ray.

Each check runs in a fresh interpreter (this one has torch loaded long ago) and lists which heavy
packages the import brought in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "transformers")


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import trainer",
        "from trainer.config import TrainConfig, fusable",
        "from trainer.builtin import BUILTINS, builtin_spec, is_builtin, build_dir",
        "from trainer.pretrain_spec import PretrainSpec",
        # validating a config that names a builtin reads the table, and still needs no torch
        "from trainer import TrainConfig\n"
        "TrainConfig(model=None, init='divsweep:tiny-lm', max_steps=1)",
    ],
)
def test_imports_without_torch_or_ray(code):
    assert _loaded_after(code) == []


def test_the_probe_sees_torch_when_it_is_loaded():
    # The check above could pass vacuously if the probe saw nothing: here it must see torch.
    assert "torch" in _loaded_after("import trainer.loop")
