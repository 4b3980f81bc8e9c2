"""Memory: no leak over thousands of calls, and the kernels under AddressSanitizer.

The leak tests warm up, then compare the process's resident memory (and the
allocations tracemalloc sees, NumPy's buffers included) before and after
thousands of forward and backward calls; they need Linux's /proc/self/statm.

The sanitizer test runs tests/sanitize/run_asan.sh, which builds the extension
with AddressSanitizer and Cython bounds checks into a temporary directory and
runs the kernel tests against that build; it takes minutes, so it runs only
with LSTM_C_RUN_SANITIZER=1 (marker ``sanitizer``).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from helpers import make_problem

import lstm_c
from lstm_c import LSTM

STATM = "/proc/self/statm"
UNDER_SANITIZER = os.environ.get("LSTM_C_UNDER_SANITIZER", "0") not in ("", "0")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sanitize", "run_asan.sh")

needs_statm = pytest.mark.skipif(not os.path.exists(STATM), reason="needs Linux's /proc/self/statm")
not_under_asan = pytest.mark.skipif(
    UNDER_SANITIZER, reason="AddressSanitizer keeps freed memory in quarantine: RSS grows by design"
)


def resident_bytes() -> int:
    with open(STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth(work, calls: int, traced_calls: int = 500, warm_up: int = 300) -> tuple[int, int]:
    """(RSS growth over `calls` calls of `work`, growth of the allocations tracemalloc sees
    over `traced_calls` more), after warming up. tracemalloc sees every Python object and
    NumPy buffer, so a leak of a few dozen bytes per call shows; it also makes calls slower,
    hence fewer of them."""
    for _ in range(warm_up):
        work()
    gc.collect()
    rss_before = resident_bytes()
    for _ in range(calls):
        work()
    gc.collect()
    rss = resident_bytes() - rss_before
    tracemalloc.start()
    try:
        for _ in range(50):  # tracemalloc's own tables settle
            work()
        gc.collect()
        traced_before = tracemalloc.get_traced_memory()[0]
        for _ in range(traced_calls):
            work()
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
    finally:
        tracemalloc.stop()
    return rss, traced


def functional_work(dtype, **kind):
    """A forward and backward of T=10, B=8, H=32: a call that leaked any of its arrays
    would leak at least 10 KB (the gates alone are T·B·4H numbers)."""
    rng = np.random.default_rng(0)
    T, B, I, H = 10, 8, 16, 32
    P = kind.get("P", 0)
    p = make_problem(rng, T, B, I, H, dtype, P=P, peephole=kind.get("peephole", False), state=False)
    out = P or H
    lengths = rng.integers(0, T + 1, B)
    dy = np.ones((T, B, out), dtype)

    def work():
        y, h, c, cache = lstm_c.lstm_forward(**p, lengths=lengths, reverse=kind.get("reverse", False))
        lstm_c.lstm_backward(cache, dy, h, c)
        lstm_c.lstm_forward(**p, lengths=lengths, training=False)

    return work


LIMIT_RSS = 4 * 2**20  # bytes over thousands of calls: allocator noise, not a leak
LIMIT_TRACED = 16 * 2**10  # bytes over 500 calls: 32 bytes a call (measured: under 100 bytes in all)


@needs_statm
@not_under_asan
@pytest.mark.parametrize(
    "kind, dtype",
    [(dict(), np.float32), (dict(P=8, peephole=True, reverse=True), np.float64)],
    ids=["plain_float32", "projection_peephole_float64"],
)
def test_thousands_of_forward_and_backward_calls_do_not_grow_memory(kind, dtype):
    rss, traced = growth(functional_work(dtype, **kind), calls=3000)
    assert rss < LIMIT_RSS, f"RSS grew by {rss / 2**20:.1f} MiB over 3000 calls"
    assert traced < LIMIT_TRACED, f"tracemalloc: {traced} bytes more after 500 calls"


@needs_statm
@not_under_asan
def test_thousands_of_layer_calls_do_not_grow_memory():
    m = LSTM(16, 32, num_layers=2, bidirectional=True, proj_size=8, dropout=0.2, dtype=np.float32, seed=0)
    streaming = LSTM(16, 32, num_layers=2, dtype=np.float32, seed=1)
    x = np.random.default_rng(0).standard_normal((10, 8, 16)).astype(np.float32)

    def work():
        y, (h, c) = m(x)
        m.backward(np.ones_like(y), (h, c))
        y_t, state = streaming.step(x[0])
        streaming.step(x[1], state)

    rss, traced = growth(work, calls=1500, traced_calls=300)
    assert rss < LIMIT_RSS, f"RSS grew by {rss / 2**20:.1f} MiB over 1500 calls"
    assert traced < LIMIT_TRACED, f"tracemalloc: {traced} bytes more after 300 calls"


@needs_statm
@not_under_asan
def test_thousands_of_refused_calls_do_not_grow_memory():
    rng = np.random.default_rng(0)
    x, w_ih, w_hh = (
        rng.standard_normal((10, 8, 16)),
        rng.standard_normal((128, 16)),
        rng.standard_normal((128, 32)),
    )
    _, _, _, cache = lstm_c.lstm_forward(x, w_ih, w_hh)
    bad_dy = np.zeros((10, 8, 31))

    def work():
        for call in (
            lambda: lstm_c.lstm_forward(x, w_ih, w_hh, lengths=[11] * 8),
            lambda: lstm_c.lstm_backward(cache, bad_dy),
            lambda: lstm_c.lstm_forward(x.astype(np.float32), w_ih, w_hh),
        ):
            try:
                call()
            except (ValueError, TypeError):
                pass

    rss, traced = growth(work, calls=3000)
    assert rss < LIMIT_RSS, f"RSS grew by {rss / 2**20:.1f} MiB over 3000 refused calls"
    assert traced < LIMIT_TRACED, f"tracemalloc: {traced} bytes more after 500 refused calls"


@pytest.mark.sanitizer
def test_the_kernel_tests_pass_under_address_sanitizer(tmp_path):
    """tests/sanitize/run_asan.sh: the extension built with -fsanitize=address and Cython
    bounds checks (LSTM_C_DEBUG=1), the kernel tests run against it; any invalid read or
    write aborts the run with the sanitizer's report."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the AddressSanitizer recipe is for Linux with gcc")
    if not os.path.exists(SCRIPT):
        pytest.skip(f"{SCRIPT} is not here (tests copied without tests/sanitize/)")
    if shutil.which("gcc") is None or shutil.which("bash") is None:
        pytest.skip("needs bash and gcc")
    result = subprocess.run(
        ["bash", SCRIPT],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)},
    )
    tail = (result.stdout[-6000:] + "\n" + result.stderr[-6000:]).strip()
    assert result.returncode == 0, f"run_asan.sh failed with exit code {result.returncode}:\n{tail}"
    assert " passed" in result.stdout and "AddressSanitizer" not in result.stderr, tail
