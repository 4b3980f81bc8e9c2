"""``python -m lstm_c bench``: a quick benchmark of this install on this machine.

Four shapes, each timed for lstm_c, the NumPy reference and, when installed,
PyTorch's ``nn.LSTM`` and ONNX Runtime's ``LSTM`` operator, one after the
other in one run with the same weights and thread count, after a check that
each computes what the reference computes. A row is printed as soon as its
shape is done. The full suite, with DeepBench's shapes, the GEMM peak and a
chart, is ``bench/`` in the source tree; both build their peers with
`lstm_c._cli.peers`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

import numpy as np

from lstm_c._cli import peers
from lstm_c._cli.info import cpu_model, usable_cpus
from lstm_c._cli.peers import LABELS, Case

CASES = (
    Case("train_H256_B32_T25", "training", 25, 32, 256, 256),
    Case("train_H512_B16_T25", "training", 25, 16, 512, 512),
    Case("infer_H512_B4_T25", "inference", 25, 4, 512, 512),
    Case("infer_H128_B1_T100", "inference", 100, 1, 128, 128),
)
IMPLS = ("lstm_c", "reference", "torch", "onnxruntime")


class Timing(NamedTuple):
    """What `time_calls` measured."""

    median: float  # seconds per call
    calls: int  # timed calls
    first: Any  # what the untimed first call returned


def time_calls(call: Callable[[], Any], budget: float) -> Timing:
    """Time `call` for about `budget` seconds.

    One untimed call (the warm-up), then timed calls until `budget` seconds
    have passed since the warm-up began, at least one. A first call that
    alone takes `budget` or longer is the only measurement.
    """
    start = time.perf_counter()
    first = call()
    first_seconds = time.perf_counter() - start
    if first_seconds >= budget:
        return Timing(first_seconds, 1, first)
    times: list[float] = []
    while not times or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return Timing(float(np.median(times)), len(times), first)


class _Table:
    """A table printed a row at a time: the column widths are fixed by the header."""

    def __init__(self, out: TextIO, header: list[str], first_width: int) -> None:
        self.out = out
        self.widths = [max(first_width, len(header[0]))] + [max(9, len(h)) for h in header[1:]]
        self.row(header)
        _line(out, "  ".join("-" * w for w in self.widths))

    def row(self, cells: list[str]) -> None:
        _line(
            self.out,
            "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cells, self.widths))),
        )


class _Progress:
    """A progress bar on `stream` when it is a terminal, else nothing."""

    WIDTH = 30

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream if stream.isatty() else None
        self.total = total
        self.shown = 0  # characters on the bar's line

    def show(self, done: int, what: str) -> None:
        if self.stream is None:
            return
        filled = self.WIDTH * done // self.total
        text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} {what}"
        self.stream.write("\r" + text.ljust(self.shown))
        self.stream.flush()
        self.shown = len(text)

    def clear(self) -> None:
        """Blank the bar's line, before a table row is printed."""
        if self.stream is not None and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0


def _line(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def run(
    out: TextIO = sys.stdout,
    progress: TextIO = sys.stderr,
    *,
    threads: int,
    dtype: str = "float32",
    budget: float = 1.0,
    cases: tuple[Case, ...] = CASES,
    impls: tuple[str, ...] = IMPLS,
) -> int:
    """Time every case for every installed implementation and print a table, a row per case.

    Parameters
    ----------
    out : text stream
        Where the table goes, a line as soon as it is known.
    progress : text stream
        Where the progress bar goes (only when it is a terminal).
    threads : int
        Threads for every implementation.
    dtype : "float32" or "float64"
    budget : float
        Seconds per case and implementation: one untimed warm-up call, then
        timed calls until that much time has passed (at least one).
    cases : tuple of Case
    impls : tuple of str
        Keys of `peers.BUILDERS`, "lstm_c" first.

    Returns
    -------
    int
        The number of timed calls, all cases and implementations together.
    """
    absent = peers.not_installed(impls)
    impls = tuple(i for i in impls if i not in absent)
    # The reference runs first: what it returns is what the others must return too.
    order = sorted(impls, key=lambda impl: impl != "reference")
    plural = "" if threads == 1 else "s"
    _line(
        out,
        f"lstm_c quick benchmark: {dtype}, {threads} thread{plural}, median time per call "
        f"({cpu_model()}, {usable_cpus() or '?'} CPUs usable by this process)",
    )
    if hasattr(os, "getloadavg"):
        _line(
            out,
            f"load average {os.getloadavg()[0]:.2f} (other work on the machine slows every "
            f"column, multi-threaded ones most)",
        )
    for impl, hint in absent.items():
        _line(out, f"{LABELS[impl]}: not installed ({hint})")

    peer_columns = [i for i in impls if i != "lstm_c"]
    labels = [f"{case.kind} {case.shape}" for case in cases]
    table = _Table(
        out,
        ["shape"]
        + [LABELS[i] for i in impls]
        + ["lstm_c GFLOP/s"]
        + [f"x {LABELS[i]}" for i in peer_columns],
        max(map(len, labels)),
    )
    bar = _Progress(progress, len(cases) * len(impls))
    not_run: dict[str, None] = {}  # why cells show "-" (an ordered set)
    calls = 0
    with peers.limit_threads(threads):
        for k, (case, label) in enumerate(zip(cases, labels)):
            data = peers.make_data(case, dtype)
            expected: tuple[str, dict[str, np.ndarray]] | None = None
            medians: dict[str, float] = {}
            for j, impl in enumerate(order):
                bar.show(k * len(impls) + j, f"{label}: {LABELS[impl]}")
                try:
                    runner = peers.BUILDERS[impl](case, data, threads)
                except peers.Unavailable as exc:
                    not_run[str(exc)] = None
                    continue
                timing = time_calls(runner.run, budget)
                outputs = runner.normalize(timing.first)
                if expected is None:
                    expected = (impl, outputs)
                else:
                    problem = peers.mismatch(outputs, expected[1], dtype)
                    if problem is not None:
                        raise RuntimeError(
                            f"{LABELS[impl]} disagrees with {LABELS[expected[0]]} "
                            f"on {label}, {dtype}: {problem}"
                        )
                medians[impl] = timing.median
                calls += timing.calls
            bar.clear()
            ours = medians["lstm_c"]
            table.row(
                [label]
                + [_time(medians.get(i)) for i in impls]
                + [f"{peers.flops(case) / ours / 1e9:.1f}"]
                + [f"{medians[i] / ours:.2f}x" if i in medians else "-" for i in peer_columns]
            )
    for reason in not_run:
        _line(out, f"- = not run: {reason}")
    _line(out, "x peer = the peer's time over lstm_c's: above 1x, lstm_c is faster.")
    _line(
        out,
        f"Each time is the median of the calls that fit in {budget:g} s (--budget) per shape and "
        f"implementation after an untimed warm-up call; a first call that alone takes that long "
        f"is the only one: {calls} timed calls in all.",
    )
    return calls


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"
