"""pytest configuration of the benchmark suite: options, the `quick` subset, threads, the peaks.

The normal test run (`pytest`, testpaths = ["tests"]) never collects bench/;
run it explicitly: `pytest bench/test_bench_lstm.py [--bench-quick]`, or
`python bench/run.py`, which also writes the report (see bench/README.md).
"""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

# The suite's helpers live next to this file; --import-mode=importlib does not put it on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lstm_bench  # noqa: E402

from lstm_c._cli.peers import DTYPES, limit_threads  # noqa: E402

QUICK_BUDGET = 0.2
SETTINGS = pytest.StashKey[dict]()  # the options below, resolved
PEAKS = pytest.StashKey[
    dict
]()  # {"fma": {threads: {dtype: GFLOP/s}} or None, "gemm": {...}, "fma_note": ...}
LOAD = pytest.StashKey[list]()  # load average when the session's benchmarks start


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lstm_c-bench", "lstm_c benchmark suite")
    group.addoption(
        "--bench-threads",
        default=None,
        help="comma-separated thread counts of the grid, each used by every implementation (lstm_c "
        "num_threads=, torch.set_num_threads, ONNX Runtime intra_op_num_threads, BLAS/OpenMP pools); "
        "the cases outside the grid use the largest; default 1 and $LSTM_C_BENCH_THREADS, else "
        "lstm_c.get_num_threads(): the CPUs this process may use",
    )
    group.addoption(
        "--bench-quick",
        action="store_true",
        help=f"only the quick subset (the `quick` marker), with a {QUICK_BUDGET} s budget",
    )
    group.addoption(
        "--bench-budget",
        type=float,
        default=None,
        help="seconds of timed rounds per case and implementation (default 0.4, quick 0.2)",
    )
    group.addoption("--bench-min-rounds", type=int, default=3)
    group.addoption("--bench-max-rounds", type=int, default=60)
    group.addoption(
        "--bench-passes",
        type=int,
        default=3,
        help="interleave the implementations of a case in this many passes, each with "
        "its share of the rounds (default 3; 1 runs each implementation in one block)",
    )
    group.addoption(
        "--bench-pause",
        type=float,
        default=0.2,
        help="seconds of sleep before each implementation's rounds, so that the previous "
        "one's idle threads stop spinning (default 0.2; never before the coexistence "
        "column, which measures exactly that)",
    )
    group.addoption(
        "--bench-reference-limit",
        type=float,
        default=1.0,
        help="skip the NumPy reference's timing where one call takes longer (seconds, default 1)",
    )
    group.addoption(
        "--bench-impls",
        default="",
        help="comma-separated implementations to keep, of: " + ",".join(lstm_bench.IMPLS),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: the quick subset of the benchmark suite (~1-2 min)")
    quick = config.getoption("--bench-quick")
    try:
        threads = lstm_bench.thread_counts(config.getoption("--bench-threads"))
    except ValueError as exc:
        raise pytest.UsageError(f"--bench-threads: {exc}") from exc
    config.stash[SETTINGS] = {
        "threads": threads,
        "quick": quick,
        "budget": config.getoption("--bench-budget") or (QUICK_BUDGET if quick else 0.4),
        "min_rounds": max(1, config.getoption("--bench-min-rounds")),
        "max_rounds": config.getoption("--bench-max-rounds"),
        "passes": max(1, config.getoption("--bench-passes")),
        "pause": max(0.0, config.getoption("--bench-pause")),
        "reference_limit": config.getoption("--bench-reference-limit"),
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    impls = {s.strip() for s in config.getoption("--bench-impls").split(",") if s.strip()}
    unknown = impls - set(lstm_bench.IMPLS)
    if unknown:
        raise pytest.UsageError(f"--bench-impls: unknown {sorted(unknown)}; known {list(lstm_bench.IMPLS)}")
    quick = config.getoption("--bench-quick")
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        impl = callspec.params.get("impl") if callspec else None
        if (quick and item.get_closest_marker("quick") is None) or (impls and impl not in impls):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class _Pins:
    """Every thread pool of the process on one thread count, switched case by case."""

    def __init__(self) -> None:
        self.threads: int | None = None
        self._stack = contextlib.ExitStack()

    def __call__(self, threads: int) -> None:
        if threads != self.threads:
            self._stack.close()
            self._stack.enter_context(limit_threads(threads))
            self.threads = threads

    def close(self) -> None:
        self._stack.close()
        self.threads = None


@pytest.fixture(scope="session")
def bench_settings(request: pytest.FixtureRequest):
    """Pins the thread pools case by case; measures the FMA and GEMM peaks at the start and the end.

    The FMA peak (bench/fma_peak.c, register-only FMA loops compiled with gcc at run time) is
    the machine's arithmetic limit, per dtype and thread count; without gcc (or AVX2/FMA) the
    suite falls back to the GEMM peak and the report says so. A short FMA loop (or GEMM, in
    the fallback) also runs before each case: a rate well below the peak marks a busy machine.
    Peaks are the best of all measurements: load only ever lowers them.
    """
    config = request.config
    settings = config.stash[SETTINGS]
    threads = settings["threads"]
    pins = _Pins()
    fma = lstm_bench.FmaPeak.build()
    peaks: dict = {
        "fma": None if fma is None else {n: {} for n in threads},
        "gemm": {n: {} for n in threads},
        "fma_note": lstm_bench.FmaPeak.unavailable,
    }
    config.stash[PEAKS] = peaks

    def measure_all() -> None:
        for n in threads:
            pins(n)
            for dt in DTYPES:
                rates = [("gemm", lstm_bench.gemm_peak(dt, n, repeats=3))]
                if fma is not None:
                    rates.append(("fma", fma.measure(dt, n)))
                for kind, rate in rates:
                    peaks[kind][n][dt] = max(peaks[kind][n].get(dt, 0.0), rate)

    def sample_peak(dtype: str, n: int) -> float:
        """A short run of the FMA loop (else one GEMM) on n threads, before a case."""
        if fma is not None:
            return fma.measure(dtype, n, million_iterations=10, repeats=2)
        return lstm_bench.gemm_peak(dtype, n, repeats=1)

    try:
        measure_all()
        config.stash[LOAD] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        yield {
            **settings,
            "pin": pins,
            "sample_peak": sample_peak,
            "peak_kind": "gemm" if fma is None else "fma",
        }
        measure_all()
    finally:
        pins.close()
        if fma is not None:
            fma.close()


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    settings = config.stash.get(SETTINGS, {})
    threads = settings.get("threads") or lstm_bench.thread_counts(None)
    info = lstm_bench.machine_info(list(threads))
    peaks = config.stash.get(PEAKS, None) or {}
    info["gemm_peak_gflops"] = peaks.get("gemm")
    info["fma_peak_gflops"] = peaks.get("fma")
    info["fma_peak_note"] = peaks.get("fma_note")
    info["load_average_start"] = config.stash.get(LOAD, None)
    info["quick"] = settings.get("quick", False)
    info["pause"] = settings.get("pause")
    machine_info["lstm_c_bench"] = info
