"""Thread control: set_num_threads/get_num_threads, num_threads=, OMP_NUM_THREADS, threadpoolctl."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import make_problem

import lstm_c


@pytest.fixture(autouse=True)
def default_threads():
    yield
    lstm_c.set_num_threads(None)


def problem(dtype=np.float32):
    return make_problem(np.random.default_rng(0), 6, 32, 24, 64, dtype, bias=False, state=False)


def test_set_and_get_num_threads():
    lstm_c.set_num_threads(1)
    assert lstm_c.get_num_threads() == 1
    lstm_c.set_num_threads(3)
    assert lstm_c.get_num_threads() == 3
    lstm_c.set_num_threads(None)
    assert lstm_c.get_num_threads() == lstm_c._lstm.omp_max_threads()


@pytest.mark.parametrize(
    "bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_set_num_threads_rejects_non_positive_ints(bad, error):
    with pytest.raises(error, match="num_threads"):
        lstm_c.set_num_threads(bad)
    assert lstm_c.get_num_threads() == lstm_c._lstm.omp_max_threads()


def test_set_num_threads_is_the_default_of_num_threads_argument():
    p = problem()
    lstm_c.set_num_threads(1)
    y_default, _, _, cache = lstm_c.lstm_forward(**p)
    g_default = lstm_c.lstm_backward(cache, np.ones_like(y_default))
    lstm_c.set_num_threads(None)
    y_one, _, _, cache = lstm_c.lstm_forward(**p, num_threads=1)
    g_one = lstm_c.lstm_backward(cache, np.ones_like(y_one), num_threads=1)
    np.testing.assert_array_equal(y_default, y_one)
    for a, b in zip(g_default[:6], g_one[:6]):
        np.testing.assert_array_equal(a, b)


def test_omp_num_threads_sets_the_default(tmp_path):
    code = "import lstm_c; print(lstm_c.get_num_threads())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


@pytest.mark.skipif(not lstm_c.openmp_enabled(), reason="a build without OpenMP runs one thread")
def test_threadpoolctl_openmp_limit_is_followed():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    lstm_c.lstm_forward(**problem())  # make sure the OpenMP runtime is loaded
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert lstm_c.get_num_threads() == 1
    assert lstm_c.get_num_threads() == lstm_c._lstm.omp_max_threads()


def test_blas_threads_are_restored_after_a_call():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from lstm_c import _threads

    p = problem()
    lstm_c.lstm_forward(**p)
    controllers = _threads._scipy_blas_controllers()
    before = [c.get_num_threads() for c in controllers]
    y, _, _, cache = lstm_c.lstm_forward(**p, num_threads=2)
    lstm_c.lstm_backward(cache, y, num_threads=2)
    assert [c.get_num_threads() for c in controllers] == before
    with _threads.single_threaded_blas:
        assert all(c.get_num_threads() == 1 for c in controllers)
        with _threads.single_threaded_blas:  # overlapping calls keep it at one
            pass
        assert all(c.get_num_threads() == 1 for c in controllers)
    assert [c.get_num_threads() for c in controllers] == before
    assert threadpoolctl is not None
