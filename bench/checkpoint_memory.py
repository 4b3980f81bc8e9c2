"""Memory and time of training one long layer with and without ``checkpoint_every``: prints, never asserts.

    python bench/checkpoint_memory.py [--seq-lens 500,1000,2000,4000] [--batch 16] [--hidden 256]
                                      [--dtype float32] [--repeat 5] [--threads N] [--every K]

For each sequence length T, one layer (I = H) runs ``lstm_forward`` + ``lstm_backward``
(dy given, every gradient computed) with the full cache (k = None) and with a checkpoint
every k = int(sqrt(T)) steps (or `--every K`):

- extra memory: the peak that tracemalloc traces during forward + backward (NumPy reports
  its allocations to it), minus the outputs y and dx; x, dy and the weights exist before.
  Measured in a run of its own: tracing slows allocation, so timed runs are untraced.
- time: the median of `--repeat` runs of forward + backward, the two settings interleaved
  (None, k, None, k, ...) with a pause between runs, so that a burst of load elsewhere
  lands on both; wall-clock time, and the CPU time of this process (time.process_time,
  all its threads), which waiting for a core on a busy machine does not inflate. With one
  thread the CPU time is the work done; with more, it also counts the time threads spin
  at barriers.

The targets (the issue that introduced checkpointing): at T = 4000, B = 16, H = 256 in
float32, extra memory at most 10% of the full cache's and time at most 1.5x. The machine,
its load average and the thread count are printed with the figures: on a shared machine
the times are noisy; the memory figures are not.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
import tracemalloc
from typing import NamedTuple

import numpy as np

import lstm_c

MiB = 2**20


def problem(T: int, B: int, H: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(T)
    bound = 1 / math.sqrt(H)
    return dict(
        x=rng.standard_normal((T, B, H)).astype(dtype),
        w_ih=rng.uniform(-bound, bound, (4 * H, H)).astype(dtype),
        w_hh=rng.uniform(-bound, bound, (4 * H, H)).astype(dtype),
        b_ih=rng.uniform(-bound, bound, 4 * H).astype(dtype),
        b_hh=rng.uniform(-bound, bound, 4 * H).astype(dtype),
        dy=rng.standard_normal((T, B, H)).astype(dtype),
    )


class Run(NamedTuple):
    forward: float  # wall-clock seconds
    backward: float
    cpu: float  # CPU seconds of the process, forward + backward
    y: np.ndarray
    dx: np.ndarray


def train(p: dict[str, np.ndarray], every: int | None, threads: int) -> Run:
    """Forward + backward, timed."""
    inputs = {k: v for k, v in p.items() if k != "dy"}
    cpu = time.process_time()
    start = time.perf_counter()
    y, _, _, cache = lstm_c.lstm_forward(**inputs, checkpoint_every=every, num_threads=threads)
    middle = time.perf_counter()
    g = lstm_c.lstm_backward(cache, p["dy"], num_threads=threads)
    end = time.perf_counter()
    return Run(middle - start, end - middle, time.process_time() - cpu, y, g.dx)


def extra_memory(p: dict[str, np.ndarray], every: int | None, threads: int) -> int:
    tracemalloc.start()
    try:
        run = train(p, every, threads)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - run.y.nbytes - run.dx.nbytes


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{model}, {os.cpu_count()} CPUs, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-lens", default="500,1000,2000,4000")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between timed runs")
    parser.add_argument("--threads", type=int, default=lstm_c.get_num_threads())
    parser.add_argument("--every", type=int, default=None, help="k for every T (default int(sqrt(T)))")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    B, H, threads = args.batch, args.hidden, args.threads

    print(f"lstm_c {lstm_c.__version__}; {machine()}")
    print(
        f"one layer, B={B}, I=H={H}, {dtype}, {threads} thread(s), median of {args.repeat} "
        f"interleaved runs; extra memory = traced peak of forward+backward minus y and dx\n"
    )
    header = (
        f"{'T':>6} {'k':>4} | {'extra MiB':>9} {'(k)':>7} {'ratio':>6} | "
        f"{'time s':>7} {'(k)':>7} {'ratio':>6} | {'cpu s':>7} {'(k)':>7} {'ratio':>6} | "
        f"{'fwd':>5} {'bwd':>5} {'fwd(k)':>6} {'bwd(k)':>6}"
    )
    print(header)
    print("-" * len(header))
    last = None
    for T in (int(t) for t in args.seq_lens.split(",")):
        k = args.every or int(math.sqrt(T)) or 1
        p = problem(T, B, H, dtype)
        train(p, k, threads)  # warm up: BLAS binding, thread pool, page faults
        memory = {every: extra_memory(p, every, threads) for every in (None, k)}
        runs: dict[int | None, list[tuple[float, float, float]]] = {None: [], k: []}
        for _ in range(args.repeat):
            for every in (None, k):
                run = train(p, every, threads)
                runs[every].append((run.forward, run.backward, run.cpu))
                del run
                time.sleep(args.pause)
        total = {e: statistics.median(f + b for f, b, _ in v) for e, v in runs.items()}
        cpu = {e: statistics.median(c for _, _, c in v) for e, v in runs.items()}
        fwd = {e: statistics.median(f for f, _, _ in v) for e, v in runs.items()}
        bwd = {e: statistics.median(b for _, b, _ in v) for e, v in runs.items()}
        mem_ratio, time_ratio, cpu_ratio = (
            memory[k] / memory[None],
            total[k] / total[None],
            cpu[k] / cpu[None],
        )
        print(
            f"{T:>6} {k:>4} | {memory[None] / MiB:>9.1f} {memory[k] / MiB:>7.1f} {mem_ratio:>6.1%} | "
            f"{total[None]:>7.2f} {total[k]:>7.2f} {time_ratio:>5.2f}x | "
            f"{cpu[None]:>7.2f} {cpu[k]:>7.2f} {cpu_ratio:>5.2f}x | "
            f"{fwd[None]:>5.2f} {bwd[None]:>5.2f} {fwd[k]:>6.2f} {bwd[k]:>6.2f}"
        )
        last = (T, mem_ratio, time_ratio, cpu_ratio)
    if last is not None:
        T, mem_ratio, time_ratio, cpu_ratio = last
        print(
            f"\nat T={T}: extra memory {mem_ratio:.1%} of the full cache's (target <= 10%), "
            f"time {time_ratio:.2f}x wall-clock, {cpu_ratio:.2f}x CPU (target <= 1.5x); {machine()}"
        )


if __name__ == "__main__":
    main()
