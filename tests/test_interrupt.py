"""Ctrl-C (or any signal whose handler raises) interrupts a long kernel call.

Each case runs in a fresh interpreter: the main thread starts a kernel call
that would take many seconds, a helper thread sends the signal once the call
has started, and the child reports what happened as JSON. No wall-clock time
is asserted (a busy machine must not fail a test): that the exception was
raised *inside* the kernel call, and not when it returned, shows in its
traceback, which then holds the compiled module's frame (src/_lstm.pyx); a
signal handled only after the call returns raises from Python code instead.
The child also reports that the BLAS thread count was restored, that no call
is left counted as under way, and that a small call afterwards gives exactly
the results it gave before the interrupt.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_in_child

import lstm_c
from lstm_c import _lstm

pytestmark = pytest.mark.slow

CHILD = r"""
import json, os, signal, sys, threading, time, traceback

import numpy as np

import lstm_c
from lstm_c import _lstm, _threads, functional

kind, threads, which = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class HandlerError(Exception):
    pass


def raising_handler(signum, frame):
    raise HandlerError("raised by the SIGUSR1 handler")


calls = []

if which == "sigint":
    # Python's own handler, even if this process started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signum, expected = signal.SIGINT, KeyboardInterrupt
elif which == "usr1":
    signal.signal(signal.SIGUSR1, raising_handler)
    signum, expected = signal.SIGUSR1, HandlerError
else:  # "returns": a handler that raises nothing lets the call run to its end
    signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    signum, expected = signal.SIGUSR1, None


def small_call():
    # The same small training call each time, from fixed data.
    rng = np.random.default_rng(1)
    T, B, I, H = 7, 5, 6, 48
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih = (0.3 * rng.standard_normal((4 * H, I))).astype(np.float32)
    w_hh = (0.3 * rng.standard_normal((4 * H, H))).astype(np.float32)
    b = (0.1 * rng.standard_normal(4 * H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    y, h, c, cache = lstm_c.lstm_forward(x, w_ih, w_hh, b, b, num_threads=threads)
    grads = lstm_c.lstm_backward(cache, dy, num_threads=threads)
    return [a.tolist() for a in (y, h, c, *grads) if a is not None]


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas")


if kind == "forward_by_rows":
    # Before the first call: the blocks of rows decide the bits of a call shared by rows.
    _lstm._set_row_block(2)
fresh = small_call()
blas_before = blas_threads()

started = threading.Event()
target = {"forward": "forward", "forward_by_rows": "forward", "layer": "forward", "backward": "backward"}[kind]


class Kernels:
    # functional.py calls the kernels through its module global `_lstm`: this
    # stand-in tells the helper thread when the long call has entered the kernel.
    def __getattr__(self, name):
        real = getattr(_lstm, name)
        if name != target:
            return real

        def call(*args, **kwargs):
            if arm[0]:
                started.set()
            return real(*args, **kwargs)

        return call


arm = [False]
functional._lstm = Kernels()

# A long sequence through a big W_hh (64 MB in float32, read at every step):
# thousands of steps of milliseconds each, seconds to minutes of work.
rng = np.random.default_rng(0)
T, B, I, H = 4000, 1, 8, 2048
if kind == "forward_by_rows":
    # Eight rows through a W_hh of 4 MiB: two threads share the steps by rows, with
    # no barrier between them (each leaves the loop on its own once the call stops),
    # in blocks of 2 rows that each thread takes in turn (set above).
    T, B, H = 40000, 8, 512
x = rng.standard_normal((T, B, I)).astype(np.float32)
w_ih = (0.05 * rng.standard_normal((4 * H, I))).astype(np.float32)
w_hh = (0.02 * rng.standard_normal((4 * H, H))).astype(np.float32)

if kind == "backward":
    # The forward pass of so long a sequence takes as long as the backward: give
    # the backward a cache of T steps made of zeros instead (its work is the same).
    _, _, _, cache = lstm_c.lstm_forward(x[:2], w_ih, w_hh, num_threads=threads)
    cache.args = cache.args._replace(x=x, steps=T, lengths=np.full(B, T, np.intp))
    cache.act = np.zeros((T * B, 4 * H), np.float32)
    cache.c_prev = np.zeros((T * B, H), np.float32)
    cache.h_prev = np.zeros((T * B, H), np.float32)
    run = lambda: lstm_c.lstm_backward(cache, num_threads=threads)
elif kind == "layer":
    model = lstm_c.LSTM(I, H, seed=0)
    model.num_threads = threads
    run = lambda: model(x)
else:
    run = lambda: lstm_c.lstm_forward(x, w_ih, w_hh, training=False, num_threads=threads)

sent = []


def send():
    started.wait()
    time.sleep(0.3)
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signum)


if expected is None:
    # A shorter call, which the signal may or may not reach before it ends.
    x = x[:200]
threading.Thread(target=send, daemon=True).start()
arm[0] = True
outcome, inside, latency = "finished", False, None
try:
    run()
except BaseException as e:
    caught = time.perf_counter()
    if expected is None or not isinstance(e, expected):
        raise
    outcome = type(e).__name__
    inside = any(f.filename.endswith("_lstm.pyx") for f in traceback.extract_tb(e.__traceback__))
    latency = caught - sent[0]
arm[0] = False
functional._lstm = _lstm
if expected is None:
    started.wait()
    while not calls:  # the handler runs at the latest when Python code runs again
        time.sleep(0.01)

print(json.dumps({
    "outcome": outcome,
    "inside": inside,
    "latency": latency,
    "handler_calls": len(calls),
    "users": _threads.single_threaded_blas._users,
    "blas_restored": blas_threads() == blas_before,
    "same_results": small_call() == fresh,
    "split_batch": functional._split_batch(threads, B, w_hh, False),
}))
"""


def run_child(kind: str, threads: int, which: str, cwd) -> dict:
    # From a temporary directory: the child must import the installed package.
    proc = run_in_child(CHILD, cwd, kind, str(threads), which, timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(kind, threads, which, report)  # the latency, for the curious (-s): never asserted
    return report


def check_clean(report: dict) -> None:
    assert report["users"] == 0, "a call is still counted as under way"
    assert report["blas_restored"], "the BLAS thread count was not restored"
    assert report["same_results"], "a small call after the interrupt gave other results"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["forward", "backward", "layer"])
def test_ctrl_c_interrupts_a_long_kernel_call(kind, threads, tmp_path):
    report = run_child(kind, threads, "sigint", tmp_path)
    assert report["outcome"] == "KeyboardInterrupt"
    assert report["inside"], "KeyboardInterrupt was raised only after the kernel call returned"
    check_clean(report)


def test_ctrl_c_interrupts_a_call_whose_threads_share_the_steps_by_rows(tmp_path):
    report = run_child("forward_by_rows", 2, "sigint", tmp_path)
    assert report["split_batch"] or not lstm_c.openmp_enabled()
    assert report["outcome"] == "KeyboardInterrupt"
    assert report["inside"]
    check_clean(report)


@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_a_custom_handlers_exception_interrupts_the_call(kind, tmp_path):
    report = run_child(kind, 2, "usr1", tmp_path)
    assert report["outcome"] == "HandlerError"
    assert report["inside"]
    check_clean(report)


def test_a_handler_that_raises_nothing_lets_the_call_finish(tmp_path):
    report = run_child("forward", 2, "returns", tmp_path)
    assert report["outcome"] == "finished"
    assert report["handler_calls"] == 1
    check_clean(report)


def test_interrupt_checks_are_on_by_default_and_can_be_switched():
    assert _lstm.interrupt_checks() is True
    try:
        _lstm.set_interrupt_checks(False)
        assert _lstm.interrupt_checks() is False
    finally:
        _lstm.set_interrupt_checks(True)
    assert _lstm.interrupt_checks() is True


# The GEMMs run in pieces (with a check for signals between them) only when
# they are huge; tiny pieces make small problems take those paths too.


@pytest.fixture
def tiny_pieces():
    previous = _lstm._set_piece_sizes(1, 5, 3, 1, 7)
    try:
        yield
    finally:
        _lstm._set_piece_sizes(*previous)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "options",
    [
        dict(B=3),
        dict(B=70, P=12, peephole=True),  # B > 64: the per-step GEMMs are BLAS's, in pieces
        dict(B=70, reverse=True, batch_first=True, lengths=True),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemms_in_pieces_give_the_reference_results(tiny_pieces, options, threads, dtype):
    from lstm_c import reference

    options = dict(options)
    rng = np.random.default_rng(3)
    T, I, H, B = 9, 13, 40, options.pop("B")
    P = options.pop("P", 0)
    out = P or H
    batch_first = options.pop("batch_first", False)
    p = dict(
        x=rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype),
        w_ih=(rng.standard_normal((4 * H, I)) / np.sqrt(I)).astype(dtype),
        w_hh=(rng.standard_normal((4 * H, out)) / np.sqrt(out)).astype(dtype),
        b_ih=(0.3 * rng.standard_normal(4 * H)).astype(dtype),
        b_hh=None,
        h0=(0.5 * rng.standard_normal((B, out))).astype(dtype),
        c0=rng.standard_normal((B, H)).astype(dtype),
        batch_first=batch_first,
        reverse=options.pop("reverse", False),
    )
    if P:
        p["w_hr"] = (rng.standard_normal((P, H)) / np.sqrt(H)).astype(dtype)
    if options.pop("peephole", False):
        p["peephole"] = (0.5 * rng.standard_normal((3, H))).astype(dtype)
    if options.pop("lengths", False):
        p["lengths"] = rng.integers(0, T + 1, B)
    ours = lstm_c.lstm_forward(**p, num_threads=threads)
    theirs = reference.lstm_forward(**p)
    dy = rng.standard_normal(ours[0].shape).astype(dtype)
    grads = lstm_c.lstm_backward(ours[3], dy, num_threads=threads)
    ref_grads = reference.lstm_backward(theirs[3], dy)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for a, b in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(a, b, **tol)
    for name, a, b in zip(grads._fields, grads, ref_grads):
        if b is None:
            assert a is None, name
        else:
            np.testing.assert_allclose(a, b, **tol, err_msg=name)


@pytest.mark.parametrize("projected", [False, True])
def test_a_step_in_pieces_gives_the_sequence_kernels_result(tiny_pieces, projected):
    rng = np.random.default_rng(4)
    B, I, H = 23, 5, 16
    P = 6 if projected else 0
    model = lstm_c.LSTM(I, H, proj_size=P, seed=0, dtype=np.float64)
    model.eval()
    x = rng.standard_normal((1, B, I))
    y, _ = model(x)
    previous = lstm_c.get_num_threads()
    lstm_c.set_num_threads(1)  # the one-step kernel (more threads run the sequence kernel)
    try:
        h, _ = model.step(x[0])
    finally:
        lstm_c.set_num_threads(previous)
    np.testing.assert_allclose(h, y[0], rtol=1e-10, atol=1e-12)
