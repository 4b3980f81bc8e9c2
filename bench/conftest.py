"""pytest configuration of the benchmark suite: options, the `quick` subset, threads, the GEMM peak.

The normal test run (`pytest`, testpaths = ["tests"]) never collects bench/;
run it explicitly: `pytest bench/test_bench_lstm.py [--bench-quick]`, or
`python bench/run.py`, which also writes the report (see bench/README.md).
"""

from __future__ import annotations

import os
import sys

import pytest

# The suite's helpers live next to this file; --import-mode=importlib does not put it on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lstm_bench  # noqa: E402

from lstm_c._cli.peers import DTYPES, limit_threads  # noqa: E402

QUICK_BUDGET, QUICK_MIN_ROUNDS = 1.0, 3
SETTINGS = pytest.StashKey[dict]()  # the options below, resolved
PEAKS = pytest.StashKey[dict]()  # GFLOP/s of sgemm/dgemm, by dtype
LOAD = pytest.StashKey[list]()  # load average when the session's benchmarks start


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lstm_c-bench", "lstm_c benchmark suite")
    group.addoption(
        "--bench-threads", type=int, default=None,
        help="threads for every implementation (lstm_c num_threads=, torch.set_num_threads, "
             "ONNX Runtime intra_op_num_threads, BLAS/OpenMP pools); default $LSTM_C_BENCH_THREADS, "
             "else lstm_c.get_num_threads(): the CPUs this process may use",
    )
    group.addoption("--bench-quick", action="store_true",
                    help="only the quick subset (the `quick` marker), with a "
                         f"{QUICK_BUDGET} s budget and {QUICK_MIN_ROUNDS} rounds minimum")
    group.addoption("--bench-budget", type=float, default=None,
                    help="seconds of timed rounds per case and implementation (default 2, quick 1)")
    group.addoption("--bench-min-rounds", type=int, default=None, help="default 5 (quick 3)")
    group.addoption("--bench-max-rounds", type=int, default=100)
    group.addoption("--bench-passes", type=int, default=3,
                    help="interleave the implementations of a case in this many passes, each with "
                         "its share of the rounds (default 3; 1 runs each implementation in one block)")
    group.addoption("--bench-impls", default="",
                    help="comma-separated implementations to keep, of: " + ",".join(lstm_bench.IMPLS))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: the quick subset of the benchmark suite (~1-2 min)")
    quick = config.getoption("--bench-quick")
    config.stash[SETTINGS] = {
        "threads": config.getoption("--bench-threads") or lstm_bench.default_threads(),
        "quick": quick,
        "budget": config.getoption("--bench-budget") or (QUICK_BUDGET if quick else 2.0),
        "min_rounds": config.getoption("--bench-min-rounds") or (QUICK_MIN_ROUNDS if quick else 5),
        "max_rounds": config.getoption("--bench-max-rounds"),
        "passes": max(1, config.getoption("--bench-passes")),
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


@pytest.fixture(scope="session")
def bench_settings(request: pytest.FixtureRequest):
    """Pins every thread pool for the session and measures the GEMM peak at its start and end."""
    config = request.config
    settings = config.stash[SETTINGS]
    threads = settings["threads"]
    with limit_threads(threads):
        peaks = {dt: lstm_bench.gemm_peak(dt, threads) for dt in DTYPES}
        config.stash[PEAKS] = peaks
        config.stash[LOAD] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

        def sample_peak(dtype: str) -> float:
            """One more GEMM timing (the suite takes one before each case): the peak is the best seen."""
            rate = lstm_bench.gemm_peak(dtype, threads, repeats=1)
            peaks[dtype] = max(peaks[dtype], rate)
            return rate

        yield {**settings, "sample_peak": sample_peak}
        # The best of all measurements: a busy machine only ever lowers it.
        for dt in DTYPES:
            peaks[dt] = max(peaks[dt], lstm_bench.gemm_peak(dt, threads))


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    settings = config.stash.get(SETTINGS, {})
    info = lstm_bench.machine_info(settings.get("threads") or lstm_bench.default_threads())
    info["gemm_peak_gflops"] = config.stash.get(PEAKS, None)
    info["load_average_start"] = config.stash.get(LOAD, None)
    info["quick"] = settings.get("quick", False)
    machine_info["lstm_c_bench"] = info
