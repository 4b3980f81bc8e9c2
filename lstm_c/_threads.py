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

import ctypes
import math
import os
import threading
from collections.abc import Callable
from typing import Any

from lstm_c import _lstm
from lstm_c._validation import MAX_THREADS, check_num_threads

# Below this much work per time step (about the flops of one step) a parallel
# region's barriers cost more than the second thread saves. Measured on 2 cores
# (Zen 4), T = 50: B=1 at H=128 and B=4 at H=64 gain a quarter from two threads.
# Smaller steps gain less, or lose, and pay most when the host takes a core away
# for a moment: B=1 at H=64 (work 18944) gained a fifth on a quiet machine, but
# B=4 at H=32 (21504), even there, ran 2.4x slower than on one thread in a
# benchmark run on a busy host. So they stay on one thread.
MIN_PARALLEL_WORK = 50_000
# Such a step may still be shared by rows of the batch, each thread running its own rows
# through every step with no barrier between them: from this many rows per thread and
# H = 32. Measured on 2 cores (Zen 4), T = 50, against one thread: 1.2-1.4x in inference
# and 1.1-1.25x in training at H = 32-64, B = 4-8; H = 16, B = 16 lost (0.91x).
SMALL_STEP_MIN_ROWS = 2
SMALL_STEP_MIN_HIDDEN = 32
# Up to this much work per time step, threads that share a step by hidden units spend
# more waiting for each other at every step than they save; from one row of the batch
# per thread they share it by rows instead (each reads all of W_hh at every step).
# Measured in inference on 2 cores of an Intel Xeon with AVX-512 (KVM guest), T = 50,
# by rows against by units: 1.33x at B = 4, H = 64 and at B = 2, H = 96; 1.1x at
# B = 2, H = 128 (work 141,312) and at B = 4, H = 80; 1.04x at B = 4, H = 96
# (162,816); even at B = 4, H = 128 (282,624); 0.98x at B = 6, H = 96 and 0.8x at
# B = 6, H = 128. (The backward pass has a limit of its own: see
# functional._split_batch.)
MAX_BARRIER_BOUND_WORK = 200_000
# LSTM.step's compiled plan, which keeps the GIL and answers no signal while it
# runs, takes batches whose step is below this much work (a few microseconds),
# and a single row below MAX_PLANNED_ROW_WORK (about 2 MFLOP, H = 700); larger
# steps go through the step kernel, which checks for signals between pieces of
# rows.
MAX_PLANNED_STEP_WORK = 200_000
MAX_PLANNED_ROW_WORK = 2_000_000
# A single row's step may be shared between threads from this much work: on 2
# cores (Zen 4), two threads took 3.1 us for H = 128 against 4.7 on one, 2.0
# against 2.6 for H = 96, and lost at H = 64 (1.4 against 1.2). The plan then
# measures which way is faster as it runs (see _lstm.Stepper).
MIN_PARALLEL_ROW_WORK = 40_000

# libgomp's thread pool does not survive fork(): a child whose parent already ran
# a multi-threaded call would wait forever for pool threads it does not have.
# Such a child runs every call on one thread.
_teams_started = False
_forked_after_teams = False
# Forks this process descends from: a thread plan made before one may not hold after it.
forks = 0


# Set by set_num_threads; None follows the default (see get_num_threads).
_default_threads: int | None = None


def _cgroup_cpu_limit() -> float | None:
    """The CPU quota of this process's cgroup (v2, then v1), in CPUs, or None if unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as f:
            period_us = int(f.read())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


_usable_cpus: int | None = None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, within its cgroup's CPU quota.

    Every time step of a call ends at a barrier that waits for the slowest
    thread, so threads beyond these CPUs only wait for each other. Read once
    per process (and again in a forked child): it takes file reads.
    """
    global _usable_cpus
    if _usable_cpus is None:
        _usable_cpus = _read_usable_cpus()
    return _usable_cpus


def _read_usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def set_num_threads(num_threads: int | None) -> None:
    """Set the threads of every kernel call that does not pass ``num_threads=``.

    Parameters
    ----------
    num_threads : int or None
        A count from 1 to 64 (or 4 per CPU on larger machines), or None to
        return to the default (see `get_num_threads`).
    """
    global _default_threads
    _default_threads = check_num_threads(num_threads)


def get_num_threads() -> int:
    """The threads a kernel call uses when it does not pass ``num_threads=``.

    Returns
    -------
    int
        The count given to `set_num_threads`; else ``OMP_NUM_THREADS`` when
        it is set; else the CPUs this process may use (its CPU affinity and
        its container's CPU quota), or fewer under a threadpoolctl limit on
        the "openmp" API. Never more than 64 (or 4 per CPU on larger
        machines), and 1 in a build without OpenMP. Calls too small to split
        still run on one thread.
    """
    if _default_threads is not None:
        return _default_threads
    threads = _lstm.omp_max_threads()  # follows OMP_NUM_THREADS and threadpoolctl's limits
    if not os.environ.get("OMP_NUM_THREADS"):
        threads = min(threads, usable_cpus())
    return max(1, min(threads, MAX_THREADS))


def resolve(num_threads: int | None) -> int:
    """The thread count asked for: `num_threads`, else `get_num_threads()`."""
    return num_threads if num_threads is not None else get_num_threads()


def _step_work(batch: int, hidden: int, output: int) -> int:
    """About the flops of one time step of one layer (the products and the pointwise work)."""
    return batch * hidden * (4 * output + 40)


def is_small_step(batch: int, hidden: int, output: int) -> bool:
    """Whether one time step of a sequence is too little work to split between threads."""
    return _step_work(batch, hidden, output) < MIN_PARALLEL_WORK


def is_barrier_bound_step(batch: int, hidden: int, output: int) -> bool:
    """Whether one time step is too little work to share by hidden units (see
    MAX_BARRIER_BOUND_WORK): its threads then share it by rows of the batch."""
    return _step_work(batch, hidden, output) <= MAX_BARRIER_BOUND_WORK


def lone_step_plan(hidden: int, output: int) -> tuple[int, bool]:
    """(largest, split) for LSTM.step's compiled plan: the largest batch it takes (0 if
    none), and whether a team of threads may share a single row's step."""
    work = _step_work(1, hidden, output)
    largest = (MAX_PLANNED_STEP_WORK - 1) // work or int(work < MAX_PLANNED_ROW_WORK)
    return largest, work >= MIN_PARALLEL_ROW_WORK


def plan(num_threads: int | None, batch: int, hidden: int, output: int) -> int:
    """Threads for one call: `team(num_threads)`; when a time step is too small to split
    by hidden units, as many as get SMALL_STEP_MIN_ROWS rows each (H >= 32), else one."""
    if not is_small_step(batch, hidden, output):
        return team(num_threads)
    if hidden < SMALL_STEP_MIN_HIDDEN or batch < 2 * SMALL_STEP_MIN_ROWS:
        return 1
    return min(team(num_threads), batch // SMALL_STEP_MIN_ROWS)


def team(num_threads: int | None) -> int:
    """The threads asked for (`resolve`), once they are known to start; one in a process
    forked after multi-threaded calls (see _after_fork_in_child)."""
    global _teams_started
    threads = resolve(num_threads)
    if threads > 1:
        if _forked_after_teams:
            return 1
        # A team the system cannot create is a RuntimeError here, not libgomp's exit.
        _lstm.ensure_threads(threads)
        _teams_started = True
    return threads


def _scipy_blas_controllers() -> list[Any]:
    """threadpoolctl's controllers of the BLAS that scipy.linalg.cython_blas calls."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)
    from threadpoolctl import ThreadpoolController

    controllers = ThreadpoolController().select(user_api="blas").lib_controllers
    # SciPy's wheels bundle their BLAS in scipy.libs (Linux, Windows) or scipy/.dylibs
    # (macOS); NumPy's own copy in numpy.libs is not the one cython_blas calls.
    scipy_owned = [
        c for c in controllers if "scipy.libs" in c.filepath or f"{os.sep}scipy{os.sep}" in c.filepath
    ]
    return scipy_owned or controllers


def _openblas_functions(controller: Any) -> tuple[int, int] | None:
    """Addresses of an OpenBLAS's get/set thread-count functions, or None."""
    if controller.internal_api != "openblas":
        return None
    library = ctypes.CDLL(controller.filepath)
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_"):
            try:
                get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}")
                set_ = getattr(library, f"{prefix}openblas_set_num_threads{suffix}")
            except AttributeError:
                continue
            get_address = ctypes.cast(get, ctypes.c_void_p).value
            set_address = ctypes.cast(set_, ctypes.c_void_p).value
            if get_address and set_address:
                return get_address, set_address
    return None


class _SingleThreadedBlas:
    """Context manager: SciPy's BLAS on one thread while any kernel call is under way.

    Reference-counted, so calls from several Python threads may overlap; the
    count of threads BLAS had is restored when the last one leaves. With an
    OpenBLAS (SciPy's wheels) the thread count is read and set through the
    compiled module; other BLAS go through threadpoolctl.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._get: Callable[[], list[int]] | None = None
        # True when the compiled module sets SciPy's BLAS threads itself (an OpenBLAS).
        self.compiled = False
        self._set: Callable[[list[int]], None] = lambda counts: None
        self._saved: list[int] = []

    def bind(self) -> None:
        """Find SciPy's BLAS and how to set its threads (once; later calls do nothing)."""
        with self._lock:
            if self._get is None:
                self._bind()

    def _bind(self) -> None:
        # threadpoolctl inspects the loaded libraries, which takes milliseconds: once.
        controllers = _scipy_blas_controllers()
        addresses = _openblas_functions(controllers[0]) if len(controllers) == 1 else None
        if addresses is not None:
            _lstm.set_blas_thread_functions(*addresses)
            self.compiled = True
            self._get = lambda: [_lstm.blas_threads()]
            self._set = lambda counts: _lstm.set_blas_threads(counts[0])
        else:
            self._get = lambda: [c.get_num_threads() for c in controllers]

            def set_counts(counts: list[int]) -> None:
                for controller, count in zip(controllers, counts):
                    controller.set_num_threads(count)

            self._set = set_counts

    def __enter__(self) -> None:
        with self._lock:
            if self._get is None:
                self._bind()
            if self._users == 0:
                self._saved = self._get()  # type: ignore[misc]
                self._set([1] * len(self._saved))
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._set(self._saved)

    def _after_fork(self) -> None:
        # A call under way in another thread at fork() never ends in the child.
        self._lock = threading.Lock()
        if self._users:
            self._users = 0
            self._set(self._saved)


single_threaded_blas = _SingleThreadedBlas()


def _after_fork_in_child() -> None:
    global _forked_after_teams, _usable_cpus, forks
    forks += 1
    _forked_after_teams = _teams_started
    _usable_cpus = None
    single_threaded_blas._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
