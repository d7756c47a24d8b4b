"""Command line: train one model on one data set, without Ray.

::

    python -m trainer --data spec.yaml --config train.yaml --out runs/demo
    python -m trainer --data saved_dataset_dir/ --set model=nano --set max_steps=200 --out runs/x

``--data`` is a `data.DataSpec` as YAML/JSON (generated on the fly) or a directory written by
``RewriteDataset.save``. ``--config`` is a `TrainConfig` as YAML/JSON; ``--set key=value``
overrides single fields (values parsed as YAML: ``--set lr=3e-3 --set betas=[0.9,0.95]``).
The run writes into ``--out``:

* ``metrics.jsonl``: one JSON object per evaluation (the dicts passed to ``report``);
* ``checkpoints/``: the resumable checkpoint (re-running the same command resumes from it);
* ``result.json``: the final metrics and a few failed test examples.

``--gpu-memory-fraction F`` caps the run at that share of the GPU's memory (see `trainer.train`).
``--estimate-memory`` prints the measured memory estimate for this config and data (see
`trainer.memory`) and the GPU fraction it needs on a ``--gpu-memory-gb`` GPU, then exits without
training (``--out`` is then optional)::

    python -m trainer --data spec.yaml --set model=tiny --set epochs=1 --estimate-memory

``python -m trainer pretrain`` builds divsweep's own small pretrained model (`trainer.pretrain`)
and prints its directory: a builtin by name into the model cache (what ``init: "divsweep:NAME"``
resolves to, built on first use anyway), or into ``--out`` as a plain checkpoint directory that
any ``init: /path`` can name; ``--set`` overrides `PretrainSpec` fields (then ``--out`` is needed,
since the result is no longer the builtin)::

    python -m trainer pretrain                        # divsweep:tiny-lm, ~3 min on one core
    python -m trainer pretrain --name smoke-lm --out /tmp/lm --set steps=50

Exit status: 0 on success, 2 on a bad data spec or config, or a model too large for the GPU
(message on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

import data
from data import DataError
from trainer.batching import seq_lengths
from trainer.builtin import BUILTINS, build_atomically, ensure_built
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.loop import train
from trainer.memory import estimate_train_memory, gpu_fraction_for
from trainer.model import build_codec
from trainer.pretrain_spec import MANIFEST, PretrainSpec


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text()
    obj = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(obj, dict):
        raise TrainerError(f"{path}: expected a mapping at the top level")
    return obj


def load_data(arg: str) -> Any:
    """A data set from a saved directory, or generated from a spec file."""
    path = Path(arg)
    if path.is_dir():
        return data.load_dataset(path)
    return data.generate(data.DataSpec(**_read_mapping(path)))


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """TrainConfig from an optional YAML/JSON file plus ``key=value`` overrides."""
    fields: dict[str, Any] = _read_mapping(Path(path)) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainerError(f"--set: expected key=value, got {item!r}")
        fields[key.strip()] = yaml.safe_load(value)
    return TrainConfig(**fields)


def print_memory_estimate(cfg: TrainConfig, ds: Any, gpu_memory_gb: float) -> int:
    """Print the estimate for ``cfg`` on ``ds``'s training split and its GPU fraction."""
    try:
        longest = int(seq_lengths(build_codec(cfg, ds.vocab).encode(ds, "train")).max())
        est = estimate_train_memory(cfg, ds.vocab.size, longest)
        print(f"memory estimate: {est}")
        fraction = gpu_fraction_for(est, int(gpu_memory_gb * 1e9))
    except (TrainerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"gpu fraction on a {gpu_memory_gb:g} GB GPU: {fraction:g} (headroom 1.25)")
    return 0


def pretrain_main(argv: list[str]) -> int:
    """``python -m trainer pretrain``: build a builtin model, or a variant of it into ``--out``."""
    p = argparse.ArgumentParser(
        prog="python -m trainer pretrain",
        description="Build divsweep's own small pretrained causal LM (nothing is downloaded).",
    )
    p.add_argument("--name", default="tiny-lm", choices=sorted(BUILTINS), help="the builtin")
    p.add_argument("--out", help="write a plain checkpoint directory here instead of the cache")
    p.add_argument(
        "--cache-dir",
        help="model cache (default $DIVSWEEP_MODEL_CACHE or ~/.cache/divsweep/models)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one PretrainSpec field (repeatable; needs --out)",
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.set and not args.out:
        p.error("--set changes the model, so it is no longer the builtin: give --out")
    try:
        fields = BUILTINS[args.name].model_dump()
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise TrainerError(f"--set: expected key=value, got {item!r}")
            fields[key.strip()] = yaml.safe_load(value)
        spec = PretrainSpec(**fields)
        if args.out:
            out = Path(args.out)
            if out.exists():
                raise TrainerError(f"--out: {out} already exists; give a new directory")
            build_atomically(spec, out)
        else:
            out = ensure_built(args.name, spec, args.cache_dir)
    except (TrainerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = json.loads((out / MANIFEST).read_text())
    print(f"held-out accuracy per operation: {info['held_out_accuracy']}")
    print(out)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="DataSpec YAML/JSON, or a saved dataset dir")
    p.add_argument("--config", help="TrainConfig YAML/JSON")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one TrainConfig field (repeatable)",
    )
    p.add_argument("--out", help="output directory (required unless --estimate-memory)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--gpu-memory-fraction",
        type=float,
        metavar="F",
        help="cap the CUDA allocator at this share of the GPU, 0 < F <= 1",
    )
    p.add_argument(
        "--estimate-memory",
        action="store_true",
        help="print the measured memory estimate and GPU fraction, then exit",
    )
    p.add_argument(
        "--gpu-memory-gb",
        type=float,
        default=80.0,
        help="GPU size for --estimate-memory's fraction, in GB of 1e9 bytes (default 80)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pretrain"]:
        return pretrain_main(argv[1:])
    p = _parser()
    args = p.parse_args(argv)
    if args.out is None and not args.estimate_memory:
        p.error("--out is required unless --estimate-memory is given")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config, args.set)
        ds = load_data(args.data)
    except (TrainerError, DataError, OSError, yaml.YAMLError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.estimate_memory:
        return print_memory_estimate(cfg, ds, args.gpu_memory_gb)
    return train_into(cfg, ds, Path(args.out), not args.no_progress, args.gpu_memory_fraction)


def train_into(
    cfg: TrainConfig, ds: Any, out: Path, progress: bool, gpu_memory_fraction: float | None
) -> int:
    """Train, writing ``config.json``, ``metrics.jsonl``, ``checkpoints/`` and ``result.json``
    into ``out`` (a rerun resumes from the checkpoints); the exit status."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    metrics_path = out / "metrics.jsonl"

    def report(metrics: dict[str, float | int], checkpoint: str | None) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps({**metrics, "checkpoint": checkpoint}) + "\n")

    try:
        result = train(
            cfg,
            ds,
            report=report,
            checkpoint_dir=out / "checkpoints",
            progress=progress,
            gpu_memory_fraction=gpu_memory_fraction,
        )
    except TrainerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {
        "metrics": result.metrics,
        "failures": result.failures,
        "checkpoint": result.checkpoint,
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    m = result.metrics
    print(
        f"done: step {m.get('step')} test_acc {m.get('test_acc', float('nan')):.4f} "
        f"(no-op {m.get('test_acc_noop', float('nan')):.4f}, "
        f"has-op {m.get('test_acc_op', float('nan')):.4f}) -> {out}"
    )
    return 0
