"""Benchmark: generate AND encode the paper's main training set, against a pure-Python yardstick.

The set is Fig. 2a's: 10^6 training examples over I = 1000 rules, z of length 10..50, x 2..20,
y 1..20, every input containing x once (no no-ops). The yardstick is a straightforward
per-example generator (``random.choice`` per character, ``str.replace``, per-example encoding),
timed in the same run on a subsample and extrapolated linearly (labelled as such).

Run on one core:  ``taskset -c 0 python benchmarks/bench_data.py``  (threads are pinned to 1 here
as well). ``--examples`` scales the set down for a quick look; ``--smoke`` runs a tiny version.
Targets (issue 2): >= 10x the yardstick, 10^6 examples in < 2 s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads: one core, as the target says

import argparse  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import string  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from data import DataSpec, generate  # noqa: E402


def yardstick(n: int, n_rules: int, seed: int = 0) -> tuple[float, float]:
    """(wall, CPU) seconds for a plain-Python generator to make and encode ``n`` examples."""
    rnd = random.Random(seed)
    letters = string.ascii_lowercase
    vocab = {c: i + 5 for i, c in enumerate(letters)}
    rules = []
    while len(rules) < n_rules:
        x = "".join(rnd.choice(letters) for _ in range(rnd.randint(2, 20)))
        y = "".join(rnd.choice(letters) for _ in range(rnd.randint(1, 20)))
        if x != y and (x, y) not in rules:
            rules.append((x, y))
    start, cpu = time.perf_counter(), time.process_time()
    tokens: list[list[int]] = []
    for _ in range(n):
        x, y = rules[rnd.randrange(n_rules)]
        while True:
            length = rnd.randint(max(10, len(x)), 50)
            filler = "".join(rnd.choice(letters) for _ in range(length - len(x)))
            pos = rnd.randint(0, len(filler))
            z = filler[:pos] + x + filler[pos:]
            if z.count(x) == 1:
                break
        out = z.replace(x, y, 1)
        seq = (
            [vocab[c] for c in x]
            + [2]
            + [vocab[c] for c in y]
            + [3]
            + [vocab[c] for c in z]
            + [4]
            + [vocab[c] for c in out]
            + [1]
        )
        tokens.append(seq)
    return time.perf_counter() - start, time.process_time() - cpu


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=1_000_000)
    ap.add_argument("--instructions", type=int, default=1000)
    ap.add_argument("--yardstick", type=int, default=20_000, help="subsample for the yardstick")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timed runs")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = ap.parse_args()
    if args.smoke:
        args.examples, args.instructions, args.yardstick, args.repeats = 20_000, 100, 2000, 1
    spec = DataSpec(
        n_instructions=args.instructions,
        n_examples=args.examples,
        z_len=(10, 50),
        x_len=(2, 20),
        y_len=(1, 20),
        noop_fraction=0.0,
        occurrences=(1,),
        test={"n_test": 1000},
        seed=0,
    )
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    print(
        f"set: {args.examples} train examples, I={args.instructions}, z 10..50, x 2..20, "
        f"y 1..20, no no-ops; CPU cores usable: {cores}; load average {os.getloadavg()[0]:.2f}"
    )
    generate(spec.with_updates(n_examples=1000, n_instructions=10)).encoded("train")  # warm-up
    rss_before = maxrss_mib()
    # Interleave the two generators so both see the same machine load (it is shared); keep the
    # best of each. CPU time is printed too: on a busy machine it is the steadier figure.
    fast_wall, fast_cpu, slow_wall, slow_cpu = [], [], [], []
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        ds = generate(spec)
        enc = ds.encoded("train")
        fast_wall.append(time.perf_counter() - wall)
        fast_cpu.append(time.process_time() - cpu)
        n_tokens = len(enc.tokens)
        del ds, enc
        wall, cpu = yardstick(args.yardstick, args.instructions)
        slow_wall.append(wall)
        slow_cpu.append(cpu)
    best, best_cpu, slow = min(fast_wall), min(fast_cpu), min(slow_wall)
    rate = args.examples / best
    print(
        f"generate+encode: best {best:.3f} s wall ({', '.join(f'{t:.2f}' for t in fast_wall)}), "
        f"best {best_cpu:.3f} s CPU -> {rate:,.0f} examples/s, {n_tokens:,} tokens"
    )
    print(f"peak RSS: {maxrss_mib():.0f} MiB (before generating: {rss_before:.0f} MiB)")
    print(f"load average now: {os.getloadavg()[0]:.2f} (wall times are only fair on an idle core)")
    slow_rate = args.yardstick / slow
    print(
        f"yardstick (pure Python, per example): best {slow:.2f} s for {args.yardstick} examples "
        f"-> {slow_rate:,.0f} examples/s; EXTRAPOLATED to {args.examples}: "
        f"{args.examples / slow_rate:.1f} s"
    )
    ratio = rate / slow_rate
    ratio_cpu = (args.examples / best_cpu) / (args.yardstick / min(slow_cpu))
    verdict = "met" if ratio >= 10 else "MISSED"
    print(
        f"speed-up vs yardstick: {ratio:.1f}x wall, {ratio_cpu:.1f}x CPU (target >= 10x: {verdict})"
    )
    if args.examples == 1_000_000:
        verdict = "met" if best < 2 else "MISSED"
        print(f"10^6 examples in {best:.2f} s wall, {best_cpu:.2f} s CPU (target < 2 s: {verdict})")


if __name__ == "__main__":
    main()
