#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.py needs on a GPU machine that has torch, transformers,
# peft, pyarrow, pytest and accelerate but not pydantic (and no network): into .whl/ (ignored by
# git), for CPython 3.12 on x86-64 Linux, the versions this checkout's .venv uses.
#
#   bash scripts/gpu_wheels.sh
#   # then, on the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --out /tmp/gpu-report
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
for name in pydantic pydantic_core annotated_types typing_inspection typing_extensions; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "$name==$(version "$name")"
done
ls -la .whl
