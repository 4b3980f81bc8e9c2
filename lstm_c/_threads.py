"""Thread counts for the kernels, and keeping SciPy's BLAS out of their way.

A kernel call runs one OpenMP parallel region in which every thread calls
BLAS on its own tile. BLAS must then run single-threaded: its own thread pool
would oversubscribe the cores, and even on one thread of ours, waking and
parking BLAS threads around the small GEMM of every time step costs more than
the GEMM. `single_threaded_blas` sets SciPy's BLAS to one thread for the
duration of the calls under way and restores it after the last one ends
(calls from several Python threads may overlap).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

from lstm_c import _lstm

# Below this much work per time step (about the flops of one step) a parallel
# region's barriers cost more than the second thread saves.
MIN_PARALLEL_WORK = 200_000


def resolve(num_threads: int | None) -> int:
    """The thread count asked for: `num_threads`, else OpenMP's default (OMP_NUM_THREADS)."""
    return num_threads if num_threads is not None else _lstm.omp_max_threads()


def plan(num_threads: int | None, batch: int, hidden: int, output: int) -> int:
    """Threads for one call: as asked, but one when a time step is too small to split."""
    threads = resolve(num_threads)
    if batch * hidden * (4 * output + 40) < MIN_PARALLEL_WORK:
        return 1
    return threads


class _BlasGuard:
    """Reference-counted `single_threaded_blas` over the BLAS that SciPy's cython_blas uses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._controllers: list[Any] | None = None
        self._saved: list[int] = []

    def _find(self) -> list[Any]:
        # threadpoolctl inspects the loaded libraries, which takes milliseconds: once.
        from threadpoolctl import ThreadpoolController

        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)

        controllers = ThreadpoolController().select(user_api="blas").lib_controllers
        # SciPy's wheels bundle their BLAS in scipy.libs (Linux, Windows) or scipy/.dylibs
        # (macOS); NumPy's own copy in numpy.libs is not the one cython_blas calls.
        scipy_owned = [
            c for c in controllers
            if "scipy.libs" in c.filepath or f"{os.sep}scipy{os.sep}" in c.filepath
        ]
        return scipy_owned or controllers

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._controllers is None:
                self._controllers = self._find()
            if self._users == 0:
                self._saved = [c.get_num_threads() for c in self._controllers]
                for c in self._controllers:
                    c.set_num_threads(1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for c, n in zip(self._controllers, self._saved):
                        c.set_num_threads(n)


single_threaded_blas = _BlasGuard()
