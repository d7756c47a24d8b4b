#!/usr/bin/env bash
# Download into .whl/ (ignored by git) the wheels benchmarks/gpu_check.py needs on a GPU machine
# that has torch, transformers, accelerate, pyarrow, pyyaml, tqdm and pytest but not pydantic,
# and no network (the device tool's H100/H200: CPython 3.12 on x86-64 Linux). pydantic comes at
# the version this checkout's .venv uses (the newest without a .venv), with the pydantic-core,
# annotated-types, typing-inspection and typing-extensions it needs, resolved by pip for the
# device's platform. Works with or without a .venv (any python3 with pip).
#
#   bash scripts/gpu_wheels.sh
#   # then, on the GPU machine, from the repository root (README: "GPUs: the check to run"):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
version=$("$py" -c "import importlib.metadata as m; print(m.version('pydantic'))" 2>/dev/null || true)
rm -rf .whl && mkdir -p .whl
"$py" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "pydantic${version:+==$version}"
ls -la .whl
