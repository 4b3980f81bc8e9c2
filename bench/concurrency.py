"""Wall-clock measurements of lstm_c from several Python threads: prints, never asserts.

    python bench/concurrency.py [--repeat N] [--seq-len T]

1. Two Python threads, each running a kernel-bound forward and backward on one thread of
   its own (num_threads=1, BLAS single-threaded), against the same two calls one after
   the other: with the GIL released inside the kernels and two free cores, side by side
   takes about half the time.
2. While one thread runs those calls, the longest stall of another Python thread that
   keeps looping: with the GIL released it is about the switch interval (5 ms), held it
   would be the whole call.

The test suite checks the behaviour behind these numbers without timing anything
(tests/test_threads.py: both threads are inside kernel calls at once, and another thread
counts while a kernel call runs); timings depend on the machine and its load, so they
live here.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import lstm_c


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def kernel_bound_work(seq_len: int):
    """A forward and backward (T=seq_len, B=64, I=64, H=256, float32) on one thread."""
    rng = np.random.default_rng(6)
    T, B, I, H = seq_len, 64, 64, 256
    w_ih = (rng.standard_normal((4 * H, I)) / np.sqrt(I)).astype(np.float32)
    w_hh = (rng.standard_normal((4 * H, H)) / np.sqrt(H)).astype(np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    def work():
        y, h, c, cache = lstm_c.lstm_forward(x, w_ih, w_hh, num_threads=1)
        lstm_c.lstm_backward(cache, dy, num_threads=1)

    return work


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def side_by_side(work, repeat: int) -> tuple[float, float]:
    """(best wall time of two calls one after the other, of the same two calls on two threads)."""

    def serial():
        work()
        work()

    def parallel():
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(work), pool.submit(work)]:
                future.result()

    return best_of(repeat, serial), best_of(repeat, parallel)


def longest_stall(work) -> tuple[float, float, int]:
    """(one call's time, the longest gap between two iterations of a loop in this thread while
    another thread runs two calls, the number of iterations)."""
    one_call = best_of(1, work)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (work(), work(), done.set()))
    gaps, last = [], time.perf_counter()
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    worker.join()
    return one_call, max(gaps), len(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    parser.add_argument("--seq-len", type=int, default=50, help="T of each call (default 50)")
    options = parser.parse_args()
    work = kernel_bound_work(options.seq_len)
    work()  # warm up: BLAS binding, thread pools, page faults

    load = f", 1-minute load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"lstm_c {lstm_c.__version__}: {usable_cpus()} usable CPUs{load}, OpenMP {lstm_c.openmp_enabled()}")
    serial, parallel = side_by_side(work, options.repeat)
    print(f"two calls one after the other: {serial:.3f} s")
    print(
        f"two calls on two Python threads: {parallel:.3f} s ({parallel / serial:.2f} of serial; "
        f"0.5 is a perfect split over two free cores)"
    )
    one_call, stall, loops = longest_stall(work)
    print(
        f"another thread's longest stall during two {one_call:.3f} s calls: {stall * 1e3:.1f} ms "
        f"({loops} iterations; the switch interval is {1e3 * sys.getswitchinterval():.0f} ms)"
    )


if __name__ == "__main__":
    main()
