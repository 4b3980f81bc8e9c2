"""Compare two builds of lstm_c on a few shapes, timed in alternating processes.

    pip install --no-deps --target /tmp/old_lstm_c .   # in a checkout of the other commit
    python bench/ab.py --other /tmp/old_lstm_c --threads 2 128,4,50 512,64,18

The installed lstm_c is one side, the build in `--other` (a directory holding an
`lstm_c` package) the other. Each round runs one short process per build, in turn
(which goes first alternates), and each process times every shape as the suite does
(the same calls: `lstm_c._cli.peers`, which the other build must have too). Bursts of
load from elsewhere thus land on both sides alike. The report gives each side's
minimum and median over all rounds and the ratio of the medians; on a busy machine
compare the minimums too. Nothing here is a test: it only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _shape(text: str) -> tuple[int, int, int]:
    H, B, T = (int(v) for v in text.split(","))
    return H, B, T


def worker(
    kind: str, threads: int, budget: float, shapes: list[tuple[int, int, int]]
) -> dict[str, list[float]]:
    """Seconds per call of lstm_c on each shape: a warm-up call, then calls for `budget` s."""
    from lstm_c._cli.peers import BUILDERS, Case, limit_threads, make_data

    times: dict[str, list[float]] = {}
    with limit_threads(threads):
        for H, B, T in shapes:
            case = Case("ab", kind, T, B, H, H)
            run = BUILDERS["lstm_c"](case, make_data(case, "float32"), threads).run
            run()
            samples = []
            end = time.perf_counter() + budget
            while not samples or time.perf_counter() < end:
                start = time.perf_counter()
                run()
                samples.append(time.perf_counter() - start)
            times[f"{H},{B},{T}"] = samples
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("shapes", nargs="+", type=_shape, metavar="H,B,T")
    parser.add_argument("--other", default="", help="a directory holding another build of lstm_c (required)")
    parser.add_argument("--kind", default="inference", choices=["inference", "training", "step"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--budget", type=float, default=0.2, help="timed seconds per shape and process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        json.dump(worker(args.kind, args.threads, args.budget, args.shapes), sys.stdout)
        return
    if not args.other:
        parser.error("--other is required: a directory holding another build of lstm_c")
    if not os.path.isdir(os.path.join(args.other, "lstm_c")):
        parser.error(f"--other: {args.other} holds no lstm_c package")
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--kind", args.kind]
    command += ["--threads", str(args.threads), "--budget", str(args.budget)]
    command += [",".join(map(str, shape)) for shape in args.shapes]
    sides = {"installed": None, "other": os.path.abspath(args.other)}
    times: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    for r in range(args.rounds):
        for side in list(sides)[:: 1 if r % 2 == 0 else -1]:
            env = dict(os.environ)
            env.pop("PYTHONPATH", None)
            if sides[side] is not None:
                env["PYTHONPATH"] = sides[side]
            # From the root directory: a source tree in the working directory would shadow both builds.
            out = subprocess.run(command, env=env, cwd=os.sep, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"the {side} build failed:\n{out.stderr}")
            for shape, samples in json.loads(out.stdout).items():
                times[side].setdefault(shape, []).extend(samples)
    print(f"{args.kind}, {args.threads} threads, {args.rounds} rounds; times in µs (minimum / median)")
    print(f"{'H,B,T':>14}  {'installed':>17}  {'other':>17}  other ÷ installed (medians)")
    for shape in times["installed"]:
        mine, theirs = (np.array(times[side][shape]) * 1e6 for side in sides)
        print(
            f"{shape:>14}  {mine.min():8.1f} / {np.median(mine):6.1f}  {theirs.min():8.1f} / "
            f"{np.median(theirs):6.1f}  {np.median(theirs) / np.median(mine):.3f}"
        )


if __name__ == "__main__":
    main()
