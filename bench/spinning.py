"""lstm_c right after PyTorch and ONNX Runtime, with their idle threads spinning or not: prints, never asserts.

    python bench/spinning.py [--rounds N] [--threads N]

When a call of ONNX Runtime or PyTorch returns, their idle threads keep polling for work
(ONNX Runtime's for tens of milliseconds, PyTorch's OpenMP threads for about ten, on a
2-core machine), holding the cores that a call of lstm_c made right then needs. Each
setting below runs in a process of its own (OpenMP reads OMP_WAIT_POLICY when it starts)
and times, on the suite's coexistence shapes (bench/lstm_bench.py), float32:

- lstm_c quiet: after a pause and two calls, as the suite's quiet time;
- lstm_c right after PyTorch and ONNX Runtime ran the same shape (ONNX Runtime: its
  inference), with no pause;
- PyTorch's and ONNX Runtime's quiet times, so that what a setting costs them shows too.

The settings: the libraries' defaults; ONNX Runtime's threads not spinning (the session
option ``session.intra_op.allow_spinning`` set to "0"); and that with
OMP_WAIT_POLICY=passive (OpenMP's threads, PyTorch's and those of lstm_c's training calls,
sleep as soon as they wait). Medians over the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# (label, ONNX Runtime's threads spinning, OMP_WAIT_POLICY or None to leave it unset)
SETTINGS = (
    ("their defaults", True, None),
    ("ONNX Runtime not spinning", False, None),
    ("ONNX Runtime not spinning, OMP_WAIT_POLICY=passive", False, "passive"),
)
PAUSE = 0.05  # seconds before a quiet time: every pool's threads have stopped spinning


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def quiet_time(run) -> float:
    time.sleep(PAUSE)
    run()
    run()
    return timed(run)


def measure(spinning: bool, threads: int, rounds: int) -> list[dict]:
    """One setting's medians (seconds) on every coexistence shape, in this process."""
    from lstm_bench import suite

    from lstm_c._cli.peers import BUILDERS, build_onnxruntime, limit_threads, make_data

    results = []
    with limit_threads(threads):
        for case in (c for c in suite((threads,)) if c.group == "coexist"):
            data = make_data(case, "float32")  # ONNX Runtime reads its x and weights only
            ort_case = dataclasses.replace(case, kind="inference")
            built = {
                "lstm_c": BUILDERS["lstm_c"](case, data, threads),
                "torch": BUILDERS["torch"](case, data, threads),
                "onnxruntime": build_onnxruntime(ort_case, data, threads, spinning=spinning),
            }
            runners = {name: runner.run for name, runner in built.items()}
            quiet: dict[str, list[float]] = {name: [] for name in runners}
            after = []
            for _ in range(rounds):
                for name, run in runners.items():
                    quiet[name].append(quiet_time(run))
                runners["torch"]()
                runners["onnxruntime"]()
                after.append(timed(runners["lstm_c"]))
            results.append(
                {
                    "shape": f"{case.kind} {case.shape}",
                    "after": float(np.median(after)),
                    **{name: float(np.median(times)) for name, times in quiet.items()},
                }
            )
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--setting", type=int, help=argparse.SUPPRESS)  # one setting, in a child process
    args = parser.parse_args()
    if args.setting is not None:
        print(json.dumps(measure(SETTINGS[args.setting][1], args.threads, args.rounds)))
        return

    from lstm_c._cli.info import cpu_model

    print(f"{cpu_model()}, {args.threads} threads, {args.rounds} rounds, medians")
    print(
        "| shape | setting | lstm_c quiet | lstm_c right after the peers | share | PyTorch quiet | ONNX Runtime quiet |"
    )
    print("|---|---|---|---|---|---|---|")
    for index, (label, _, wait_policy) in enumerate(SETTINGS):
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if wait_policy:
            env["OMP_WAIT_POLICY"] = wait_policy
        command = [sys.executable, __file__, "--setting", str(index)]
        command += ["--rounds", str(args.rounds), "--threads", str(args.threads)]
        child = subprocess.run(command, env=env, capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"the run of the setting {label!r} failed:\n{child.stderr}")
        for r in json.loads(child.stdout.splitlines()[-1]):
            print(
                f"| {r['shape']} | {label} | {ms(r['lstm_c'])} | {ms(r['after'])} | {r['lstm_c'] / r['after']:.0%} "
                f"| {ms(r['torch'])} | {ms(r['onnxruntime'])} |"
            )


if __name__ == "__main__":
    main()
