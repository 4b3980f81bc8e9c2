"""Run the benchmark suite and write the report (bench/RESULTS.md, bench/results.png).

    python bench/run.py [--quick] [--threads 1,2] [--budget SECONDS] [--pause SECONDS]
                        [--impls lstm_c,torch,...] [--json PATH] [--md PATH] [--png PATH]
                        [-- extra pytest arguments]

It runs `pytest bench/test_bench_lstm.py` in a fresh process (against the
installed lstm_c, never the source tree), saves pytest-benchmark's JSON
(bench/results.json by default), then calls bench/report.py on it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run lstm_c's benchmark suite and write the report.")
    parser.add_argument("--quick", action="store_true", help="the quick subset (about 1-2 minutes)")
    parser.add_argument(
        "--threads",
        default=None,
        help="comma-separated thread counts of the grid, each for every implementation "
        "(default 1 and $LSTM_C_BENCH_THREADS, else lstm_c.get_num_threads(): the CPUs "
        "this process may use)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed rounds per case and implementation (default 0.4, quick 0.2)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=None,
        help="seconds of sleep before each implementation's rounds (default 0.2)",
    )
    parser.add_argument("--impls", default=None, help="comma-separated implementations to keep")
    parser.add_argument("--json", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--md", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--png", default=os.path.join(HERE, "results.png"))
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)

    # The working directory is bench/, so `python -m pytest` puts bench/ (not the repository
    # root, whose lstm_c/ has no compiled module) first on sys.path.
    probe = subprocess.run(
        [sys.executable, "-c", "import lstm_c, lstm_c._lstm; print(lstm_c.__file__)"],
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        print("lstm_c is not importable (install it first: pip install .):\n" + probe.stderr, file=sys.stderr)
        return 2
    print(f"benchmarking {probe.stdout.strip()}", flush=True)

    cmd = [
        sys.executable,
        "-m",
        "pytest",
        os.path.join(HERE, "test_bench_lstm.py"),
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={os.path.abspath(args.json)}",
        "--benchmark-columns=median,iqr,min,rounds,iterations",
        "--benchmark-sort=name",
    ]
    if args.quick:
        cmd.append("--bench-quick")
    if args.threads is not None:
        cmd.append(f"--bench-threads={args.threads}")
    if args.budget is not None:
        cmd.append(f"--bench-budget={args.budget}")
    if args.pause is not None:
        cmd.append(f"--bench-pause={args.pause}")
    if args.impls:
        cmd.append(f"--bench-impls={args.impls}")
    cmd += args.pytest_args
    if os.path.exists(args.json):
        os.remove(args.json)
    start = time.perf_counter()
    code = subprocess.call(cmd, cwd=HERE)
    elapsed = time.perf_counter() - start
    if not os.path.exists(args.json):
        print(f"pytest exited with {code} and wrote no results", file=sys.stderr)
        return code or 1

    sys.path.insert(0, HERE)
    import report

    written = report.write_report(args.json, args.md, args.png or None)
    print()
    with open(args.md) as f:
        print(f.read())
    print("wrote " + ", ".join([args.json] + written) + f" (the suite ran {elapsed / 60:.1f} min)")
    if args.png and args.png not in written:
        print("matplotlib is not installed: no chart written (pip install matplotlib)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
