"""What the kernels' checks for Ctrl-C cost, and how soon Ctrl-C stops a call.

A plain script (not a pytest-benchmark suite): ``python bench/interrupt_check.py``.

1. Cost. A representative set of forward (inference) and training (forward +
   backward) calls, each timed with the checks on and off
   (``lstm_c._lstm.set_interrupt_checks``), interleaved call by call with
   short pauses between, so that a change in the machine's load hits both
   alike. Reports the median time of each, the median of the paired ratios
   on/off - 1 (the relative cost; under 1% is the goal), and the same from
   the medians and from the minima of each setting's times.

2. Latency. SIGINT from a helper thread at several points of long forward,
   backward and one-step calls (in the input projection, in the time loop,
   in the weight-gradient GEMMs after it), on 1 and 2 threads: the time from
   os.kill to the KeyboardInterrupt caught around the call (the goal: under
   0.2 s).

Options: --reps N (cost: timed calls per case and setting, default 41),
--threads N (cost: threads asked per call, default lstm_c's default),
--skip-cost, --skip-latency.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time

import numpy as np

import lstm_c
from lstm_c import _lstm, functional

COST_CASES = [
    # (T, B, I, H)
    (200, 16, 256, 256),
    (2000, 1, 64, 64),
    (50, 64, 512, 512),
]


def weights(rng, I, H, dtype=np.float32):
    return (
        (rng.standard_normal((4 * H, I)) / np.sqrt(I)).astype(dtype),
        (rng.standard_normal((4 * H, H)) / np.sqrt(H)).astype(dtype),
        (0.1 * rng.standard_normal(4 * H)).astype(dtype),
    )


def cost(reps: int, threads: int | None) -> None:
    print(
        f"== cost of the checks: {reps} interleaved calls each, float32, threads asked: "
        f"{threads or lstm_c.get_num_threads()} (fewer where a step is too small to split)"
    )
    print(
        f"{'case':>22} {'call':>9} {'on ms':>9} {'off ms':>9} {'cost %':>8} {'medians %':>10} {'minima %':>9}"
    )
    worst = -np.inf
    for T, B, I, H in COST_CASES:
        rng = np.random.default_rng(0)
        w_ih, w_hh, b = weights(rng, I, H)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        dy = rng.standard_normal((T, B, H)).astype(np.float32)

        def inference():
            lstm_c.lstm_forward(x, w_ih, w_hh, b, b, training=False, num_threads=threads)

        def training():
            y, h, c, cache = lstm_c.lstm_forward(x, w_ih, w_hh, b, b, num_threads=threads)
            lstm_c.lstm_backward(cache, dy, num_threads=threads)

        for name, fn in (("forward", inference), ("training", training)):
            for _ in range(3):
                fn()  # warm up
            times: dict[bool, list[float]] = {True: [], False: []}
            ratios = []
            for r in range(reps):
                pair = {}
                for setting in (True, False) if r % 2 == 0 else (False, True):
                    _lstm.set_interrupt_checks(setting)
                    time.sleep(0.005)  # a pause: let other threads and BLAS settle
                    started = time.perf_counter()
                    fn()
                    pair[setting] = time.perf_counter() - started
                    times[setting].append(pair[setting])
                ratios.append(pair[True] / pair[False])
            _lstm.set_interrupt_checks(True)
            on, off = statistics.median(times[True]), statistics.median(times[False])
            paired = 100 * (statistics.median(ratios) - 1)
            worst = max(worst, paired)
            fastest = 100 * (min(times[True]) / min(times[False]) - 1)
            print(
                f"{f'T={T} B={B} I={I} H={H}':>22} {name:>9} {1e3 * on:9.3f} {1e3 * off:9.3f} "
                f"{paired:8.2f} {100 * (on / off - 1):10.2f} {fastest:9.2f}"
            )
    print(f"largest relative cost (median of paired ratios): {worst:.2f}%")
    print(
        "cost %: median of the paired ratios on/off - 1; medians %, minima %: the same from the\n"
        "medians and the minima of each setting's times (the minima are the least disturbed by\n"
        "other processes)"
    )


def interrupt_at(run, delay: float) -> tuple[str, float]:
    """Run `run()`, send SIGINT `delay` s after it starts: (outcome, seconds from signal to exception)."""
    sent: list[float] = []

    def send():
        time.sleep(delay)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        run()
    except KeyboardInterrupt:
        return "interrupted", time.perf_counter() - sent[0]
    finally:
        # The call ended first (on a busy machine calls vary): take the signal here.
        try:
            sender.join()
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    return "finished", float("nan")


def latency() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("\n== latency: SIGINT during a call -> KeyboardInterrupt (float32)")
    rng = np.random.default_rng(1)
    cases = []

    T, B, I, H = 1000, 64, 512, 512
    w_ih, w_hh, b = weights(rng, I, H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    for threads in (1, 2):
        cases.append(
            (
                f"forward T={T} B={B} I={I} H={H}",
                threads,
                lambda t=threads: lstm_c.lstm_forward(x, w_ih, w_hh, b, b, training=False, num_threads=t),
            )
        )
    Tb = 300
    xb = x[:Tb]
    cache = {}
    for threads in (1, 2):
        cache[threads] = lstm_c.lstm_forward(xb, w_ih, w_hh, b, b, num_threads=threads)[3]
        cases.append(
            (
                f"backward T={Tb} B={B} I={I} H={H}",
                threads,
                lambda t=threads: lstm_c.lstm_backward(cache[t], num_threads=t),
            )
        )
    # A batch so large that one time step's GEMMs run in pieces.
    Tl, Bl, Il, Hl = 3, 4096, 1024, 1024
    wl_ih, wl_hh, bl = weights(rng, Il, Hl)
    xl = rng.standard_normal((Tl, Bl, Il)).astype(np.float32)
    for threads in (1, 2):
        cases.append(
            (
                f"forward T={Tl} B={Bl} I={Il} H={Hl}",
                threads,
                lambda t=threads: lstm_c.lstm_forward(
                    xl, wl_ih, wl_hh, bl, bl, training=False, num_threads=t
                ),
            )
        )
    # The one-step kernel (streaming inference) on a large batch, on the calling thread.
    Bs = 8192
    xs = rng.standard_normal((Bs, Il)).astype(np.float32)
    h0 = np.zeros((Bs, Hl), np.float32)
    c0 = np.zeros((Bs, Hl), np.float32)
    h = np.empty_like(h0)
    c = np.empty_like(c0)

    def one_step():
        # One thread: the step kernel itself (more threads run the sequence kernel).
        functional._step_unchecked(xs, wl_ih, wl_hh, 2 * bl, None, None, h0, c0, h, c, 1)

    cases.append((f"step B={Bs} I={Il} H={Hl}", 1, one_step))

    print(f"{'call':>34} {'thr':>3} {'call s':>7}  latency ms at 5% / 50% / 85% of the call")
    worst = 0.0
    for name, threads, run in cases:
        durations = []
        for _ in range(2):
            started = time.perf_counter()
            run()
            durations.append(time.perf_counter() - started)
        duration = min(durations)
        cells = []
        for fraction in (0.05, 0.5, 0.85):
            outcome, lat = interrupt_at(run, fraction * duration)
            if outcome == "finished":
                cells.append("finished")
            else:
                worst = max(worst, lat)
                cells.append(f"{1e3 * lat:.1f}")
        print(f"{name:>34} {threads:>3} {duration:7.2f}  {' / '.join(cells)}")
    print(f"largest latency: {1e3 * worst:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=41)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    print(f"lstm_c from {os.path.dirname(lstm_c.__file__)}; OpenMP: {lstm_c.openmp_enabled()}")
    if not args.skip_cost:
        cost(args.reps, args.threads)
    if not args.skip_latency:
        latency()


if __name__ == "__main__":
    main()
