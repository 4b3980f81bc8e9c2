"""Threads and state: concurrent callers, the GIL, bitwise reproducibility, caches held
across threads, and using the package in a child made by fork(). Behaviour only: how
fast threads run side by side is measured (never asserted) by bench/concurrency.py.

What may be shared is what lstm_c.layer's docstring promises: weights between
any number of threads; one LSTM module in eval mode between any number of
threads; a training module with one thread (others get ``copy.deepcopy(m)``).
"""

from __future__ import annotations

import copy
import hashlib
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import assert_identical, make_problem, tol

import lstm_c
from lstm_c import LSTM, _lstm

UNDER_SANITIZER = os.environ.get("LSTM_C_UNDER_SANITIZER", "0") not in ("", "0")


def weights(rng, I, H, dtype, P=0, peephole=False):
    """Weights and biases of one layer (no input, no state)."""
    p = make_problem(rng, 0, 0, I, H, dtype, P=P, peephole=peephole, state=False)
    return {k: v for k, v in p.items() if k != "x" and v is not None}


def job(rng, T, B, I, H, dtype, P=0, batch_first=False):
    """The per-call inputs: x, lengths, and the output gradients."""
    out = P or H
    shape = (B, T) if batch_first else (T, B)
    return dict(
        x=rng.standard_normal((*shape, I)).astype(dtype),
        lengths=rng.integers(0, T + 1, B),
        dy=rng.standard_normal((*shape, out)).astype(dtype),
        dh_n=rng.standard_normal((B, out)).astype(dtype),
        dc_n=rng.standard_normal((B, H)).astype(dtype),
    )


def forward_backward(w, j, num_threads, **options):
    y, h, c, cache = lstm_c.lstm_forward(
        j["x"], **w, lengths=j["lengths"], num_threads=num_threads, **options
    )
    g = lstm_c.lstm_backward(cache, j["dy"], j["dh_n"], j["dc_n"], num_threads=num_threads)
    return (y, h, c) + tuple(a for a in g if a is not None)


def every_pass(w, j, num_threads, **options):
    """An inference forward's results (its threads are lstm_c's own on Linux), then
    forward_backward's (OpenMP's)."""
    y, h, c = lstm_c.lstm_forward(
        j["x"], **w, lengths=j["lengths"], num_threads=num_threads, training=False, **options
    )[:3]
    return (y, h, c) + forward_backward(w, j, num_threads, **options)


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# Small enough to be quick, big enough that a call with num_threads=2 runs on two threads.
PARALLEL = dict(T=6, B=32, I=16, H=64)
SMALL = dict(T=5, B=3, I=4, H=6)


# ----------------------------------------------------------------------------- concurrent callers


@pytest.mark.parametrize("sizes", [PARALLEL, SMALL], ids=["parallel_sized", "small"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_on_shared_weights_get_the_serial_results(sizes, dtype):
    rng = np.random.default_rng(1)
    w = weights(rng, sizes["I"], sizes["H"], dtype, P=8, peephole=True)
    for a in w.values():
        a.flags.writeable = False  # shared, and provably never written
    jobs = [(job(rng, **sizes, dtype=dtype, P=8), 1 + k % 2, bool(k % 3 == 0)) for k in range(12)]
    serial = [forward_backward(w, j, threads, reverse=reverse) for j, threads, reverse in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            futures = [
                pool.submit(forward_backward, w, j, threads, reverse=reverse) for j, threads, reverse in jobs
            ]
            for result, expected in zip((f.result() for f in futures), serial):
                assert_identical(result, expected)


def test_one_eval_module_serves_many_threads():
    m = LSTM(8, 40, num_layers=2, bidirectional=True, proj_size=16, dtype=np.float32, seed=2).eval()
    step_m = LSTM(8, 40, num_layers=2, peephole=True, dtype=np.float32, seed=3).eval()
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((7, 20, 8)).astype(np.float32) for _ in range(8)]
    lengths = [rng.integers(0, 8, 20) for _ in range(8)]

    def work(k):
        y, (h, c) = m(xs[k], lengths=lengths[k])
        y_t, (hs, cs) = step_m.step(xs[k][0])
        y_t, (hs, cs) = step_m.step(xs[k][1], (hs, cs))
        return y, h, c, y_t, hs, cs

    serial = [work(k) for k in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            for got, expected in zip(pool.map(work, range(8)), serial):
                assert_identical(got, expected)


def test_training_threads_with_their_own_modules_get_the_serial_results():
    base = LSTM(8, 40, num_layers=2, bidirectional=True, dropout=0.3, dtype=np.float32, seed=4)
    rng = np.random.default_rng(4)
    data = [(rng.standard_normal((6, 24, 8)).astype(np.float32), rng.integers(0, 7, 24)) for _ in range(4)]

    def train(k):
        m = copy.deepcopy(base)
        m.dropout_rng = np.random.default_rng(k)
        out = []
        for _ in range(3):
            y, (h, c) = m(data[k][0], lengths=data[k][1])
            dx, (dh0, dc0) = m.backward(np.ones_like(y), (h, c))
            out += [y, h, c, dx, dh0, dc0, *m.grads.values()]
        return out

    serial = [train(k) for k in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for got, expected in zip(pool.map(train, range(4)), serial):
            assert_identical(got, expected)


def test_a_forward_in_another_thread_cannot_corrupt_a_held_cache():
    """Thread A holds a training cache and runs its backward again and again while other
    threads run forwards (training and inference) on the same weights."""
    rng = np.random.default_rng(5)
    dtype = np.float32
    w = weights(rng, PARALLEL["I"], PARALLEL["H"], dtype, P=8, peephole=True)
    mine = job(rng, **PARALLEL, dtype=dtype, P=8)
    y, h, c, cache = lstm_c.lstm_forward(mine["x"], **w, lengths=mine["lengths"], num_threads=2)
    expected = lstm_c.lstm_backward(cache, mine["dy"], mine["dh_n"], mine["dc_n"], num_threads=2)
    others = [job(rng, **PARALLEL, dtype=dtype, P=8) for _ in range(4)]
    kept = (y.copy(), h.copy(), c.copy())
    stop = threading.Event()

    def churn(k):
        count = 0
        while not stop.is_set() or count < 3:
            j = others[k % len(others)]
            out = lstm_c.lstm_forward(
                j["x"], **w, lengths=j["lengths"], training=bool(count % 2), num_threads=1 + count % 2
            )
            assert not np.shares_memory(out[0], y) and (
                out[3] is None or not np.shares_memory(out[3].act, cache.act)
            )
            count += 1
        return count

    with ThreadPoolExecutor(max_workers=3) as pool:
        churners = [pool.submit(churn, k) for k in range(2)]
        try:
            for _ in range(20):
                g = lstm_c.lstm_backward(cache, mine["dy"], mine["dh_n"], mine["dc_n"], num_threads=2)
                assert_identical(
                    tuple(a for a in g if a is not None), tuple(a for a in expected if a is not None)
                )
        finally:
            stop.set()
        assert all(f.result() >= 3 for f in churners)
    assert_identical((y, h, c), kept)


# ----------------------------------------------------------------------------- the GIL


def long_call():
    """The inputs of a kernel-bound forward and backward on one thread (T=100, B=64, H=256)."""
    rng = np.random.default_rng(6)
    w = weights(rng, 64, 256, np.float32)
    j = job(rng, T=100, B=64, I=64, H=256, dtype=np.float32)
    j["lengths"] = np.full(64, 100)
    return w, j


@pytest.fixture
def switches_only_when_a_thread_waits():
    """No thread switch on a timer: a Python thread then runs only when the thread that
    holds the GIL blocks or releases the GIL itself (sys.setswitchinterval)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    yield
    sys.setswitchinterval(interval)


def spy_on_kernels(monkeypatch, before, after):
    """Calls before() and after() around every call of the compiled forward and backward."""
    for name in ("forward", "backward"):
        original = getattr(_lstm, name)

        def spy(*args, _original=original, **kwargs):
            before()
            try:
                return _original(*args, **kwargs)
            finally:
                after()

        monkeypatch.setattr(_lstm, name, spy)


def test_the_gil_is_released_inside_the_kernels(switches_only_when_a_thread_waits, monkeypatch):
    """While a kernel call runs, another Python thread makes progress.

    With no switches on a timer, a thread that waits for a kernel call to start and then
    counts to COUNT can count only while the GIL is free: if the call held the GIL, the
    count would still be 0 when the call returned; released, the count is complete.
    """
    COUNT = 10_000
    counter = [0]
    seen = []  # (count on entering a kernel call, count when it returned)
    started = threading.Event()

    def count():
        started.wait()
        for _ in range(COUNT):
            counter[0] += 1

    def enter():
        seen.append(counter[0])
        started.set()

    spy_on_kernels(monkeypatch, enter, lambda: seen.append(counter[0]))
    w, j = long_call()
    y, h, c, cache = lstm_c.lstm_forward(j["x"], **w, lengths=j["lengths"], num_threads=1)
    for call in (
        lambda: lstm_c.lstm_forward(j["x"], **w, lengths=j["lengths"], num_threads=1),
        lambda: lstm_c.lstm_backward(cache, j["dy"], j["dh_n"], j["dc_n"], num_threads=1),
    ):
        counter[0] = 0
        started.clear()
        del seen[:]
        counting = threading.Thread(target=count)
        counting.start()
        call()
        counting.join()
        assert seen == [0, COUNT], f"counted {seen[1] - seen[0]} of {COUNT} during the call: the GIL was held"


def test_two_python_threads_run_kernels_at_the_same_time(switches_only_when_a_thread_waits, monkeypatch):
    """Two Python threads (each call on one thread of its own) are inside kernel calls at once,
    and each gets what it gets alone. Timings are bench/concurrency.py's business."""
    w, j = long_call()
    serial = forward_backward(w, j, 1)
    inside, most = [0], [0]

    def enter():
        inside[0] += 1
        most[0] = max(most[0], inside[0])

    def leave():
        inside[0] -= 1

    spy_on_kernels(monkeypatch, enter, leave)
    both = threading.Barrier(2)

    def work(_):
        both.wait()
        return forward_backward(w, j, 1)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for result in pool.map(work, range(2)):
            assert_identical(result, serial)
    assert most[0] == 2, "the two threads' kernel calls never overlapped: the GIL was held"


# ----------------------------------------------------------------------------- reproducibility


REPRODUCIBLE = {
    "float32": dict(dtype=np.float32),
    "float64_batch_first_reverse": dict(dtype=np.float64, batch_first=True, reverse=True),
    "float32_projection_peephole": dict(dtype=np.float32, P=24, peephole=True),
}


def reproducible_case(name):
    spec = dict(REPRODUCIBLE[name])
    dtype, P = spec.pop("dtype"), spec.pop("P", 0)
    peephole = spec.pop("peephole", False)
    rng = np.random.default_rng(7)
    w = weights(rng, 16, 80, dtype, P=P, peephole=peephole)
    j = job(rng, T=6, B=40, I=16, H=80, dtype=dtype, P=P, batch_first=spec.get("batch_first", False))
    return w, j, spec


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", REPRODUCIBLE)
def test_results_repeat_bitwise_for_a_thread_count(case, threads):
    w, j, options = reproducible_case(case)
    first = forward_backward(w, j, threads, **options)
    for _ in range(3):
        assert_identical(forward_backward(w, j, threads, **options), first)


def lstm_run(threads):
    m = LSTM(
        16,
        80,
        num_layers=2,
        bidirectional=True,
        proj_size=24,
        peephole=True,
        dropout=0.2,
        dtype=np.float32,
        seed=8,
    )
    m.num_threads = threads
    x = np.random.default_rng(8).standard_normal((6, 40, 16)).astype(np.float32)
    lengths = np.arange(40) % 7
    y, (h, c) = m(x, lengths=lengths)
    dx, (dh0, dc0) = m.backward(np.ones_like(y), (h, c))
    y_t, (hs, cs) = LSTM(16, 80, num_layers=2, dtype=np.float32, seed=9).step(x[0])
    return [y, h, c, dx, dh0, dc0, *m.grads.values(), y_t, hs, cs]


@pytest.mark.parametrize("threads", [1, 2])
def test_lstm_results_repeat_bitwise_for_a_thread_count(threads):
    first = lstm_run(threads)
    for _ in range(2):
        assert_identical(lstm_run(threads), first)


_CHILD = """
import hashlib, sys
import numpy as np
sys.path[:0] = {path!r}
import test_threads as t
print(t.digest(t.forward_backward(*t.reproducible_case({case!r})[:2], {threads}, **t.reproducible_case({case!r})[2])))
print(t.digest(t.lstm_run({threads})))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_results_repeat_bitwise_in_a_fresh_process(threads, tmp_path):
    """Another process (other addresses, other alignment of every array) gets the same bits."""
    case = "float32_projection_peephole"
    w, j, options = reproducible_case(case)
    here = [digest(forward_backward(w, j, threads, **options)), digest(lstm_run(threads))]
    script = _CHILD.format(path=[os.path.dirname(os.path.abspath(__file__))], case=case, threads=threads)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == here


def steps_of_one_row(threads):
    """A row stepped through a sequence by LSTM.step, whose threads share each step."""
    m = LSTM(24, 130, num_layers=2, seed=9).eval()
    m.num_threads = threads
    x = np.random.default_rng(9).standard_normal((30, 1, 24)).astype(np.float32)
    hx, outputs = None, []
    for x_t in x:
        y, hx = m.step(x_t, hx)
        outputs += [y, *hx]
    return outputs


_CHILD_DIGESTS = """
import sys
sys.path[:0] = {path!r}
import test_threads as t
from lstm_c import _lstm, functional
{setting}
for rows, weights in ((functional._SPLIT_BATCH_MIN_ROWS, functional._SPLIT_BATCH_MAX_WEIGHT_BYTES), (10**9, 0)):
    # the batch shared by rows, then by units
    functional._SPLIT_BATCH_MIN_ROWS, functional._SPLIT_BATCH_MAX_WEIGHT_BYTES = rows, weights
    for case in t.REPRODUCIBLE:
        w, j, options = t.reproducible_case(case)
        print(t.digest(t.every_pass(w, j, 2, **options)))
print(t.digest(t.steps_of_one_row(2)))
"""


def digests_here_and_in_a_child(setting, tmp_path, monkeypatch):
    """The digests of every_pass on 2 threads (the batch shared by rows, then by units)
    and of steps_of_one_row: here, and in a child process that first runs `setting`,
    with a time limit (a thread left waiting would hang)."""
    here = []
    f = lstm_c.functional
    for rows, weights in ((f._SPLIT_BATCH_MIN_ROWS, f._SPLIT_BATCH_MAX_WEIGHT_BYTES), (10**9, 0)):
        monkeypatch.setattr(lstm_c.functional, "_SPLIT_BATCH_MIN_ROWS", rows)
        monkeypatch.setattr(lstm_c.functional, "_SPLIT_BATCH_MAX_WEIGHT_BYTES", weights)
        for case in REPRODUCIBLE:
            w, j, options = reproducible_case(case)
            here.append(digest(every_pass(w, j, 2, **options)))
    here.append(digest(steps_of_one_row(2)))
    script = _CHILD_DIGESTS.format(path=[os.path.dirname(os.path.abspath(__file__))], setting=setting)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return here, result.stdout.split()


ON_LINUX_WITH_OPENMP = pytest.mark.skipif(
    not (lstm_c.openmp_enabled() and sys.platform.startswith("linux")),
    reason="the waits that sleep and the helper threads are lstm_c's own on Linux only",
)


@ON_LINUX_WITH_OPENMP
def test_threads_asleep_at_the_barrier_are_woken_at_every_step(tmp_path, monkeypatch):
    """Each wait at a step's barrier (backward) or for a step's slices (forward) goes to
    sleep at once and is woken by the thread that ends the step, and so do the helper
    threads between calls and steps and the caller waiting for them: the same bits as
    with polling."""
    here, child = digests_here_and_in_a_child("_lstm._set_barrier_spin_ns(0)", tmp_path, monkeypatch)
    assert child == here


@ON_LINUX_WITH_OPENMP
@pytest.mark.parametrize("late_ns", [10_000, 50_000_000], ids=["joins_late", "joins_too_late"])
def test_a_helper_thread_that_comes_late_leaves_its_share_to_the_others(late_ns, tmp_path, monkeypatch):
    """An inference call's helper thread that starts its work late (as one woken after a
    pause may) finds its share taken by the calling thread, or the call done without it:
    the same bits as on time."""
    here, child = digests_here_and_in_a_child(f"_lstm._set_late_helpers({late_ns})", tmp_path, monkeypatch)
    assert child == here


# ----------------------------------------------------------------------------- fork


def _in_child(connection, case, threads):
    w, j, options = reproducible_case(case)
    results = forward_backward(w, j, threads, **options)
    connection.send([np.asarray(a) for a in results])
    connection.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this OS")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize(
    "child_threads", [2, None, 1], ids=["child_2_threads", "child_default", "child_1_thread"]
)
def test_a_forked_child_can_use_the_kernels_after_the_parent_did(child_threads):
    """The parent runs the kernels on 2 threads (OpenMP starts its thread pool), then a
    child made by fork() runs them again. The child must finish, not hang.

    GNU libgomp keeps its thread pool in memory that fork() copies, but not the pool's
    threads: a child that starts a team of more than one thread then waits for threads
    that do not exist. The child runs with a timeout; a hang fails the test.
    """
    case = "float32_projection_peephole"
    w, j, options = reproducible_case(case)
    parent = forward_backward(w, j, 2, **options)  # the parent's OpenMP now has a pool of threads
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_in_child, args=(sender, case, child_threads), daemon=True)
    child.start()
    sender.close()
    timeout = 60 if UNDER_SANITIZER else 20  # the child needs well under a second
    finished = receiver.poll(timeout)
    if not finished:
        child.kill()
        child.join()
        pytest.fail(
            f"a child made by fork() hung for {timeout} s in its first kernel call with "
            f"num_threads={child_threads} after the parent had run kernels on 2 threads "
            f"(OpenMP runtime: {lstm_c._lstm.__file__}; GNU libgomp cannot start a thread team "
            f"in a forked child)"
        )
    try:
        results = receiver.recv()
    except EOFError:
        child.join(timeout)
        pytest.fail(f"the forked child died with exit code {child.exitcode} before it sent its results")
    child.join(timeout)
    assert child.exitcode == 0
    for a, b in zip(results, parent):
        np.testing.assert_allclose(a, b, **tol(np.float32))
