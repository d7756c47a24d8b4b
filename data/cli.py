"""``python -m data``: generate a data set from a YAML/JSON spec and/or flags, write Parquet.

Examples::

    python -m data --n-instructions 1000 --examples-per-instruction 1000 --out /tmp/fig2a
    python -m data spec.yaml --seed 3 --set test.n_test=500 --set family.k=[3,6] --out /tmp/d
    python -m data --n-instructions 20 --examples-per-instruction 5 --dry-run   # summary only

Flags override the spec file; ``--set KEY=VALUE`` reaches any (dotted) field, VALUE parsed as
YAML. The summary gives counts, no-op share, the occurrence histogram, rule-frequency skew
(max/min examples per rule and their Gini coefficient) and the content hash.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from data.errors import DataError
from data.generate import generate
from data.spec import DataSpec, apply_updates
from data.stats import summarize

PROGRESS_FROM = 200_000  # examples; below this a bar is noise


def _pair(text: str) -> list[int]:
    lo, _, hi = text.partition(",")
    return [int(lo), int(hi or lo)]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


FLAGS: list[tuple[str, str, Any, str]] = [
    ("--n-instructions", "n_instructions", int, "I, distinct training rules"),
    ("--examples-per-instruction", "examples_per_instruction", int, "S (n_train = I*S)"),
    ("--n-examples", "n_examples", int, "total training examples (instead of S)"),
    ("--noop-fraction", "noop_fraction", float, "share of no-op examples in [0, 1)"),
    ("--distribution", "distribution", str, "uniform | power"),
    ("--alpha", "alpha", float, "power-law exponent (with --distribution power)"),
    ("--occurrences", "occurrences", _ints, "counts of x in z, e.g. 1,5,10"),
    ("--alphabet", "alphabet", str, "letters, e.g. abcdef"),
    ("--z-len", "z_len", _pair, "MIN,MAX length of z"),
    ("--x-len", "x_len", _pair, "MIN,MAX length of x"),
    ("--y-len", "y_len", _pair, "MIN,MAX length of y"),
    ("--family", "family.kind", str, "free | repeated | periodic | mirror | mix"),
    ("--k", "family.k", _pair, "MIN,MAX copy count of the family"),
    ("--n-test", "test.n_test", int, "test examples"),
    ("--test-instructions", "test.n_instructions", int, "distinct test rules"),
    ("--disjoint", "test.disjoint", str, "rule | x"),
    ("--task", "task", str, "rewrite | markov"),
    ("--seed", "seed", int, "random seed"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", nargs="?", type=Path, help="YAML or JSON spec file")
    for flag, dest, typ, helptext in FLAGS:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=helptext)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any (dotted) spec field; VALUE is parsed as YAML",
    )
    p.add_argument("--out", type=Path, help="directory to write Parquet files to")
    p.add_argument("--dry-run", action="store_true", help="generate and summarize, write nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return p


def spec_from_args(args: argparse.Namespace) -> DataSpec:
    base: dict[str, Any] = {}
    if args.spec is not None:
        loaded = yaml.safe_load(args.spec.read_text())  # YAML is a superset of JSON
        if not isinstance(loaded, dict):
            raise DataError(f"{args.spec}: a spec file must hold a mapping of fields")
        base = loaded
    updates = {
        dest: getattr(args, dest) for _, dest, _, _ in FLAGS if getattr(args, dest) is not None
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"--set {item!r}: expected KEY=VALUE")
        updates[key.strip()] = yaml.safe_load(value)
    return DataSpec.model_validate(apply_updates(base, updates))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and not args.dry_run:
        parser.error("give --out DIR (or --dry-run)")
    try:
        spec = spec_from_args(args)
        start = time.perf_counter()
        progress = not args.no_progress and spec.n_train >= PROGRESS_FROM
        ds = generate(spec, progress=progress)
        seconds = time.perf_counter() - start
        path = None if args.dry_run else str(ds.save(args.out))
    except (DataError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {
        "content_hash": ds.content_hash,
        "seconds": round(seconds, 3),
        "out": path,
        "train": summarize(ds.train, spec.n_instructions),
        "test": summarize(ds.test, spec.test.n_rules),
        "fresh": summarize(ds.fresh, spec.n_instructions),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_report(report))
    return 0


def format_report(r: dict[str, Any]) -> str:
    lines = [f"content hash  {r['content_hash']}", f"generated in  {r['seconds']} s"]
    if r["out"]:
        lines.append(f"written to    {r['out']}")
    for split in ("train", "test", "fresh"):
        s = r[split]
        hist = ", ".join(f"{k}:{v}" for k, v in s["occurrences"].items()) or "-"
        lines += [
            f"{split}:",
            f"  examples     {s['rows']}",
            f"  no-op share  {s['noop_share']:.4f}",
            f"  occurrences  {hist}",
            f"  rules used   {s['rules_used']}  (examples per rule: max {s['rule_count_max']}, "
            f"min {s['rule_count_min']}, Gini {s['rule_gini']:.3f})",
        ]
        if "rules_new_x" in s:
            new = f"{s['rules_new_x']} / {s['rules_new_y']}"
            lines.append(f"  rules with x / y never seen in training  {new}")
    return "\n".join(lines)
