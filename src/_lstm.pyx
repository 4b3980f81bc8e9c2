# Batched LSTM forward and backward kernels (one layer, one direction).
#
# Math (PyTorch's gate order i, f, g, o; peepholes p (3, H) in order i, f, o):
#   a = x_t W_ih^T + h_{t-1} W_hh^T + b
#   i = sig(a_i + p_i c_{t-1}), f = sig(a_f + p_f c_{t-1}), g = tanh(a_g)
#   c_t = f c_{t-1} + i g,  o = sig(a_o + p_o c_t),  m_t = o tanh(c_t)
#   h_t = m_t W_hr^T with a projection W_hr (P, H), else h_t = m_t (P = H).
#
# Layout. A gate row holds 4H values [i | f | g | o]. Every per-position array
# (x, y, gates, h_prev, c_prev, m, dgates, dh) is a matrix of T*B rows in x's
# own layout: position (t, b) is row t*B + b (time-major) or b*T + t
# (batch_first), so the large GEMMs run over all rows at once and batch_first
# costs no copy.
#
# Lengths and reverse. At step s row b processes time t = s (forward) or
# t = lengths[b]-1-s (reverse) while s < lengths[b]; after that its state is
# frozen. The positions no step visits are exactly (s, b) for s >= lengths[b]:
# there y and every cached or gradient row is zeroed, so the GEMMs and sums
# over all positions see zeros, never stale memory.
#
# Threads. One OpenMP parallel region per call; the caller keeps BLAS
# single-threaded meanwhile, so every thread calls BLAS on its own tile and
# nothing is oversubscribed. Each thread owns a fixed slice of hidden units
# (all four gates of them) for the whole sequence: its slice of W_hh stays in
# its own cache, it runs the recurrent GEMM and the pointwise update of those
# units, and barriers separate the phases of a step: one per step without a
# projection (the new h goes to a second buffer while the old one is still
# read, and each thread's gate gradients of a step to one of two buffers), two
# with one. The large GEMMs before
# and after the time loop are split by rows or columns of their output. Every
# sum runs in a fixed order, so results repeat bitwise for a thread count.
#
# Recurrent products. Each thread packs its part of W_hh into panels once per
# call and the per-step products read them (lstm_cell.h): BLAS would repack
# W_hh on every step. Only steps too large to run between two polls for
# signals call BLAS's GEMM instead, in pieces (the caller decides by passing
# `panels` or None).
#
# Interrupts. A long call must not hold up Ctrl-C: the calling thread (thread
# 0 of the team) asks Python at step boundaries and between pieces of the large
# GEMMs whether a signal handler has raised (every few milliseconds at most,
# taking the GIL for a moment: see lstm_omp.h); if one has, every thread leaves
# at the same step and the call raises that exception. Calls from threads other
# than the main one never ask (only the main thread runs signal handlers).
#
# The Python layer (lstm_c.functional) validates and allocates; these functions
# only compute, with the GIL released.

import os
import sys
import threading

import numpy as np

from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_ND, PyBUF_WRITABLE,
                             PyBuffer_Release, PyObject_GetBuffer)
from cython cimport floating
from cython.parallel cimport parallel
from cpython.ref cimport Py_REFCNT
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset, strerror

from _blas cimport gemm

cdef extern from "Python.h":
    # Declared here without an exception value, so that Cython leaves the
    # exception a handler raised in place until the kernel has stopped.
    int PyErr_CheckSignals()
    unsigned long PyThread_get_thread_ident() nogil

cdef extern from "lstm_omp.h" nogil:
    int lstm_omp_enabled()
    int lstm_omp_max_threads()
    int lstm_omp_thread_num()
    int lstm_omp_num_threads()
    ctypedef struct lstm_barrier_t:
        pass
    int64_t lstm_barrier_spin_ns
    void lstm_barrier_init(lstm_barrier_t* barrier)
    void lstm_barrier_wait(lstm_barrier_t* barrier, int team)
    ctypedef struct lstm_phases_t:
        pass
    int lstm_phases_init(lstm_phases_t* phases, int parts)
    void lstm_phases_free(lstm_phases_t* phases)
    int lstm_phase_first(lstm_phases_t* phases, int own, unsigned phase, int parts)
    int lstm_phase_wait(lstm_phases_t* phases, unsigned phase, int parts)
    void lstm_phase_done(lstm_phases_t* phases)
    ctypedef void (*lstm_team_fn)(void* ctx, int tid, int team) noexcept nogil
    int LSTM_TEAM_ALL, LSTM_TEAM_OPEN, LSTM_TEAM_OPENMP
    void lstm_run_team(int threads, lstm_team_fn fn, void* ctx, int how)
    int64_t lstm_helpers_late_ns
    ctypedef struct lstm_poll_t:
        int raised
    int64_t lstm_now_ns()
    void lstm_poll_init(lstm_poll_t* poll, int enabled, double work)
    int lstm_poll_due(lstm_poll_t* poll)
    int lstm_poll_due_now(lstm_poll_t* poll)
    void lstm_poll_answered(lstm_poll_t* poll, int64_t asked_ns, int stop)
    int lstm_poll_raised(lstm_poll_t* poll)
    void lstm_poll_decide(lstm_poll_t* poll, Py_ssize_t step)
    int lstm_poll_stopping(lstm_poll_t* poll, Py_ssize_t step)
    int lstm_try_threads(int n, size_t stack)
    Py_ssize_t lstm_take(Py_ssize_t* counter)
    Py_ssize_t lstm_peek(Py_ssize_t* counter)
    void lstm_cpu_relax()

cdef extern from "lstm_cell.h" nogil:
    # The vectorised pointwise math of one row (see the header).
    void lstm_forward_cell_f(Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1, float* g, const float* r,
                             const float* bias, const float* peep, float* c, float* c_prev,
                             float* out)
    void lstm_forward_cell_d(Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1, double* g, const double* r,
                             const double* bias, const double* peep, double* c, double* c_prev,
                             double* out)
    void lstm_forward_output_f(Py_ssize_t j0, Py_ssize_t j1, const float* c, float* out)
    void lstm_forward_output_d(Py_ssize_t j0, Py_ssize_t j1, const double* c, double* out)
    void lstm_backward_row_f(Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1, const float* a,
                             const float* c_prev, const float* peep, const float* dh_in,
                             const float* dy, float* dc, float* dg, float* ds)
    void lstm_backward_row_d(Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1, const double* a,
                             const double* c_prev, const double* peep, const double* dh_in,
                             const double* dy, double* dc, double* dg, double* ds)

cdef extern from "lstm_cell.h" nogil:
    # The packed-panel recurrent product for small and medium batches (see the header).
    int LSTM_HAVE_PANELS
    void lstm_panel_gemm_f(Py_ssize_t nb, Py_ssize_t K, Py_ssize_t npanels, const float* panel,
                           const float* h, Py_ssize_t ldh, float* out, Py_ssize_t ldo,
                           Py_ssize_t ncols, int ordered)
    void lstm_panel_gemm_d(Py_ssize_t nb, Py_ssize_t K, Py_ssize_t npanels, const double* panel,
                           const double* h, Py_ssize_t ldh, double* out, Py_ssize_t ldo,
                           Py_ssize_t ncols, int ordered)
    void lstm_pack_panel_f(const float* W, Py_ssize_t K, Py_ssize_t rows, float* panel)
    void lstm_pack_panel_d(const double* W, Py_ssize_t K, Py_ssize_t rows, double* panel)
    void lstm_pack_columns_f(const float* W, Py_ssize_t ldw, Py_ssize_t K, Py_ssize_t cols,
                             float* panel)
    void lstm_pack_columns_d(const double* W, Py_ssize_t ldw, Py_ssize_t K, Py_ssize_t cols,
                             double* panel)
    void lstm_gemv_f(Py_ssize_t N, Py_ssize_t K, const float* W, const float* v, float* out)
    void lstm_gemv_d(Py_ssize_t N, Py_ssize_t K, const double* W, const double* v, double* out)
    void lstm_outer_f(Py_ssize_t K, Py_ssize_t rows, Py_ssize_t N, const float* A, Py_ssize_t lda,
                      const float* X, Py_ssize_t ldx, float* out, Py_ssize_t ldo, int accumulate)
    void lstm_outer_d(Py_ssize_t K, Py_ssize_t rows, Py_ssize_t N, const double* A, Py_ssize_t lda,
                      const double* X, Py_ssize_t ldx, double* out, Py_ssize_t ldo, int accumulate)

cdef enum:
    # Slices of hidden units and of GEMM columns are multiples of this, so that
    # every thread's pointwise loop runs over whole vectors and its panels
    # (16 floats or 8 doubles wide) are its own.
    ALIGN = 16


# SciPy's BLAS thread-count functions, when it is an OpenBLAS that exposes them
# (set by lstm_c._threads): calling them from here costs nanoseconds.
ctypedef int (*_get_threads_fn)() noexcept nogil
ctypedef void (*_set_threads_fn)(int) noexcept nogil
cdef _get_threads_fn _blas_get_threads = NULL
cdef _set_threads_fn _blas_set_threads = NULL


def set_blas_thread_functions(size_t get_address, size_t set_address) -> None:
    """Use the BLAS's `int get(void)` and `void set(int)` at these addresses."""
    global _blas_get_threads, _blas_set_threads
    _blas_get_threads = <_get_threads_fn>get_address
    _blas_set_threads = <_set_threads_fn>set_address


def blas_threads() -> int:
    """The BLAS thread count, through the functions given to set_blas_thread_functions."""
    return _blas_get_threads()


def set_blas_threads(int n) -> None:
    """Set the BLAS thread count, through the functions given to set_blas_thread_functions."""
    _blas_set_threads(n)


def panel_width(dtype_size: int) -> int:
    """Values per packed panel row for this itemsize, or 0 where panels are not built."""
    return 64 // dtype_size if LSTM_HAVE_PANELS else 0


def openmp_enabled() -> bool:
    """Whether this build of lstm_c was compiled with OpenMP."""
    return bool(lstm_omp_enabled())


def omp_max_threads() -> int:
    """OpenMP's default thread count (follows OMP_NUM_THREADS); 1 without OpenMP."""
    return lstm_omp_max_threads()


# ---------------------------------------------------------------- interrupts

# Off only to measure what the checks cost (bench/interrupt_check.py).
cdef bint _interrupt_checks = True
cdef object _main_thread = threading.main_thread


def set_interrupt_checks(bint enabled) -> None:
    """Turn the kernels' checks for pending signals (Ctrl-C) on or off; for benchmarking.

    Parameters
    ----------
    enabled : bool
        False makes every later call run to its end however long it takes,
        as if no signal had arrived (a handler's exception is then raised only
        when the call returns). On by default.
    """
    global _interrupt_checks
    _interrupt_checks = enabled


def interrupt_checks() -> bool:
    """Whether the kernels check for pending signals (see set_interrupt_checks)."""
    return _interrupt_checks


cdef bint _may_check_signals():
    """Whether this call asks for signals: checks are on and this is the main thread."""
    return _interrupt_checks and PyThread_get_thread_ident() == _main_thread().ident


cdef void _check_signals(lstm_poll_t* poll) noexcept nogil:
    """Run pending signal handlers now; if one raised, leave its exception set and stop."""
    cdef int64_t asked = lstm_now_ns()
    cdef int raised
    with gil:
        raised = PyErr_CheckSignals()
    lstm_poll_answered(poll, asked, raised != 0)


cdef inline void _poll(lstm_poll_t* poll, Py_ssize_t step) noexcept nogil:
    """Thread 0, at the top of a step: ask Python when it is time, and decide
    whether every thread leaves the loop after this step's first barrier (lstm_omp.h)."""
    if lstm_poll_due(poll):
        _check_signals(poll)
    lstm_poll_decide(poll, step)


cdef inline bint _stop_between_pieces(lstm_poll_t* poll, bint master) noexcept nogil:
    """Between two pieces of a long product: thread 0 (`master`) asks Python about
    signals when a check is due; whether the call is stopping."""
    if master and lstm_poll_due_now(poll):
        _check_signals(poll)
    return lstm_poll_raised(poll)


cdef int _raise_pending() except -1:
    """Propagate the exception a signal handler raised during the call."""
    return -1


# The large GEMMs before and after the time loop run in pieces of about
# _piece_work flops (10-50 ms on one core), with a poll between pieces, and of
# at least _piece_min_rows rows (output rows), or _piece_min_inner rows of the
# inner dimension when a GEMM sums over all positions. BLAS packs a whole
# operand again for every call: pieces of 64 rows made the input projection
# 10-15% slower. The GEMMs of one time step run in pieces only at very large
# batches (_step_piece_*), large enough that repacking W_hh costs nothing.
cdef Py_ssize_t _piece_work = 2000000000
cdef Py_ssize_t _piece_min_rows = 512
cdef Py_ssize_t _piece_min_inner = 1024
cdef Py_ssize_t _step_piece_work = 1000000000
cdef Py_ssize_t _step_piece_min_rows = 512


def _set_piece_sizes(Py_ssize_t work, Py_ssize_t min_rows, Py_ssize_t min_inner,
                     Py_ssize_t step_work, Py_ssize_t step_min_rows) -> tuple:
    """Set the GEMM piece sizes (see above) and return the previous ones; for tests only.

    Tiny pieces let small problems take the paths that only huge ones take.
    """
    global _piece_work, _piece_min_rows, _piece_min_inner, _step_piece_work, _step_piece_min_rows
    previous = (_piece_work, _piece_min_rows, _piece_min_inner, _step_piece_work,
                _step_piece_min_rows)
    _piece_work, _piece_min_rows, _piece_min_inner = work, min_rows, min_inner
    _step_piece_work, _step_piece_min_rows = step_work, step_min_rows
    return previous


cdef enum:
    # The sums over all positions (db, peephole gradients) poll every this many rows.
    POLL_ROWS = 1024


# Inference computes the input projection in chunks of steps, so its scratch does not
# grow with T. While W_ih is small enough to stay in L2 from one chunk to the next, a
# chunk's gate pre-activations take about _chunk_bytes, so that they are still in L2
# when the steps read them (measured on Zen 4, float32 1 thread: H = 256 at B = 16 and
# 64 15% and 8% faster than chunks of 1024 positions). A larger W_ih is read once per
# chunk from L3, where it would push W_hh out: then chunks of 1024 positions (H = 512:
# 5-9% faster than the small chunks; H = 1024, 2 threads: 8-15%).
cdef Py_ssize_t _chunk_positions = 1024
cdef Py_ssize_t _chunk_bytes = 256 << 10
cdef Py_ssize_t _chunk_w_ih_bytes = 1 << 20
# Positions per chunk set by a test (0: the rule above).
cdef Py_ssize_t _chunk_positions_forced = 0


def inference_chunk_steps(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden_size,
                          Py_ssize_t input_size, Py_ssize_t itemsize) -> int:
    """Steps per chunk of the input projection in an inference forward (at most `steps`).

    The forward's `gates` scratch is then (chunk_steps * batch, 4H) instead of
    (steps * batch, 4H); a chunk covers at most 1024 positions (at least one step).
    """
    cdef Py_ssize_t row_bytes = 4 * max(hidden_size, 1) * itemsize, positions = _chunk_positions
    if steps <= 0 or batch <= 0:
        return max(steps, 0)
    if _chunk_positions_forced > 0:
        positions = _chunk_positions_forced
    elif row_bytes * input_size <= _chunk_w_ih_bytes:
        positions = min(_chunk_positions, max(1, _chunk_bytes // row_bytes))
    return min(steps, max(1, positions // batch))


def _set_chunk_positions(Py_ssize_t positions) -> int:
    """Set the positions per inference chunk (0: the rule of inference_chunk_steps) and
    return the previous setting; for tests only."""
    global _chunk_positions_forced
    previous = _chunk_positions_forced
    _chunk_positions_forced = max(0, positions)
    return previous


cdef void _gemm_pieces(bint sum_rows, bint trans_b, int m, int n, int k, const floating* a, int lda,
                       const floating* b, int ldb, floating* c, int ldc,
                       Py_ssize_t work, Py_ssize_t min_piece, lstm_poll_t* poll,
                       bint master) noexcept nogil:
    """C (m x n) = A op(B) (A m x k) or, with sum_rows, A^T B (A k x m, B k x n), row-major.

    The rows of C (or, with sum_rows, the k rows summed over) are taken in
    pieces of about `work` flops and at least `min_piece` rows; between pieces
    thread 0 (`master`) polls for signals and every thread stops early once
    the call is stopping. The pieces depend only on the sizes, so results
    repeat bitwise whether or not signals are checked.
    """
    cdef Py_ssize_t rows = k if sum_rows else m
    cdef Py_ssize_t flops_per_row = 2 * <Py_ssize_t>n * (m if sum_rows else k)
    cdef Py_ssize_t piece = max(work // max(flops_per_row, 1), min_piece, 1)
    cdef Py_ssize_t lo = 0, hi
    if m == 0 or n == 0:
        return
    if rows <= piece:
        if sum_rows:
            gemm(True, False, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)
        else:
            gemm(False, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)
        return
    while lo < rows:
        if _stop_between_pieces(poll, master):
            return
        hi = min(rows, lo + piece)
        if sum_rows:
            # Each piece adds its rows' products to C (beta = 1 after the first).
            gemm(True, False, m, n, <int>(hi - lo), 1, a + lo * lda, lda, b + lo * ldb, ldb,
                 0 if lo == 0 else 1, c, ldc)
        else:
            gemm(False, trans_b, <int>(hi - lo), n, k, 1, a + lo * lda, lda, b, ldb, 0,
                 c + lo * ldc, ldc)
        lo = hi


# ---------------------------------------------------------------- threads

# The largest thread count ensure_threads has seen created.
cdef int _verified_threads = 1


cdef size_t _omp_stack_size():
    """The stack OpenMP gives its threads when OMP_STACKSIZE/GOMP_STACKSIZE set it, else 0."""
    cdef dict units = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for name in ("OMP_STACKSIZE", "GOMP_STACKSIZE"):
        value = os.environ.get(name, "").strip().upper()
        if not value:
            continue
        unit = units.get(value[len(value) - 1:])
        digits = value[:len(value) - 1].strip() if unit is not None else value
        if digits.isdigit():
            # A bare number counts kilobytes (the OpenMP specification).
            return int(digits) * (unit if unit is not None else 1 << 10)
    return 0


def ensure_threads(int n) -> None:
    """Check that a team of `n` threads can be created, before OpenMP tries.

    libgomp ends the whole process when it cannot create the threads a
    parallel region asks for (e.g. too many threads under a memory limit).
    This creates n - 1 threads that exist at once, with the stack OpenMP
    would give them, and joins them; the largest n that worked is remembered,
    so later calls with no more threads cost nothing. On Windows it checks
    nothing.

    Parameters
    ----------
    n : int
        The team's size, the calling thread included.

    Raises
    ------
    RuntimeError
        When a thread cannot be created.
    """
    global _verified_threads
    cdef int err
    cdef size_t stack
    if n <= _verified_threads:
        return
    stack = _omp_stack_size()
    with nogil:
        err = lstm_try_threads(n - 1, stack)
    if err != 0:
        raise RuntimeError(
            f"cannot run {n} threads: creating a thread failed ({strerror(err).decode()}); "
            "ask for fewer with lstm_c.set_num_threads(), num_threads= or OMP_NUM_THREADS"
        )
    _verified_threads = n


cdef struct Slice:
    Py_ssize_t lo, hi


cdef inline void _forward_cell(Py_ssize_t H, Slice u, floating* g, const floating* r,
                               const floating* bias, const floating* peep, floating* c,
                               floating* c_prev, floating* out) noexcept nogil:
    """Forward, hidden units u of one row (lstm_cell.h), but for its output: leaves o in
    out, for _forward_output (after the other rows' _forward_cell)."""
    if floating is float:
        lstm_forward_cell_f(H, u.lo, u.hi, g, r, bias, peep, c, c_prev, out)
    else:
        lstm_forward_cell_d(H, u.lo, u.hi, g, r, bias, peep, c, c_prev, out)


cdef inline void _forward_output(Slice u, const floating* c, floating* out) noexcept nogil:
    """The output of a row's units u after _forward_cell: out = o * tanh(c)."""
    if floating is float:
        lstm_forward_output_f(u.lo, u.hi, c, out)
    else:
        lstm_forward_output_d(u.lo, u.hi, c, out)


cdef inline void _backward_row(Py_ssize_t H, Slice u, const floating* a, const floating* c_prev,
                               const floating* peep, const floating* dh_in, const floating* dy,
                               floating* dc, floating* dg, floating* ds) noexcept nogil:
    if floating is float:
        lstm_backward_row_f(H, u.lo, u.hi, a, c_prev, peep, dh_in, dy, dc, dg, ds)
    else:
        lstm_backward_row_d(H, u.lo, u.hi, a, c_prev, peep, dh_in, dy, dc, dg, ds)


cdef inline Py_ssize_t _panel_width(floating* unused) noexcept nogil:
    return 64 // sizeof(floating)


cdef inline void _panel_gemm(bint ordered, Py_ssize_t nb, Py_ssize_t K, Slice cols,
                             const floating* panels, const floating* a, Py_ssize_t lda,
                             floating* out, Py_ssize_t ldo) noexcept nogil:
    """nb rows of a times the panels of columns `cols` (lo a multiple of the panel width;
    `panels` points at the first of them), into out[:, cols.lo:cols.hi] (lstm_cell.h);
    `ordered`: each row summed in order of k."""
    cdef Py_ssize_t width = _panel_width(<floating*>panels)
    cdef Py_ssize_t n = (cols.hi - cols.lo + width - 1) // width
    if n <= 0:
        return
    if floating is float:
        lstm_panel_gemm_f(nb, K, n, panels, a, lda, out + cols.lo, ldo,
                          cols.hi - cols.lo - (n - 1) * width, ordered)
    else:
        lstm_panel_gemm_d(nb, K, n, panels, a, lda, out + cols.lo, ldo,
                          cols.hi - cols.lo - (n - 1) * width, ordered)


cdef inline void _gemv(Py_ssize_t N, Py_ssize_t K, const floating* w, const floating* v,
                       floating* out) noexcept nogil:
    """out[j] = w[j] . v for the N rows of w (N x K, row-major), read in place (lstm_cell.h)."""
    if floating is float:
        lstm_gemv_f(N, K, w, v, out)
    else:
        lstm_gemv_d(N, K, w, v, out)


cdef void _pack_panels(const floating* w, Py_ssize_t H, Py_ssize_t K, Slice u,
                       floating* panels) noexcept nogil:
    """Pack units u of w (4H x K: W_hh, or W_ih for the input projection), all four
    gates, into panels; see lstm_cell.h."""
    cdef Py_ssize_t width = _panel_width(panels), nblocks = (H + width - 1) // width
    cdef Py_ssize_t g, j0
    for g in range(4):
        j0 = u.lo
        while j0 < u.hi:
            if floating is float:
                lstm_pack_panel_f(w + (g * H + j0) * K, K, min(width, u.hi - j0),
                                  panels + (g * nblocks + j0 // width) * K * width)
            else:
                lstm_pack_panel_d(w + (g * H + j0) * K, K, min(width, u.hi - j0),
                                  panels + (g * nblocks + j0 // width) * K * width)
            j0 += width


cdef void _panel_product(const floating* panels, Py_ssize_t B, Py_ssize_t H, Py_ssize_t K,
                         Slice u, const floating* a, Py_ssize_t lda, floating* out,
                         Py_ssize_t ldo, bint ordered=False) noexcept nogil:
    """out[:, g*H + j] = a w[g*H + j]^T for the B rows of a (K wide) and units j in u,
    from the panels of w (_pack_panels)."""
    cdef Py_ssize_t width = _panel_width(<floating*>panels), nblocks = (H + width - 1) // width
    cdef Py_ssize_t g
    for g in range(4):
        _panel_gemm(ordered, B, K, u, panels + (g * nblocks + u.lo // width) * K * width, a, lda,
                    out + g * H, ldo)


cdef void _pack_column_panels(const floating* w, Py_ssize_t G, Py_ssize_t P, Slice q,
                              floating* panels) noexcept nogil:
    """Pack columns q of w (G x P: W_hh, or W_ih for the input gradient) into panels,
    for products dgates w."""
    cdef Py_ssize_t width = _panel_width(panels)
    cdef Py_ssize_t j0 = q.lo
    while j0 < q.hi:
        if floating is float:
            lstm_pack_columns_f(w + j0, P, G, min(width, q.hi - j0), panels + (j0 // width) * G * width)
        else:
            lstm_pack_columns_d(w + j0, P, G, min(width, q.hi - j0), panels + (j0 // width) * G * width)
        j0 += width


cdef void _column_panel_product(const floating* panels, Py_ssize_t B, Py_ssize_t G,
                                Slice q, const floating* a, Py_ssize_t lda, floating* out,
                                Py_ssize_t ldo, bint ordered=False) noexcept nogil:
    """out[:, q] = a w[:, q] for the B rows of a (G wide), from the column panels of w."""
    cdef Py_ssize_t width = _panel_width(<floating*>panels)
    _panel_gemm(ordered, B, G, q, panels + (q.lo // width) * G * width, a, lda, out, ldo)


# The products over all positions from panels take their rows in blocks of
# about this many bytes of the left operand, which then stays in L2 while every
# panel of the thread passes over it.
cdef Py_ssize_t _block_bytes = 262144


cdef void _panel_rows(bint columns, const floating* panels, Py_ssize_t rows, Py_ssize_t H,
                      Py_ssize_t K, Slice part, const floating* a, Py_ssize_t lda, floating* out,
                      Py_ssize_t ldo, lstm_poll_t* poll, bint master) noexcept nogil:
    """_panel_product (units `part`, w 4H x K) or, with `columns`, _column_panel_product
    (columns `part`, w K x H), over `rows` rows of a, in blocks of rows; between blocks
    thread 0 (`master`) polls for signals and every thread stops once the call is
    stopping. Each row is summed in order of k: its results do not depend on the
    blocks, so a sequence run in segments or chunks gives the same bits."""
    cdef Py_ssize_t block = max(8, _block_bytes // max(K * <Py_ssize_t>sizeof(floating), 1) // 8 * 8)
    cdef Py_ssize_t r0 = 0, n
    if part.hi <= part.lo:
        return
    while r0 < rows:
        if _stop_between_pieces(poll, master):
            return
        n = min(block, rows - r0)
        if columns:
            _column_panel_product(panels, n, K, part, a + r0 * lda, lda, out + r0 * ldo, ldo, True)
        else:
            _panel_product(panels, n, H, K, part, a + r0 * lda, lda, out + r0 * ldo, ldo, True)
        r0 += n


# The weight gradients dgates^T x and dgates^T h_prev go through lstm_outer instead of
# BLAS's GEMM when x's and h_prev's widths are whole vectors. Measured on Zen 4, whole
# backward calls: float32 1.02-1.36x from H = 64 to 1024 (1 and 2 threads; 1.09x at
# H = 256 B = 64), float64 1.04-1.19x from H = 64 to 512. On an Intel Xeon, whole
# training calls at H = 512-1024, B = 16-256: 0.96-1.21x on one thread, 0.99-1.11x on
# two (rows of 256 floats and more through packed copies; read as stored they took
# 0.80-0.96x BLAS's speed). Off only in tests (_use_outer), to compare with BLAS.
cdef bint _outer_enabled = True
# Positions per block: both operands' blocks stay in L2 while every tile passes over them.
cdef Py_ssize_t _outer_block_rows = 256


def _use_outer(bint enabled) -> bool:
    """Compute the weight gradients with lstm_outer where it applies (else BLAS's GEMM)
    and return the previous setting; for tests only."""
    global _outer_enabled
    previous = _outer_enabled
    _outer_enabled = enabled
    return previous


cdef inline bint _outer_fits(Py_ssize_t G, Py_ssize_t N, floating* unused) noexcept nogil:
    """Whether the G x N weight gradient goes through lstm_outer (see _outer_enabled)."""
    return _outer_enabled and LSTM_HAVE_PANELS and N > 0 and N % _panel_width(unused) == 0


cdef void _outer_pieces(Py_ssize_t rows, Slice g, Py_ssize_t N, const floating* a, Py_ssize_t lda,
                        const floating* x, Py_ssize_t ldx, floating* out, Py_ssize_t ldo,
                        lstm_poll_t* poll, bint master) noexcept nogil:
    """out[g, :] = a[:, g]^T x over `rows` positions, in blocks of _outer_block_rows (summed in
    order), with the signal checks of _panel_rows between blocks; out N wide, a multiple of
    the vector width."""
    cdef Py_ssize_t r0 = 0, n
    if g.hi <= g.lo:
        return
    while True:  # at least once: no position gives zeros
        if _stop_between_pieces(poll, master):
            return
        n = min(_outer_block_rows, rows - r0)
        if floating is float:
            lstm_outer_f(n, g.hi - g.lo, N, a + r0 * lda + g.lo, lda, x + r0 * ldx, ldx,
                         out + g.lo * ldo, ldo, r0 > 0)
        else:
            lstm_outer_d(n, g.hi - g.lo, N, a + r0 * lda + g.lo, lda, x + r0 * ldx, ldx,
                         out + g.lo * ldo, ldo, r0 > 0)
        r0 += n
        if r0 >= rows:
            return


cdef void _weight_gradient(Py_ssize_t rows, Slice g, Py_ssize_t G, Py_ssize_t N,
                           const floating* dgates, const floating* a, floating* out,
                           lstm_poll_t* poll, bint master) noexcept nogil:
    """Rows g of a weight gradient out (G x N) = dgates^T a over `rows` positions (a: x or
    h_prev, N wide): lstm_outer when it fits (_outer_fits), else BLAS's GEMM in pieces."""
    if _outer_fits(G, N, out):
        _outer_pieces(rows, g, N, dgates, G, a, N, out, N, poll, master)
    else:
        _gemm_pieces(True, False, <int>(g.hi - g.lo), <int>N, <int>rows, dgates + g.lo, <int>G,
                     a, <int>N, out + g.lo * N, <int>N, _piece_work, _piece_min_inner, poll, master)


cdef inline const floating* _cptr(const floating[:, ::1] m) noexcept nogil:
    """The first element, or NULL for None or an empty matrix (never out of bounds)."""
    if m is None or m.shape[0] == 0 or m.shape[1] == 0:
        return NULL
    return &m[0, 0]


cdef inline floating* _ptr(floating[:, ::1] m) noexcept nogil:
    if m is None or m.shape[0] == 0 or m.shape[1] == 0:
        return NULL
    return &m[0, 0]


cdef inline void _zero(floating* base, Py_ssize_t row, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """base[row + j0 : row + j1] = 0; nothing when base is NULL (an array not in use).

    The offset is applied here, after the NULL check: NULL + offset would pass it.
    """
    if base != NULL and j1 > j0:
        memset(base + row + j0, 0, (j1 - j0) * sizeof(floating))


cdef inline Py_ssize_t _max_length(Mat lengths) noexcept nogil:
    cdef Py_ssize_t b, m = 0
    cdef const Py_ssize_t* values = <const Py_ssize_t*>lengths.data
    for b in range(lengths.shape[0]):
        if values[b] > m:
            m = values[b]
    return m


cdef inline Slice _slice(Py_ssize_t n, Py_ssize_t align, int part, int parts) noexcept nogil:
    """Part `part` of `parts` contiguous pieces of [0, n), cut at multiples of `align`."""
    cdef Py_ssize_t blocks = (n + align - 1) // align
    cdef Slice sl
    sl.lo = min(n, (blocks * part // parts) * align)
    sl.hi = min(n, (blocks * (part + 1) // parts) * align)
    return sl


# Rows per block when the threads share the batch; 0: _row_block's rule.
cdef Py_ssize_t _row_block_rows = 0


def _set_barrier_spin_ns(int64_t ns) -> int:
    """Set how long a thread waiting at a barrier polls before it sleeps (0: it sleeps at
    once) and return the previous value; for tests only (Linux: elsewhere the barrier is
    OpenMP's own and ignores it)."""
    global lstm_barrier_spin_ns
    previous = lstm_barrier_spin_ns
    lstm_barrier_spin_ns = max(0, ns)
    return previous


def _set_late_helpers(int64_t ns) -> int:
    """Make lstm_c's helper threads wait `ns` nanoseconds before they join a call's work
    (0: none) and return the previous value; for tests only (Linux: elsewhere a call's
    threads are OpenMP's)."""
    global lstm_helpers_late_ns
    previous = lstm_helpers_late_ns
    lstm_helpers_late_ns = max(0, ns)
    return previous


def _set_row_block(Py_ssize_t rows) -> int:
    """Set the rows per block of a batch shared by rows (0: the default rule) and return
    the previous value; for tests and measurements only."""
    global _row_block_rows
    previous = _row_block_rows
    _row_block_rows = max(0, rows)
    return previous


cdef void _finish_blocks(Py_ssize_t* done, Py_ssize_t blocks, int tid,
                         lstm_poll_t* poll) noexcept nogil:
    """Thread 0, once no block of rows is left to take, keeps answering signals until all
    `blocks` are done (a slower thread may still run its block for long), or the call is
    stopping."""
    if tid != 0:
        return
    while lstm_peek(done) < blocks and not lstm_poll_raised(poll):
        if lstm_poll_due_now(poll):
            _check_signals(poll)
        lstm_cpu_relax()


cdef inline Py_ssize_t _row_block(Py_ssize_t B, Py_ssize_t H, Py_ssize_t P,
                                   int team) noexcept nogil:
    """Rows per block when the threads share the batch: a team-th of it, one block per
    thread; or, when every thread gets two blocks or more and a block's step is at
    least 16 MFLOP (H = P = 256), 32 rows, so that a thread that lost its core to other
    work takes fewer blocks. Measured on 2 cores (Zen 4) with the other core busy,
    blocks of 8 rows: 1.5x at H = 256, B = 64; on a quiet machine smaller blocks lost
    5-17% at H <= 128 (more per-step overhead). Every block reads all of W_hh at every
    step, from L3 once it outgrows L2: on an Intel Xeon (2 MiB of L2 per core), quiet,
    blocks of 8 rows took 1.14-1.46x the time of one block per thread at H = 256-512,
    B = 64-256; blocks of 32 rows 1.0-1.15x. Fixed by B, H, P and the team, whatever
    the lengths: a sequence run in segments gives the same bits."""
    if _row_block_rows > 0:
        return _row_block_rows
    if B >= 64 * team and 256.0 * H * P >= 16e6:
        return 32
    return (B + team - 1) // team


cdef inline Slice _next_rows(Py_ssize_t* taken, Py_ssize_t B, Py_ssize_t block) noexcept nogil:
    """The next block of `block` rows (_row_block) for the calling thread, from the
    counter of blocks `taken` shared by the team; empty when none is left."""
    cdef Slice rows
    rows.lo = min(B, lstm_take(taken) * block)
    rows.hi = min(B, rows.lo + block)
    return rows


cdef struct Steps:
    # Where row b is at step s: see "Lengths and reverse" above.
    const Py_ssize_t* lengths
    Py_ssize_t batch
    bint reverse
    Py_ssize_t stride_t     # position rows between consecutive times
    Py_ssize_t stride_b     # position rows between consecutive batch rows


cdef inline Steps _steps(Mat lengths, bint reverse, bint batch_first,
                         Py_ssize_t steps) noexcept nogil:
    cdef Steps st
    st.lengths = <const Py_ssize_t*>lengths.data
    st.batch = lengths.shape[0]
    st.reverse = reverse
    st.stride_t = 1 if batch_first else lengths.shape[0]
    st.stride_b = steps if batch_first else 1
    return st


cdef inline Py_ssize_t _position(Steps st, Py_ssize_t s, Py_ssize_t b) noexcept nogil:
    """Row of the position row b processes at step s, or of the padding it zeroes."""
    cdef Py_ssize_t length = st.lengths[b]
    cdef Py_ssize_t t = s
    if s < length and st.reverse:
        t = length - 1 - s
    return t * st.stride_t + b * st.stride_b


# ---------------------------------------------------------------- forward

cdef inline Py_ssize_t _chunk_row(Steps st, Py_ssize_t s, Py_ssize_t b, Py_ssize_t s0,
                                  Py_ssize_t s1) noexcept nogil:
    """The row of chunk [s0, s1)'s gates that holds row b's step s (see _project_chunk)."""
    cdef Py_ssize_t valid
    if st.reverse:
        valid = min(s1, st.lengths[b]) - s0  # its rows hold the times in increasing order
        return (valid - 1 - (s - s0)) * st.batch + b
    return (s - s0) * st.batch + b


cdef struct Tile:
    Slice rows, cols


cdef inline Tile _tile(Py_ssize_t rows, Py_ssize_t cols, int tid, int team) noexcept nogil:
    """This thread's tile of a rows x cols GEMM output whose right operand (k x cols)
    BLAS packs whole in every call.

    By rows, unless there are fewer rows than columns: each thread would then
    pack all of the right operand (at small batch all of W_ih, for a few rows),
    so the split is by columns and each packs its own part. (Returned, not
    written through pointers: a variable assigned in a parallel block is private
    to each thread, one written only through a pointer would be shared.)
    """
    cdef Tile t
    if rows < cols:
        t.rows.lo, t.rows.hi = 0, rows
        t.cols = _slice(cols, ALIGN, tid, team)
    else:
        t.rows = _slice(rows, 1, tid, team)
        t.cols.lo, t.cols.hi = 0, cols
    return t


cdef void _project(Py_ssize_t n, const floating* x, Py_ssize_t ldx, floating* out,
                   Py_ssize_t ldo, Py_ssize_t I, Py_ssize_t G, const floating* w_ih,
                   const floating* ih_panels, Slice u, int part, int parts, bint alone,
                   lstm_poll_t* poll, bint master) noexcept nogil:
    """out (n rows, ld ldo) = x (n rows, ld ldx) W_ih^T, one share of it: with ih_panels
    (W_ih packed, _pack_panels) units u of every row, else _tile `part` of `parts`
    through BLAS; `alone`: all of it (these rows are this thread's alone). `master`:
    the calling thread is thread 0 (which answers signals)."""
    cdef Tile tile
    if ih_panels != NULL:
        _panel_rows(False, ih_panels, n, G // 4, I, u, x, ldx, out, ldo, poll, master)
        return
    tile = _tile(n, G, 0, 1) if alone else _tile(n, G, part, parts)
    if tile.cols.hi > tile.cols.lo:
        _gemm_pieces(False, True, <int>(tile.rows.hi - tile.rows.lo),
                     <int>(tile.cols.hi - tile.cols.lo), <int>I, x + tile.rows.lo * ldx,
                     <int>ldx, w_ih + tile.cols.lo * I, <int>I,
                     out + tile.rows.lo * ldo + tile.cols.lo, <int>ldo, _piece_work,
                     _piece_min_rows, poll, master)


cdef void _project_chunk(Steps st, Slice r, bint alone, Py_ssize_t s0, Py_ssize_t s1,
                         Py_ssize_t I, Py_ssize_t G, const floating* x, const floating* w_ih,
                         const floating* ih_panels, Slice u, int part, int parts, floating* gates,
                         lstm_poll_t* poll, bint master) noexcept nogil:
    """gates rows of steps [s0, s1) = their inputs W_ih^T for rows r of the batch, one
    share of it (_project; `alone`: rows r are this thread's, all of their units).

    Row b's step s lands in chunk row _chunk_row(s, b). Forward in time-major
    layout, the chunk is one block of positions (a single product; one per
    step for a part of the batch); otherwise each row's valid steps are
    consecutive times of that row, one product per row with the stride between
    its times as leading dimension.
    """
    cdef Py_ssize_t b, t, valid, t0, B = st.batch
    if not st.reverse and st.stride_b == 1:
        if r.lo == 0 and r.hi == B:
            _project((s1 - s0) * B, x + s0 * B * I, I, gates, G, I, G, w_ih, ih_panels, u, part,
                     parts, alone, poll, master)
        elif r.hi > r.lo:
            for t in range(s0, s1):
                _project(r.hi - r.lo, x + (t * B + r.lo) * I, I,
                         gates + ((t - s0) * B + r.lo) * G, G, I, G, w_ih,
                         ih_panels, u, part, parts, alone, poll, master)
        return
    for b in range(r.lo, r.hi):
        valid = min(s1, st.lengths[b]) - s0
        if valid > 0:
            t0 = st.lengths[b] - s0 - valid if st.reverse else s0
            _project(valid, x + (t0 * st.stride_t + b * st.stride_b) * I, st.stride_t * I,
                     gates + b * G, B * G, I, G, w_ih, ih_panels, u, part, parts, alone, poll,
                     master)


cdef void _forward_units(
    Py_ssize_t s, Slice u, Slice r, Py_ssize_t H, Steps st,
    floating* gates, const floating* rec, const floating* bias, const floating* peep,
    const floating* h, floating* h_out, floating* c, floating* y, floating* h_prev,
    floating* c_prev, floating* m_step, floating* m_all, bint chunked, Py_ssize_t s0,
    Py_ssize_t s1,
) noexcept nogil:
    """Hidden units u of rows r at step s, whose incoming hidden state is h.

    Without projection (m_step NULL) the new h goes to h_out (another buffer
    than h: the other threads may still read h) and y; a row past its length
    copies its state over. With one, the cell output m goes to m_step (and
    m_all when training) and the projection phase writes h and y (h_out is
    unused). Training (c_prev not NULL) replaces the pre-activations in
    `gates` by the activations and records the state. `chunked` (inference):
    `gates` holds only the chunk of steps [s0, s1).
    """
    cdef Py_ssize_t b, p, k
    cdef bint training = c_prev != NULL
    cdef size_t size = (u.hi - u.lo) * sizeof(floating)
    cdef floating* g
    if u.hi <= u.lo:
        return
    for b in range(r.lo, r.hi):
        p = _position(st, s, b)
        if chunked:
            g = gates + (_chunk_row(st, s, b, s0, s1) if s < st.lengths[b] else 0) * 4 * H
        else:
            g = gates + p * 4 * H
        if s >= st.lengths[b]:
            if m_step == NULL:
                memcpy(h_out + b * H + u.lo, h + b * H + u.lo, size)
                _zero(y, p * H, u.lo, u.hi)
            if training:
                for k in range(4):
                    _zero(g, k * H, u.lo, u.hi)
                _zero(c_prev, p * H, u.lo, u.hi)
                if m_step == NULL:
                    _zero(h_prev, p * H, u.lo, u.hi)
                else:
                    _zero(m_all, p * H, u.lo, u.hi)
            continue
        if m_step == NULL and training:
            memcpy(h_prev + p * H + u.lo, h + b * H + u.lo, size)
        _forward_cell(H, u, g, rec + b * 4 * H, bias, peep, c + b * H,
                      c_prev + p * H if training else NULL,
                      (h_out if m_step == NULL else m_step) + b * H)
    # The second pass of every row after the first of all (lstm_cell.h).
    for b in range(r.lo, r.hi):
        if s >= st.lengths[b]:
            continue
        p = _position(st, s, b)
        if m_step == NULL:
            _forward_output(u, c + b * H, h_out + b * H)
            memcpy(y + p * H + u.lo, h_out + b * H + u.lo, size)
        else:
            _forward_output(u, c + b * H, m_step + b * H)
            if training:
                memcpy(m_all + p * H + u.lo, m_step + b * H + u.lo, size)


cdef void _projected_outputs(
    Py_ssize_t s, Slice q, Slice r, Py_ssize_t P, Steps st,
    const floating* proj, floating* h, floating* y, floating* h_prev,
) noexcept nogil:
    """With a projection: features q of rows r of the new h (`proj`) into the state and y."""
    cdef Py_ssize_t b, p
    cdef size_t size = (q.hi - q.lo) * sizeof(floating)
    if q.hi <= q.lo:
        return
    for b in range(r.lo, r.hi):
        p = _position(st, s, b)
        if s >= st.lengths[b]:
            _zero(y, p * P, q.lo, q.hi)
            _zero(h_prev, p * P, q.lo, q.hi)
            continue
        if h_prev != NULL:
            memcpy(h_prev + p * P + q.lo, h + b * P + q.lo, size)
        memcpy(h + b * P + q.lo, proj + b * P + q.lo, size)
        memcpy(y + p * P + q.lo, proj + b * P + q.lo, size)


# ---------------------------------------------------------------- array arguments
#
# The entry points take their arrays as Python objects and read each one's buffer
# directly: a typed memoryview per argument cost about 130 ns to set up, 2-4 us per
# call for the 12-30 arrays of an entry point, as much as a small layer's whole
# step. Each buffer is checked as a typed memoryview would check it (C-contiguous,
# its dimensions, its value type, writable when written) and held until the call
# returns, so that no array can be resized meanwhile.

cdef enum:
    MAX_HELD = 32   # more than any entry point's arrays


cdef struct Held:
    # The buffers an entry point holds for its call.
    int n
    Py_buffer views[MAX_HELD]


cdef struct Mat:
    # An array argument: its first value (NULL for None or no value), its shape
    # ((n, 1) for a vector, (0, 0) for None) and whether it was given.
    char* data
    Py_ssize_t shape[2]
    bint given


cdef bint _little_endian = sys.byteorder == "little"


cdef bint _holds(const Py_buffer* view, Py_ssize_t itemsize) noexcept:
    """Whether the buffer holds `itemsize`-byte floats (float32 or float64), or, for
    itemsize 0, Py_ssize_t values (NumPy's intp), in the machine's byte order."""
    cdef const char* f = view.format
    if f == NULL:
        return False
    if f[0] == c'@' or f[0] == c'=' or (f[0] == c'<' and _little_endian):
        f += 1
    if f[0] == 0 or f[1] != 0:
        return False
    if itemsize == 0:
        return (view.itemsize == sizeof(Py_ssize_t)
                and (f[0] == c'n' or f[0] == c'l' or f[0] == c'q'))
    return view.itemsize == itemsize and f[0] == (c'f' if itemsize == 4 else c'd')


cdef int _take(Held* held, object a, str name, Py_ssize_t itemsize, int ndim, bint writable,
               Mat* m) except -1:
    """m = array argument `a` (None for none): a C-contiguous buffer of `ndim`
    dimensions of the values `_holds` names, writable when `writable`, held in `held`
    until _release."""
    cdef Py_buffer* view
    m.data = NULL
    m.shape[0] = 0
    m.shape[1] = 0
    m.given = a is not None
    if a is None:
        return 0
    if held.n == MAX_HELD:
        raise RuntimeError("too many array arguments")
    view = &held.views[held.n]
    PyObject_GetBuffer(a, view,
                       PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (PyBUF_WRITABLE if writable else 0))
    held.n += 1
    if view.ndim != ndim or not _holds(view, itemsize):
        kind = "intp" if itemsize == 0 else ("float32" if itemsize == 4 else "float64")
        raise ValueError(f"{name} must be a {ndim}-D array of {kind}, got a {view.ndim}-D buffer "
                         f"of format {view.format.decode() if view.format != NULL else 'B'}")
    m.shape[0] = view.shape[0]
    m.shape[1] = view.shape[1] if ndim == 2 else 1
    if view.len:
        m.data = <char*>view.buf
    return 0


cdef int _require(str name, Mat m) except -1:
    """An array the call's sizes come from must be given."""
    if not m.given:
        raise ValueError(f"{name} is missing")
    return 0


cdef void _release(Held* held) noexcept:
    while held.n > 0:
        held.n -= 1
        PyBuffer_Release(&held.views[held.n])


cdef Py_ssize_t _float_size(object a, str name) except -1:
    """The bytes per value of array `a`: 4 (float32) or 8 (float64)."""
    cdef Py_buffer view
    PyObject_GetBuffer(a, &view, PyBUF_FORMAT | PyBUF_ND)
    try:
        if _holds(&view, 4):
            return 4
        if _holds(&view, 8):
            return 8
        raise ValueError(f"{name} must hold float32 or float64 values")
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------- argument checks
#
# The entry points check each array's shape against the sizes the call implies
# before any pointer is used, so that a swapped, missing or mis-sized buffer is a
# ValueError, never a wild write. (lstm_c.functional builds them all in one place;
# these checks are the last line, and cost nanoseconds.)

cdef int _check_matrix(str name, Mat m, Py_ssize_t rows, Py_ssize_t cols, bint used) except -1:
    """m must be (rows, cols) when `used`, and None otherwise."""
    if not used:
        if m.given:
            raise ValueError(f"{name} must be None in this call, got ({m.shape[0]}, {m.shape[1]})")
        return 0
    if not m.given:
        raise ValueError(f"{name} ({rows}, {cols}) is missing")
    if m.shape[0] != rows or m.shape[1] != cols:
        raise ValueError(f"{name} must be ({rows}, {cols}), got ({m.shape[0]}, {m.shape[1]})")
    return 0


cdef int _check_vector(str name, Mat v, Py_ssize_t size, bint exact) except -1:
    """v must hold `size` values (at least `size` when not `exact`)."""
    if not v.given:
        raise ValueError(f"{name} ({size},) is missing")
    if v.shape[0] < size or (exact and v.shape[0] != size):
        raise ValueError(f"{name} must hold {size} values, got {v.shape[0]}")
    return 0


cdef int _check_lengths(Mat lengths, Py_ssize_t batch, Py_ssize_t steps) except -1:
    """lengths must be (batch,) values in [0, steps]: the kernels index memory with them."""
    cdef Py_ssize_t b
    cdef const Py_ssize_t* values = <const Py_ssize_t*>lengths.data
    if not lengths.given or lengths.shape[0] != batch:
        raise ValueError(f"lengths must be ({batch},)")
    for b in range(batch):
        if values[b] < 0 or values[b] > steps:
            raise ValueError(f"lengths[{b}] = {values[b]} is outside [0, {steps}]")
    return 0


cdef inline Py_ssize_t _packed_size(Py_ssize_t blocked, Py_ssize_t other, Py_ssize_t itemsize) noexcept nogil:
    """Values of a (4·blocked, other) weight packed in panels of itemsize-byte values, its
    blocked axis rounded up to whole panels per gate (functional._packed)."""
    cdef Py_ssize_t width = 64 // itemsize
    return 4 * ((blocked + width - 1) // width) * other * width


cdef int _check_panels(str name, Mat panels, Py_ssize_t blocked, Py_ssize_t other,
                       Py_ssize_t itemsize) except -1:
    """None (BLAS products), or room for a weight packed in panels of `blocked`
    (lstm_c.functional._panels) of `itemsize`-byte values."""
    if not panels.given:
        return 0
    if not LSTM_HAVE_PANELS:
        raise ValueError(f"{name} must be None: this build has no packed-panel products")
    return _check_vector(name, panels, _packed_size(blocked, other, itemsize), False)


def pack_weights(const floating[:, ::1] w not None, floating[::1] out not None) -> None:
    """Pack every hidden unit of w (4H x K: W_hh, or W_ih) into out, as forward packs
    them at every call; forward(packed=True) then reads out as it is. out holds
    4*ceil(H/W)*K*W values, W = panel_width(itemsize) (functional._packed)."""
    cdef Py_ssize_t G = w.shape[0], K = w.shape[1], H = G // 4
    cdef Py_ssize_t size = _packed_size(H, K, sizeof(floating))
    cdef Slice u
    if not LSTM_HAVE_PANELS:
        raise ValueError("this build has no packed-panel products")
    if G == 0 or G % 4:
        raise ValueError(f"w must have 4*hidden_size rows with hidden_size >= 1, got {G}")
    if out.shape[0] != size:
        raise ValueError(f"out must hold {size} values, got {out.shape[0]}")
    if K == 0:
        return
    u.lo = 0
    u.hi = H
    with nogil:
        _pack_panels(&w[0, 0], H, K, u, &out[0])


cdef struct ForwardArrays:
    # forward's array arguments (see there), each taken by _take.
    Mat x, w_ih, w_hh, bias, w_hr, peephole, h, c, lengths, gates, y, h_prev, c_prev
    Mat m_all, rec, h_next, m_step, proj, panels, ih_panels


cdef int _take_kept(Held* held, ForwardArrays* a, Py_ssize_t itemsize, object w_ih, object w_hh,
                    object bias, object w_hr, object peephole, object lengths, object gates,
                    object h_prev, object c_prev, object m_all, object rec, object h_next,
                    object m_step, object proj, object panels, object ih_panels,
                    bint packed) except -1:
    """The arrays of a forward call that do not change from call to call (its weights,
    lengths and scratch), into `a`, held in `held`."""
    _take(held, w_ih, "w_ih", itemsize, 2, False, &a.w_ih)
    _take(held, w_hh, "w_hh", itemsize, 2, False, &a.w_hh)
    _take(held, bias, "bias", itemsize, 1, False, &a.bias)
    _take(held, w_hr, "w_hr", itemsize, 2, False, &a.w_hr)
    _take(held, peephole, "peephole", itemsize, 2, False, &a.peephole)
    _take(held, lengths, "lengths", 0, 1, False, &a.lengths)
    _take(held, gates, "gates", itemsize, 2, True, &a.gates)
    _take(held, h_prev, "h_prev", itemsize, 2, True, &a.h_prev)
    _take(held, c_prev, "c_prev", itemsize, 2, True, &a.c_prev)
    _take(held, m_all, "m_all", itemsize, 2, True, &a.m_all)
    _take(held, rec, "rec", itemsize, 2, True, &a.rec)
    _take(held, h_next, "h_next", itemsize, 2, True, &a.h_next)
    _take(held, m_step, "m_step", itemsize, 2, True, &a.m_step)
    _take(held, proj, "proj", itemsize, 2, True, &a.proj)
    _take(held, panels, "panels", itemsize, 1, not packed, &a.panels)
    _take(held, ih_panels, "ih_panels", itemsize, 1, not packed, &a.ih_panels)
    return 0


cdef int _take_io(Held* held, ForwardArrays* a, Py_ssize_t itemsize, object x, object h, object c,
                  object y) except -1:
    """The input, state and output of a forward call, into `a`, held in `held`."""
    _take(held, x, "x", itemsize, 2, False, &a.x)
    _take(held, h, "h", itemsize, 2, True, &a.h)
    _take(held, c, "c", itemsize, 2, True, &a.c)
    _take(held, y, "y", itemsize, 2, True, &a.y)
    return 0


def forward(
    *,
    x, w_ih, w_hh, bias, w_hr, peephole, h, c, lengths, bint reverse, bint batch_first,
    Py_ssize_t steps, gates, y, h_prev, c_prev, m_all, rec, h_next, m_step, proj, panels,
    ih_panels, int num_threads, bint split_batch, bint packed=False,
):
    """Run one layer and direction over the sequence on `num_threads` threads.

    x (T*B, I) and y (T*B, P) are in x's layout (see the file header), with
    P = H without projection. h (B, P) and c (B, H) hold h0/c0 on entry and
    h_n/c_n on return. w_hr (P, H) and peephole (3, H) may be None.
    Scratch: gates (T*B, 4H), rec (B, 4H); without a projection h_next (B, H),
    with one m_step (B, H) and proj (B, P) (else None). Training: h_prev (T*B, P) and c_prev
    (T*B, H) receive the state entering each position, gates the activations
    i, f, g, o and, with a projection, m_all (T*B, H) the cell outputs;
    inference passes None for all three. panels (4*ceil(H/W)*P*W, W =
    panel_width(itemsize)) selects the packed-panel recurrent product instead
    of BLAS; None for BLAS. ih_panels (4*ceil(H/W)*I*W) likewise for the input
    projection. BLAS must be single-threaded while num_threads > 1.
    `packed`: the panels given already hold W_hh and W_ih packed (pack_weights), read
    as they are instead of packed again.

    The threads share the time steps by hidden units: each computes its units
    of every row and meets the others at a barrier every step. With
    `split_batch`, by rows: each runs every unit of its own rows of the batch
    through all the steps, with no barrier (rows never read each other), but
    reads all of W_hh (and w_hr) instead of its part.
    """
    cdef Held held
    cdef ForwardArrays a
    cdef Py_ssize_t itemsize = _float_size(x, "x")
    held.n = 0
    try:
        _take_io(&held, &a, itemsize, x, h, c, y)
        _take_kept(&held, &a, itemsize, w_ih, w_hh, bias, w_hr, peephole, lengths, gates, h_prev,
                   c_prev, m_all, rec, h_next, m_step, proj, panels, ih_panels, packed)
        _forward_in(itemsize, &a, reverse, batch_first, steps, num_threads, split_batch, packed)
    finally:
        _release(&held)


cdef int _forward_in(Py_ssize_t itemsize, ForwardArrays* a, bint reverse, bint batch_first,
                     Py_ssize_t steps, int num_threads, bint split_batch, bint packed) except -1:
    """_forward in float32 (itemsize 4) or float64."""
    if itemsize == 4:
        return _forward(<float*>NULL, a, reverse, batch_first, steps, num_threads, split_batch, packed)
    return _forward(<double*>NULL, a, reverse, batch_first, steps, num_threads, split_batch, packed)


cdef class ForwardPlan:
    """A forward call made ready for any number of calls with inputs of one shape: every
    array argument but x, h, c and y (the weights, lengths and scratch) taken once.

    Takes `forward`'s keyword arguments but those four; the scratch arrays become the
    plan's. One call at a time: `run` returns False, and does nothing, while another
    thread's call runs on the plan.
    """
    cdef Held held
    cdef ForwardArrays kept
    cdef Py_ssize_t itemsize, steps
    cdef bint reverse, batch_first, split_batch, packed, busy
    cdef int num_threads

    def __cinit__(self):
        self.held.n = 0

    def __init__(self, *, w_ih, w_hh, bias, w_hr, peephole, lengths, bint reverse,
                 bint batch_first, Py_ssize_t steps, gates, h_prev, c_prev, m_all, rec, h_next,
                 m_step, proj, panels, ih_panels, int num_threads, bint split_batch,
                 bint packed=False):
        _release(&self.held)
        self.itemsize = _float_size(w_hh, "w_hh")
        _take_kept(&self.held, &self.kept, self.itemsize, w_ih, w_hh, bias, w_hr, peephole,
                   lengths, gates, h_prev, c_prev, m_all, rec, h_next, m_step, proj, panels,
                   ih_panels, packed)
        self.reverse, self.batch_first, self.steps = reverse, batch_first, steps
        self.num_threads, self.split_batch, self.packed = num_threads, split_batch, packed

    def __dealloc__(self):
        _release(&self.held)

    def run(self, x, h, c, y) -> bool:
        """forward with the plan's arrays and x (T*B, I), h (B, P), c (B, H) and y (T*B, P)
        as there; False if another call is running on the plan (then nothing is done)."""
        cdef Held held
        cdef ForwardArrays a = self.kept
        if self.busy:
            return False
        self.busy = True  # under the GIL, which the kernel releases only below
        held.n = 0
        try:
            _take_io(&held, &a, self.itemsize, x, h, c, y)
            _forward_in(self.itemsize, &a, self.reverse, self.batch_first, self.steps,
                        self.num_threads, self.split_batch, self.packed)
        finally:
            _release(&held)
            self.busy = False
        return True


cdef void _step_product(const floating* panels, const floating* w_hh, Slice r, Py_ssize_t H,
                        Py_ssize_t P, Slice u, const floating* h, floating* rec, lstm_poll_t* poll,
                        bint master) noexcept nogil:
    """Units u of all four gates of rows r of a step: rec = h_{t-1} W_hh[rows of u]^T,
    from W_hh's panels, or through BLAS when there are none (panels NULL)."""
    cdef Py_ssize_t k, G = 4 * H
    if panels != NULL:
        _panel_product(panels, r.hi - r.lo, H, P, u, h + r.lo * P, P, rec + r.lo * G, G)
        return
    for k in range(4):
        _gemm_pieces(False, True, <int>(r.hi - r.lo), <int>(u.hi - u.lo), <int>P, h + r.lo * P,
                     <int>P, w_hh + (k * H + u.lo) * P, <int>P, rec + r.lo * G + k * H + u.lo,
                     <int>G, _step_piece_work, _step_piece_min_rows, poll, master)


cdef void _project_step(Py_ssize_t s, bint running, Slice q, Slice r, Py_ssize_t H, Py_ssize_t P,
                        Steps st, const floating* w_hr, const floating* m, floating* proj,
                        floating* h, floating* y, floating* h_prev, lstm_poll_t* poll,
                        bint master) noexcept nogil:
    """With a projection, features q of rows r at step s: proj = m W_hr[q]^T (when some
    row is `running`), then the new h and y (_projected_outputs)."""
    if running and q.hi > q.lo and r.hi > r.lo:
        _gemm_pieces(False, True, <int>(r.hi - r.lo), <int>(q.hi - q.lo), <int>H, m + r.lo * H,
                     <int>H, w_hr + q.lo * H, <int>H, proj + r.lo * P + q.lo, <int>P,
                     _step_piece_work, _step_piece_min_rows, poll, master)
    _projected_outputs(s, q, r, P, st, proj, h, y, h_prev)


cdef struct ForwardCall:
    # A forward call as the threads of its team see it (_forward_team).
    ForwardArrays* a
    int itemsize
    Steps st
    Py_ssize_t steps, chunk, max_length
    bint chunked, split_batch, packed
    lstm_poll_t poll
    lstm_phases_t phases
    # With split_batch: the blocks of rows taken, and those finished.
    Py_ssize_t blocks_taken, blocks_done


cdef int _forward(floating* kind, ForwardArrays* a, bint reverse, bint batch_first,
                  Py_ssize_t steps, int num_threads, bint split_batch, bint packed) except -1:
    """forward in `floating` (`kind` selects it; never read) on the arrays in `a`: checks
    them, then runs _forward_team on a team of `num_threads` threads."""
    cdef Mat x = a.x, w_ih = a.w_ih, w_hh = a.w_hh, bias = a.bias, w_hr = a.w_hr
    cdef Mat peephole = a.peephole, h = a.h, c = a.c, lengths = a.lengths, gates = a.gates
    cdef Mat y = a.y, h_prev = a.h_prev, c_prev = a.c_prev, m_all = a.m_all, rec = a.rec
    cdef Mat h_next = a.h_next, m_step = a.m_step, proj = a.proj, panels = a.panels
    cdef Mat ih_panels = a.ih_panels
    _require("x", x)
    _require("h", h)
    _require("c", c)
    cdef Py_ssize_t B = c.shape[0], H = c.shape[1], P = h.shape[1], I = x.shape[1]
    cdef Py_ssize_t G = 4 * H, rows = steps * B, chunk = steps
    cdef bint projected = w_hr.given, training
    cdef ForwardCall call
    # IN x (T*B, I), w_ih (4H, I), w_hh (4H, P), bias (4H,), w_hr (P, H) or None,
    # peephole (3, H) or None, lengths (B,); INOUT h (B, P), c (B, H); OUT y (T*B, P);
    # training OUT h_prev (T*B, P), c_prev (T*B, H), m_all (T*B, H) with w_hr, gates
    # (T*B, 4H) (activations), else those None and gates SCRATCH (chunk*B, 4H), chunk =
    # inference_chunk_steps(T, B, H, I, itemsize); SCRATCH rec (B, 4H), h_next (B, H)
    # without w_hr, m_step (B, H) and proj (B, P) with w_hr, panels and ih_panels or None.
    training = c_prev.given
    if not training:
        chunk = inference_chunk_steps(steps, B, H, I, sizeof(floating))
    _check_matrix("x", x, rows, I, True)
    _check_matrix("w_ih", w_ih, G, I, True)
    _check_matrix("w_hh", w_hh, G, P, True)
    _check_vector("bias", bias, G, True)
    _check_matrix("w_hr", w_hr, P, H, projected)
    if not projected and P != H:
        raise ValueError(f"h must be (B, {H}) without w_hr, got (B, {P})")
    if peephole.given:
        _check_matrix("peephole", peephole, 3, H, True)
    _check_lengths(lengths, B, steps)
    _check_matrix("gates", gates, chunk * B, G, True)
    _check_matrix("y", y, rows, P, True)
    _check_matrix("h_prev", h_prev, rows, P, training)
    _check_matrix("c_prev", c_prev, rows, H, training)
    _check_matrix("m_all", m_all, rows, H, training and projected)
    _check_matrix("rec", rec, B, G, True)
    _check_matrix("h_next", h_next, B, P, not projected)
    _check_matrix("m_step", m_step, B, H, projected)
    _check_matrix("proj", proj, B, P, projected)
    _check_panels("panels", panels, H, P, sizeof(floating))
    _check_panels("ih_panels", ih_panels, H, I, sizeof(floating))
    if rows == 0:
        return 0  # nothing to compute: h and c already hold h_n = h0 and c_n = c0
    call.a = a
    call.itemsize = sizeof(floating)
    call.st = _steps(lengths, reverse, batch_first, steps)
    call.steps, call.chunk, call.max_length = steps, chunk, _max_length(lengths)
    # One chunk is the whole sequence: then inference projects exactly as training
    # does (the same products, so the same outputs, bitwise).
    call.chunked, call.split_batch, call.packed = chunk < steps, split_batch, packed
    call.blocks_taken = call.blocks_done = 0
    # Thread 0 polls once per step (about this much work apart) for signals.
    lstm_poll_init(&call.poll, _may_check_signals(),
                   2.0 * B * G * P + (2.0 * B * P * H if projected else 0) + 40.0 * B * H)
    if lstm_phases_init(&call.phases, num_threads) != 0:
        raise MemoryError()
    # Inference on lstm_c's own threads, which a thread late to start does not hold up;
    # training on the backward pass's (lstm_run_team).
    with nogil:
        lstm_run_team(num_threads, _forward_team, &call,
                      LSTM_TEAM_OPENMP if training else LSTM_TEAM_OPEN)
    lstm_phases_free(&call.phases)
    if call.poll.raised:
        _raise_pending()
    return 0


cdef void _forward_team(void* arg, int tid, int team) noexcept nogil:
    """A thread's part of a ForwardCall (lstm_run_team): the slices of its phases it runs
    (lstm_omp.h), or with split_batch the blocks of rows it takes."""
    cdef ForwardCall* call = <ForwardCall*>arg
    if call.itemsize == 4:
        _forward_thread(<float*>NULL, call, tid, team)
    else:
        _forward_thread(<double*>NULL, call, tid, team)


cdef void _forward_thread(floating* kind, ForwardCall* call, int tid, int team) noexcept nogil:
    """_forward_team in `floating` (`kind` selects it; never read)."""
    cdef ForwardArrays* a = call.a
    cdef Py_ssize_t B = a.c.shape[0], H = a.c.shape[1], P = a.h.shape[1], I = a.x.shape[1]
    cdef Py_ssize_t G = 4 * H, steps = call.steps, rows = steps * B, chunk = call.chunk
    cdef Py_ssize_t max_length = call.max_length, s, s0 = 0, s1 = 0, block = B
    cdef Steps st = call.st
    cdef bint projected = a.w_hr.given, chunked = call.chunked, packed = call.packed
    cdef lstm_poll_t* poll = &call.poll
    cdef lstm_phases_t* phases = &call.phases
    # This thread's count of the call's phases, and the slice it runs.
    cdef unsigned phase = 0
    cdef int i
    # u: the hidden units of a slice (packing, the projection of all positions); in the
    # time loop units lu and features lq of rows r (a slice's units of every row, or
    # with split_batch every unit of the rows of each block a thread takes).
    cdef Slice u, lu, lq, r = _slice(B, 1, 0, 1)
    # Every array's first element (NULL for None or empty). Backward repeats this list
    # for its own arrays, on purpose.
    cdef const floating* x_p = <const floating*>a.x.data
    cdef const floating* w_ih_p = <const floating*>a.w_ih.data
    cdef const floating* w_hh_p = <const floating*>a.w_hh.data
    cdef const floating* w_hr_p = <const floating*>a.w_hr.data
    cdef const floating* peep_p = <const floating*>a.peephole.data
    cdef floating* gates_p = <floating*>a.gates.data
    cdef floating* rec_p = <floating*>a.rec.data
    cdef floating* h_p = <floating*>a.h.data
    cdef floating* c_p = <floating*>a.c.data
    cdef floating* y_p = <floating*>a.y.data
    cdef floating* h_prev_p = <floating*>a.h_prev.data
    cdef floating* c_prev_p = <floating*>a.c_prev.data
    cdef floating* m_all_p = <floating*>a.m_all.data
    cdef floating* m_step_p = <floating*>a.m_step.data
    cdef floating* proj_p = <floating*>a.proj.data
    cdef floating* h_next_p = <floating*>a.h_next.data
    cdef const floating* bias_p = <floating*>a.bias.data
    cdef floating* panels_p = <floating*>a.panels.data
    cdef floating* ih_panels_p = <floating*>a.ih_panels.data
    # Without a projection the hidden state alternates between h and h_next.
    cdef floating* h_in = h_p
    cdef floating* h_out = h_next_p
    cdef floating* h_swap = NULL
    # The first phase (lstm_omp.h), slice i: units u of W_ih's and W_hh's panels
    # (unless packed) and of the projection of every position (unless chunked;
    # through BLAS its tile i).
    i = lstm_phase_first(phases, tid, phase, team)
    while i >= 0:
        u = _slice(H, ALIGN, i, team)
        if ih_panels_p != NULL and not packed:
            _pack_panels(w_ih_p, H, I, u, ih_panels_p)
        if not chunked:
            # In training the gates are kept for the backward pass anyway.
            _project(rows, x_p, I, gates_p, G, I, G, w_ih_p, ih_panels_p, u, i, team,
                     False, poll, tid == 0)
        if panels_p != NULL and not packed and not lstm_poll_raised(poll):
            _pack_panels(w_hh_p, H, P, u, panels_p)
        lstm_phase_done(phases)
        i = lstm_phase_wait(phases, phase, team)
    phase = phase + 1
    if call.split_batch:
        # The rows go in blocks (_row_block), each taken by the next free thread and
        # run through all the steps: a thread slowed by other work takes fewer.
        lu = _slice(H, ALIGN, 0, 1)
        lq = _slice(P, ALIGN, 0, 1)
        block = _row_block(B, H, P, team)
        while not lstm_poll_raised(poll):
            r = _next_rows(&call.blocks_taken, B, block)
            if r.hi <= r.lo:
                break
            h_in = h_p
            h_out = h_next_p
            for s in range(steps):
                if chunked and s % chunk == 0:
                    # Inference: the input projection of the next chunk of steps.
                    s0 = s
                    s1 = min(steps, s + chunk)
                    if not lstm_poll_raised(poll):
                        _project_chunk(st, r, True, s0, s1, I, G, x_p, w_ih_p, ih_panels_p,
                                       lu, 0, 1, gates_p, poll, tid == 0)
                if tid == 0:
                    _poll(poll, s)
                if lstm_poll_raised(poll):
                    break
                if s < max_length and lu.hi > lu.lo:
                    _step_product(panels_p, w_hh_p, r, H, P, lu, h_in, rec_p, poll,
                                  tid == 0)
                _forward_units(s, lu, r, H, st, gates_p, rec_p, bias_p, peep_p, h_in, h_out,
                               c_p, y_p, h_prev_p, c_prev_p, m_step_p, m_all_p, chunked,
                               s0, s1)
                if projected:
                    _project_step(s, s < max_length, lq, r, H, P, st, w_hr_p, m_step_p,
                                  proj_p, h_p, y_p, h_prev_p, poll, tid == 0)
                else:
                    h_swap = h_in
                    h_in = h_out
                    h_out = h_swap
            # Without a projection the final state is in h_in: bring it to h.
            if not projected and h_in != h_p and not lstm_poll_raised(poll):
                memcpy(h_p + r.lo * H, h_in + r.lo * H, (r.hi - r.lo) * H * sizeof(floating))
            lstm_take(&call.blocks_done)
        _finish_blocks(&call.blocks_done, (B + block - 1) // block, tid, poll)
    else:
        # Every step is a phase, slice i its units lu of every row (with a
        # projection, a second phase: its output features lq).
        for s in range(steps):
            if tid == 0:
                _poll(poll, s)
            if lstm_poll_raised(poll):
                break  # the call is stopping (the others run any slice left)
            if chunked and s % chunk == 0:
                # Inference: the input projection of the next chunk of steps.
                s0 = s
                s1 = min(steps, s + chunk)
                if ih_panels_p == NULL:
                    # Through BLAS, by tiles (not units): a phase of its own.
                    i = lstm_phase_first(phases, tid, phase, team)
                    while i >= 0:
                        if not lstm_poll_raised(poll):
                            _project_chunk(st, r, False, s0, s1, I, G, x_p, w_ih_p, NULL,
                                           r, i, team, gates_p, poll, tid == 0)
                        lstm_phase_done(phases)
                        i = lstm_phase_wait(phases, phase, team)
                    phase = phase + 1
            # Without a projection the hidden state alternates between h and h_next.
            h_in = h_p if projected or s % 2 == 0 else h_next_p
            h_out = h_next_p if s % 2 == 0 else h_p
            i = lstm_phase_first(phases, tid, phase, team)
            while i >= 0:
                lu = _slice(H, ALIGN, i, team)
                if chunked and s == s0 and ih_panels_p != NULL and not lstm_poll_raised(poll):
                    _project_chunk(st, r, False, s0, s1, I, G, x_p, w_ih_p, ih_panels_p,
                                   lu, i, team, gates_p, poll, tid == 0)
                if s < max_length and lu.hi > lu.lo and not lstm_poll_raised(poll):
                    _step_product(panels_p, w_hh_p, r, H, P, lu, h_in, rec_p, poll,
                                  tid == 0)
                # The same units' new state (the slice's columns of rec).
                _forward_units(s, lu, r, H, st, gates_p, rec_p, bias_p, peep_p, h_in, h_out,
                               c_p, y_p, h_prev_p, c_prev_p, m_step_p, m_all_p, chunked,
                               s0, s1)
                lstm_phase_done(phases)
                i = lstm_phase_wait(phases, phase, team)
            phase = phase + 1
            if projected:
                # h is written only here, after every slice has read it this step.
                i = lstm_phase_first(phases, tid, phase, team)
                while i >= 0:
                    _project_step(s, s < max_length, _slice(P, ALIGN, i, team), r, H, P,
                                  st, w_hr_p, m_step_p, proj_p, h_p, y_p, h_prev_p, poll,
                                  tid == 0)
                    lstm_phase_done(phases)
                    i = lstm_phase_wait(phases, phase, team)
                phase = phase + 1
        # Without a projection the final state is in h_next after an odd number of
        # steps: thread 0, which always comes, brings it to h (every step has ended).
        if tid == 0 and not projected and steps % 2 == 1 and not lstm_poll_raised(poll):
            memcpy(h_p, h_next_p, B * H * sizeof(floating))


# ---------------------------------------------------------------- backward

cdef void _backward_units(
    Py_ssize_t s, Slice u, Slice r, Py_ssize_t H, Steps st,
    const floating* act, const floating* c_prev, const floating* peep,
    const floating* dy, const floating* dh_last, const floating* dh_rec, floating* dc,
    floating* dgates, floating* dgates_step,
) noexcept nogil:
    """Hidden units u of rows r at step s: gate gradients from dh and the carried dc.

    dh (= dm with a projection) is dh_last at the row's last valid step (where
    dh_n enters) and dh_rec before it, plus dy when given (dy is NULL with a
    projection, whose phase has added it already).
    """
    cdef Py_ssize_t b, p, k, length
    cdef floating* dg
    if u.hi <= u.lo:
        return
    for b in range(r.lo, r.hi):
        length = st.lengths[b]
        p = _position(st, s, b)
        dg = dgates + p * 4 * H
        if s >= length:
            for k in range(4):
                _zero(dg, k * H, u.lo, u.hi)
            continue
        _backward_row(H, u, act + p * 4 * H, c_prev + p * H, peep,
                      (dh_last if s == length - 1 else dh_rec) + b * H,
                      dy + p * H if dy != NULL else NULL,
                      dc + b * H, dg, dgates_step + b * 4 * H)


cdef void _output_grads(
    Py_ssize_t s, Slice q, Slice r, Py_ssize_t P, Steps st,
    const floating* dy, const floating* dh_last, const floating* dh_rec,
    floating* dh_all, floating* dh_step,
) noexcept nogil:
    """With a projection: features q of rows r of dh_t = dh from later steps (or dh_n) + dy."""
    cdef Py_ssize_t b, p, j, length
    cdef const floating* dh_in
    cdef floating dh
    for b in range(r.lo, r.hi):
        length = st.lengths[b]
        p = _position(st, s, b)
        if s >= length:
            _zero(dh_all, p * P, q.lo, q.hi)
            _zero(dh_step, b * P, q.lo, q.hi)
            continue
        dh_in = (dh_last if s == length - 1 else dh_rec) + b * P
        for j in range(q.lo, q.hi):
            dh = dh_in[j]
            if dy != NULL:
                dh = dh + dy[p * P + j]
            dh_all[p * P + j] = dh
            dh_step[b * P + j] = dh


cdef inline bint _stopping(Py_ssize_t r, lstm_poll_t* poll, bint master) noexcept nogil:
    """In a sum over rows: whether to stop before row r (polling every POLL_ROWS rows)."""
    if r % POLL_ROWS != 0 or r == 0:
        return False
    return _stop_between_pieces(poll, master)


cdef void _column_sums(const floating* m, Py_ssize_t rows, Py_ssize_t cols, Slice part,
                       floating* out, lstm_poll_t* poll, bint master) noexcept nogil:
    """out[j] = sum over rows of m[:, j] for j in `part`, in row order."""
    cdef Py_ssize_t r, j
    for j in range(part.lo, part.hi):
        out[j] = 0
    for r in range(rows):
        if _stopping(r, poll, master):
            return
        for j in range(part.lo, part.hi):
            out[j] = out[j] + m[r * cols + j]


cdef void _peephole_grads(const floating* dgates, const floating* act, const floating* c_prev,
                          Py_ssize_t rows, Py_ssize_t H, Slice u, floating* dpeep,
                          lstm_poll_t* poll, bint master) noexcept nogil:
    """dp_i = sum da_i c_{t-1}, dp_f = sum da_f c_{t-1}, dp_o = sum da_o c_t over units u."""
    cdef Py_ssize_t r, j
    cdef const floating* a
    cdef const floating* dg
    cdef floating c_old
    for j in range(u.lo, u.hi):
        dpeep[j] = 0
        dpeep[H + j] = 0
        dpeep[2 * H + j] = 0
    for r in range(rows):
        if _stopping(r, poll, master):
            return
        a = act + r * 4 * H
        dg = dgates + r * 4 * H
        for j in range(u.lo, u.hi):
            c_old = c_prev[r * H + j]
            dpeep[j] = dpeep[j] + dg[j] * c_old
            dpeep[H + j] = dpeep[H + j] + dg[H + j] * c_old
            dpeep[2 * H + j] = dpeep[2 * H + j] + dg[3 * H + j] * (a[H + j] * c_old + a[j] * a[2 * H + j])


def backward(
    *,
    x, w_ih, w_hh, w_hr, peephole, act, c_prev, h_prev, m_all, lengths, bint reverse,
    bint batch_first, Py_ssize_t steps, dy, dh_n, dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr,
    dpeephole, dgates, dgates_step, dh_all, dh_step, dm_step, panels, ih_panels,
    int num_threads, bint split_batch,
):
    """Backpropagate through one layer and direction on `num_threads` threads.

    act, c_prev, h_prev (and m_all with a projection) come from a training
    forward with the same w_hr/peephole (None when unused). dy (T*B, P) may be
    None (zeros). dc0 (B, H) holds dc_n on entry and the carried dc
    throughout; dh0 (B, P) also serves as the per-step recurrent gradient.
    dw_hr (P, H) and dpeephole (3, H) are written when used (else None).
    Scratch: dgates (T*B, 4H) and dgates_step (2B, 4H), zeros (two halves used
    in turn: rows past their length are read, never written); with a projection
    dh_all (T*B, P), dh_step (B, P) and dm_step (B, H), else None. panels
    (4*ceil(P/W)*H*W) and ih_panels (4*ceil(I/W)*H*W), or None, select the
    packed-panel products dgates W_hh and dgates W_ih instead of BLAS. BLAS must
    be single-threaded while num_threads > 1. `split_batch` as in forward: each
    thread runs its own rows through the steps, with no barrier between them.
    """
    cdef Held held
    held.n = 0
    try:
        if _float_size(x, "x") == 4:
            _backward(<float*>NULL, &held, x, w_ih, w_hh, w_hr, peephole, act, c_prev, h_prev,
                      m_all, lengths, reverse, batch_first, steps, dy, dh_n, dx, dh0, dc0, dw_ih,
                      dw_hh, db, dw_hr, dpeephole, dgates, dgates_step, dh_all, dh_step, dm_step,
                      panels, ih_panels, num_threads, split_batch)
        else:
            _backward(<double*>NULL, &held, x, w_ih, w_hh, w_hr, peephole, act, c_prev, h_prev,
                      m_all, lengths, reverse, batch_first, steps, dy, dh_n, dx, dh0, dc0, dw_ih,
                      dw_hh, db, dw_hr, dpeephole, dgates, dgates_step, dh_all, dh_step, dm_step,
                      panels, ih_panels, num_threads, split_batch)
    finally:
        _release(&held)


cdef int _backward(floating* kind, Held* held, object x_, object w_ih_, object w_hh_,
                   object w_hr_, object peephole_, object act_, object c_prev_, object h_prev_,
                   object m_all_, object lengths_, bint reverse, bint batch_first,
                   Py_ssize_t steps, object dy_, object dh_n_, object dx_, object dh0_,
                   object dc0_, object dw_ih_, object dw_hh_, object db_, object dw_hr_,
                   object dpeephole_, object dgates_, object dgates_step_, object dh_all_,
                   object dh_step_, object dm_step_, object panels_, object ih_panels_,
                   int num_threads, bint split_batch) except -1:
    """backward in `floating` (`kind` selects it; never read), its arrays held in `held`."""
    cdef Mat x, w_ih, w_hh, w_hr, peephole, act, c_prev, h_prev, m_all, lengths, dy, dh_n, dx
    cdef Mat dh0, dc0, dw_ih, dw_hh, db, dw_hr, dpeephole, dgates, dgates_step, dh_all, dh_step
    cdef Mat dm_step, panels, ih_panels
    _take(held, x_, "x", sizeof(floating), 2, False, &x)
    _take(held, w_ih_, "w_ih", sizeof(floating), 2, False, &w_ih)
    _take(held, w_hh_, "w_hh", sizeof(floating), 2, False, &w_hh)
    _take(held, w_hr_, "w_hr", sizeof(floating), 2, False, &w_hr)
    _take(held, peephole_, "peephole", sizeof(floating), 2, False, &peephole)
    _take(held, act_, "act", sizeof(floating), 2, False, &act)
    _take(held, c_prev_, "c_prev", sizeof(floating), 2, False, &c_prev)
    _take(held, h_prev_, "h_prev", sizeof(floating), 2, False, &h_prev)
    _take(held, m_all_, "m_all", sizeof(floating), 2, False, &m_all)
    _take(held, lengths_, "lengths", 0, 1, False, &lengths)
    _take(held, dy_, "dy", sizeof(floating), 2, False, &dy)
    _take(held, dh_n_, "dh_n", sizeof(floating), 2, False, &dh_n)
    _take(held, dx_, "dx", sizeof(floating), 2, True, &dx)
    _take(held, dh0_, "dh0", sizeof(floating), 2, True, &dh0)
    _take(held, dc0_, "dc0", sizeof(floating), 2, True, &dc0)
    _take(held, dw_ih_, "dw_ih", sizeof(floating), 2, True, &dw_ih)
    _take(held, dw_hh_, "dw_hh", sizeof(floating), 2, True, &dw_hh)
    _take(held, db_, "db", sizeof(floating), 1, True, &db)
    _take(held, dw_hr_, "dw_hr", sizeof(floating), 2, True, &dw_hr)
    _take(held, dpeephole_, "dpeephole", sizeof(floating), 2, True, &dpeephole)
    _take(held, dgates_, "dgates", sizeof(floating), 2, True, &dgates)
    _take(held, dgates_step_, "dgates_step", sizeof(floating), 2, True, &dgates_step)
    _take(held, dh_all_, "dh_all", sizeof(floating), 2, True, &dh_all)
    _take(held, dh_step_, "dh_step", sizeof(floating), 2, True, &dh_step)
    _take(held, dm_step_, "dm_step", sizeof(floating), 2, True, &dm_step)
    _take(held, panels_, "panels", sizeof(floating), 1, True, &panels)
    _take(held, ih_panels_, "ih_panels", sizeof(floating), 1, True, &ih_panels)
    _require("x", x)
    _require("dh0", dh0)
    _require("dc0", dc0)
    cdef Py_ssize_t B = dc0.shape[0], H = dc0.shape[1], P = dh0.shape[1], I = x.shape[1]
    cdef Py_ssize_t G = 4 * H, rows = steps * B
    # Initialised only because Cython makes them firstprivate in the parallel region.
    cdef Py_ssize_t s = 0, b = 0, max_length = _max_length(lengths)
    cdef Steps st = _steps(lengths, reverse, batch_first, steps)
    cdef bint projected = w_hr.given
    cdef int tid = 0, team = 1
    # u, q, gcols: this thread's units, features and gate columns outside the time
    # loop; in it, units lu and features lq of rows rb (as in forward).
    cdef Slice r, u, q, gcols, icols, lu, lq, rb
    cdef Py_ssize_t blocks_taken = 0, blocks_done = 0, block = B
    cdef Tile tile
    # Every array's first element, as in forward (the same shape of list, on purpose).
    cdef const floating* x_p = <const floating*>x.data
    cdef const floating* w_ih_p = <const floating*>w_ih.data
    cdef const floating* w_hh_p = <const floating*>w_hh.data
    cdef const floating* w_hr_p = <const floating*>w_hr.data
    cdef const floating* peep_p = <const floating*>peephole.data
    cdef const floating* act_p = <const floating*>act.data
    cdef const floating* c_prev_p = <const floating*>c_prev.data
    cdef const floating* h_prev_p = <const floating*>h_prev.data
    cdef const floating* m_all_p = <const floating*>m_all.data
    cdef const floating* dy_p = <const floating*>dy.data
    cdef const floating* dh_n_p = <const floating*>dh_n.data
    cdef floating* dh0_p = <floating*>dh0.data
    cdef floating* dc0_p = <floating*>dc0.data
    cdef floating* dgates_p = <floating*>dgates.data
    cdef floating* dgates_step_p = <floating*>dgates_step.data
    cdef floating* ds = NULL
    cdef floating* dh_all_p = <floating*>dh_all.data
    cdef floating* dh_step_p = <floating*>dh_step.data
    cdef floating* dm_step_p = <floating*>dm_step.data
    cdef floating* dx_p = <floating*>dx.data
    cdef floating* dw_ih_p = <floating*>dw_ih.data
    cdef floating* dw_hh_p = <floating*>dw_hh.data
    cdef floating* dw_hr_p = <floating*>dw_hr.data
    cdef floating* dpeep_p = <floating*>dpeephole.data
    cdef floating* db_p = <floating*>db.data
    cdef floating* panels_p = <floating*>panels.data
    cdef floating* ih_panels_p = <floating*>ih_panels.data
    # The cells' incoming dh: with a projection always dm (dy and dh_n already in it).
    cdef const floating* cell_dy = dy_p
    cdef const floating* cell_dh_last = dh_n_p
    cdef const floating* cell_dh_rec = dh0_p
    if projected:
        cell_dy = NULL
        cell_dh_last = dm_step_p
        cell_dh_rec = dm_step_p
    cdef lstm_barrier_t barrier
    cdef lstm_poll_t poll
    # IN x (T*B, I), w_ih (4H, I), w_hh (4H, P), w_hr (P, H) or None, peephole (3, H)
    # or None, act (T*B, 4H), c_prev (T*B, H), h_prev (T*B, P), m_all (T*B, H) with
    # w_hr, lengths (B,), dy (T*B, P) or None, dh_n (B, P); OUT dx (T*B, I), dh0 (B, P),
    # dw_ih (4H, I), dw_hh (4H, P), db (4H,), dw_hr (P, H) with w_hr, dpeephole (3, H)
    # with peephole; INOUT dc0 (B, H) (dc_n in); SCRATCH dgates (T*B, 4H), dgates_step
    # (2B, 4H) zeroed, dh_all (T*B, P), dh_step (B, P) and dm_step (B, H) with w_hr, panels
    # and ih_panels or None.
    _check_matrix("x", x, rows, I, True)
    _check_matrix("w_ih", w_ih, G, I, True)
    _check_matrix("w_hh", w_hh, G, P, True)
    _check_matrix("w_hr", w_hr, P, H, projected)
    if not projected and P != H:
        raise ValueError(f"dh0 must be (B, {H}) without w_hr, got (B, {P})")
    _check_matrix("peephole", peephole, 3, H, peephole.given)
    _check_matrix("act", act, rows, G, True)
    _check_matrix("c_prev", c_prev, rows, H, True)
    _check_matrix("h_prev", h_prev, rows, P, True)
    _check_matrix("m_all", m_all, rows, H, projected)
    _check_lengths(lengths, B, steps)
    _check_matrix("dy", dy, rows, P, dy.given)
    _check_matrix("dh_n", dh_n, B, P, True)
    _check_matrix("dx", dx, rows, I, True)
    _check_matrix("dw_ih", dw_ih, G, I, True)
    _check_matrix("dw_hh", dw_hh, G, P, True)
    _check_vector("db", db, G, True)
    _check_matrix("dw_hr", dw_hr, P, H, projected)
    _check_matrix("dpeephole", dpeephole, 3, H, peephole.given)
    _check_matrix("dgates", dgates, rows, G, True)
    _check_matrix("dgates_step", dgates_step, 2 * B, G, True)
    _check_matrix("dh_all", dh_all, rows, P, projected)
    _check_matrix("dh_step", dh_step, B, P, projected)
    _check_matrix("dm_step", dm_step, B, H, projected)
    _check_panels("panels", panels, P, H, sizeof(floating))
    _check_panels("ih_panels", ih_panels, I, H, sizeof(floating))
    lstm_barrier_init(&barrier)
    if rows == 0:
        # Nothing ran (T = 0 or B = 0, however long the other): dh0 = dh_n, dc0
        # keeps dc_n, and the weight gradients are zero.
        _empty_backward(B * P, dh_n_p, dh0_p, G * I, dw_ih_p, G * P, dw_hh_p, G, db_p,
                        P * H if projected else 0, dw_hr_p, 3 * H if peep_p != NULL else 0,
                        dpeep_p)
        return 0
    # Thread 0 polls once per step (about this much work apart) for signals.
    lstm_poll_init(&poll, _may_check_signals(),
                   2.0 * B * G * P + (2.0 * B * P * H if projected else 0) + 40.0 * B * H)
    with nogil, parallel(num_threads=num_threads):
        tid = lstm_omp_thread_num()
        team = lstm_omp_num_threads()
        block = _row_block(B, H, P, team)
        u = _slice(H, ALIGN, tid, team)
        q = _slice(P, ALIGN, tid, team)
        gcols = _slice(G, ALIGN, tid, team)
        rb = _slice(B, 1, 0, 1)
        lu = _slice(H, ALIGN, 0, 1) if split_batch else u
        lq = _slice(P, ALIGN, 0, 1) if split_batch else q
        if panels_p != NULL:
            # Columns q: without split_batch only this thread reads them.
            _pack_column_panels(w_hh_p, G, P, q, panels_p)
            if split_batch:
                lstm_barrier_wait(&barrier, team)
        # With split_batch, blocks of rows as in forward.
        while True:
            if split_batch:
                rb = _next_rows(&blocks_taken, B, block)
                if rb.hi <= rb.lo:
                    break
            for s in range(steps - 1, -1, -1):
                # This step's half of dgates_step: the other half may still be read
                # by another thread's product of the step before (in time: after).
                ds = dgates_step_p + (s % 2) * B * G
                if tid == 0:
                    _poll(&poll, s)
                if projected:
                    _output_grads(s, lq, rb, P, st, dy_p, dh_n_p, dh0_p, dh_all_p, dh_step_p)
                    if not split_batch:
                        lstm_barrier_wait(&barrier, team)
                    if s < max_length and lu.hi > lu.lo and rb.hi > rb.lo:
                        _gemm_pieces(False, False, <int>(rb.hi - rb.lo), <int>(lu.hi - lu.lo), <int>P,
                                     dh_step_p + rb.lo * P, <int>P, w_hr_p + lu.lo,
                                     <int>H, dm_step_p + rb.lo * H + lu.lo, <int>H,
                                     _step_piece_work, _step_piece_min_rows, &poll, tid == 0)
                _backward_units(s, lu, rb, H, st, act_p, c_prev_p, peep_p, cell_dy, cell_dh_last,
                                cell_dh_rec, dc0_p, dgates_p, ds)
                if split_batch:
                    if lstm_poll_raised(&poll):
                        break  # no barrier follows in the loop: each thread may leave at its step
                else:
                    lstm_barrier_wait(&barrier, team)
                    if lstm_poll_stopping(&poll, s):
                        # Decided by thread 0 before this barrier: every thread leaves here.
                        break
                if s < max_length and lq.hi > lq.lo and rb.hi > rb.lo:
                    # Features lq of rows rb of dh_{t-1} = dgates W_hh[:, lq]. Without a
                    # projection the next step's units lu (= lq) read only these: no barrier.
                    if panels_p != NULL:
                        _column_panel_product(panels_p, rb.hi - rb.lo, G, lq, ds + rb.lo * G,
                                              G, dh0_p + rb.lo * P, P)
                    else:
                        _gemm_pieces(False, False, <int>(rb.hi - rb.lo), <int>(lq.hi - lq.lo), <int>G,
                                     ds + rb.lo * G, <int>G, w_hh_p + lq.lo, <int>P,
                                     dh0_p + rb.lo * P + lq.lo, <int>P,
                                     _step_piece_work, _step_piece_min_rows, &poll, tid == 0)
            if not split_batch or lstm_poll_raised(&poll):
                break
            lstm_take(&blocks_done)
        if split_batch:
            _finish_blocks(&blocks_done, (B + block - 1) // block, tid, &poll)
            lstm_barrier_wait(&barrier, team)  # the products below read every row's dgates
        # Skipped once a handler has raised: the loop broke, or thread 0 learnt it
        # since (then reading `raised` only skips work: no barrier follows).
        if not lstm_poll_raised(&poll):
            # Rows that never ran pass dh_n straight through.
            for b in range(B):
                if st.lengths[b] == 0 and q.hi > q.lo:
                    memcpy(dh0_p + b * P + q.lo, dh_n_p + b * P + q.lo,
                           (q.hi - q.lo) * sizeof(floating))
            # The weight and input gradients of all positions at once, each thread its tile.
            if ih_panels_p != NULL:
                icols = _slice(I, ALIGN, tid, team)
                _pack_column_panels(w_ih_p, G, I, icols, ih_panels_p)  # this thread's alone
                _panel_rows(True, ih_panels_p, rows, I, G, icols, dgates_p, G, dx_p, I, &poll,
                            tid == 0)
            else:
                tile = _tile(rows, I, tid, team)
                r, icols = tile.rows, tile.cols
                if icols.hi > icols.lo:
                    _gemm_pieces(False, False, <int>(r.hi - r.lo), <int>(icols.hi - icols.lo),
                                 <int>G, dgates_p + r.lo * G, <int>G, w_ih_p + icols.lo, <int>I,
                                 dx_p + r.lo * I + icols.lo, <int>I, _piece_work,
                                 _piece_min_rows, &poll, tid == 0)
            _weight_gradient(rows, gcols, G, I, dgates_p, x_p, dw_ih_p, &poll, tid == 0)
            _weight_gradient(rows, gcols, G, P, dgates_p, h_prev_p, dw_hh_p, &poll, tid == 0)
            _column_sums(dgates_p, rows, G, gcols, db_p, &poll, tid == 0)
            if projected:
                _gemm_pieces(True, False, <int>(q.hi - q.lo), <int>H, <int>rows, dh_all_p + q.lo,
                             <int>P, m_all_p, <int>H, dw_hr_p + q.lo * H, <int>H, _piece_work,
                             _piece_min_inner, &poll, tid == 0)
            if peep_p != NULL:
                _peephole_grads(dgates_p, act_p, c_prev_p, rows, H, u, dpeep_p, &poll, tid == 0)
    if poll.raised:
        _raise_pending()
    return 0


cdef void _empty_backward(Py_ssize_t n_dh, const floating* dh_n, floating* dh0,
                          Py_ssize_t n_ih, floating* dw_ih, Py_ssize_t n_hh, floating* dw_hh,
                          Py_ssize_t n_b, floating* db, Py_ssize_t n_hr, floating* dw_hr,
                          Py_ssize_t n_peep, floating* dpeep) noexcept nogil:
    """A backward pass over no positions: dh0 = dh_n, every weight gradient 0.

    Each array is given by its size and base pointer (NULL when empty or unused).
    """
    if n_dh > 0 and dh0 != NULL and dh_n != NULL:
        memcpy(dh0, dh_n, n_dh * sizeof(floating))
    _zero(dw_ih, 0, 0, n_ih)
    _zero(dw_hh, 0, 0, n_hh)
    _zero(db, 0, 0, n_b)
    _zero(dw_hr, 0, 0, n_hr)
    _zero(dpeep, 0, 0, n_peep)


# ---------------------------------------------------------------- one step

cdef void _step_rows(Py_ssize_t n, Py_ssize_t I, Py_ssize_t H, Py_ssize_t P,
                     const floating* x, const floating* w_ih, const floating* w_hh,
                     const floating* bias, const floating* w_hr, const floating* peep,
                     const floating* h0, floating* c, floating* h, floating* gates,
                     floating* rec, floating* m, Slice u, Slice q, lstm_barrier_t* barrier,
                     int team) noexcept nogil:
    """One time step of one layer for n rows: the calling thread's hidden units u and,
    with a projection, its outputs q, in a team of `team` threads (u = [0, H) and
    q = [0, P) for one thread; `barrier` is used with a projection in a team).

    x (n, I); h0 (n, P), or NULL for zeros; c (n, H) holds c0 on entry and the
    new c on return; h (n, P) receives the new h. Scratch: gates and rec
    (n, 4H), and m (n, H) with a projection (w_hr not NULL).
    """
    cdef Py_ssize_t G = 4 * H, b, k, lo, width = u.hi - u.lo
    cdef bint single = n == 1 and LSTM_HAVE_PANELS
    if width > 0:
        # A single row reads the weights as they are stored (lstm_gemv): BLAS's GEMM
        # over one row took 1.5x as long (H = 128, float32, on one Zen 4 core).
        if width == H:  # every unit: one product over all 4H rows
            if single:
                _gemv(G, I, w_ih, x, gates)
                if h0 != NULL:
                    _gemv(G, P, w_hh, h0, rec)
            else:
                gemm(False, True, <int>n, <int>G, <int>I, 1, x, <int>I, w_ih, <int>I, 0, gates, <int>G)
                if h0 != NULL:
                    gemm(False, True, <int>n, <int>G, <int>P, 1, h0, <int>P, w_hh, <int>P, 0, rec,
                         <int>G)
        else:  # the rows of units u in each gate
            for k in range(4):
                lo = k * H + u.lo
                if single:
                    _gemv(width, I, w_ih + lo * I, x, gates + lo)
                    if h0 != NULL:
                        _gemv(width, P, w_hh + lo * P, h0, rec + lo)
                else:
                    gemm(False, True, <int>n, <int>width, <int>I, 1, x, <int>I, w_ih + lo * I, <int>I,
                         0, gates + lo, <int>G)
                    if h0 != NULL:
                        gemm(False, True, <int>n, <int>width, <int>P, 1, h0, <int>P, w_hh + lo * P,
                             <int>P, 0, rec + lo, <int>G)
        if h0 == NULL:
            for b in range(n):
                for k in range(4):
                    memset(rec + b * G + k * H + u.lo, 0, width * sizeof(floating))
        for b in range(n):
            _forward_cell(H, u, gates + b * G, rec + b * G, bias, peep, c + b * H, NULL,
                          (m + b * H) if w_hr != NULL else (h + b * P))
        for b in range(n):
            _forward_output(u, c + b * H, (m + b * H) if w_hr != NULL else (h + b * P))
    if w_hr != NULL:
        if team > 1:
            lstm_barrier_wait(barrier, team)  # the projection reads every unit of m
        if q.hi > q.lo:
            if single:
                _gemv(q.hi - q.lo, H, w_hr + q.lo * H, m, h + q.lo)
            else:
                gemm(False, True, <int>n, <int>(q.hi - q.lo), <int>H, 1, m, <int>H, w_hr + q.lo * H,
                     <int>H, 0, h + q.lo, <int>P)


def step(
    *,
    x, w_ih, w_hh, bias, w_hr, peephole, h0, c, h, gates, rec, m,
):
    """One time step of one layer for every row, for streaming inference.

    x (B, I), h0 (B, P); c (B, H) holds c0 on entry and the new c on return,
    h (B, P) receives the new h. Scratch: gates and rec (B, 4H), and with a
    projection (w_hr (P, H), else None) m (B, H). Runs on the calling thread;
    BLAS may use its own threads (no parallel region is open). A batch of
    more than about _step_piece_work flops runs in pieces of rows, with a
    check for signals between pieces.
    """
    cdef Held held
    held.n = 0
    try:
        if _float_size(x, "x") == 4:
            _step(<float*>NULL, &held, x, w_ih, w_hh, bias, w_hr, peephole, h0, c, h, gates, rec, m)
        else:
            _step(<double*>NULL, &held, x, w_ih, w_hh, bias, w_hr, peephole, h0, c, h, gates, rec,
                  m)
    finally:
        _release(&held)


cdef int _step(floating* kind, Held* held, object x_, object w_ih_, object w_hh_, object bias_,
               object w_hr_, object peephole_, object h0_, object c_, object h_, object gates_,
               object rec_, object m_) except -1:
    """step in `floating` (`kind` selects it; never read), its arrays held in `held`."""
    cdef Mat x, w_ih, w_hh, bias, w_hr, peephole, h0, c, h, gates, rec, m
    _take(held, x_, "x", sizeof(floating), 2, False, &x)
    _take(held, w_ih_, "w_ih", sizeof(floating), 2, False, &w_ih)
    _take(held, w_hh_, "w_hh", sizeof(floating), 2, False, &w_hh)
    _take(held, bias_, "bias", sizeof(floating), 1, False, &bias)
    _take(held, w_hr_, "w_hr", sizeof(floating), 2, False, &w_hr)
    _take(held, peephole_, "peephole", sizeof(floating), 2, False, &peephole)
    _take(held, h0_, "h0", sizeof(floating), 2, False, &h0)
    _take(held, c_, "c", sizeof(floating), 2, True, &c)
    _take(held, h_, "h", sizeof(floating), 2, True, &h)
    _take(held, gates_, "gates", sizeof(floating), 2, True, &gates)
    _take(held, rec_, "rec", sizeof(floating), 2, True, &rec)
    _take(held, m_, "m", sizeof(floating), 2, True, &m)
    _require("x", x)
    _require("h", h)
    _require("c", c)
    cdef Py_ssize_t B = c.shape[0], H = c.shape[1], P = h.shape[1], I = x.shape[1]
    cdef Py_ssize_t G = 4 * H, lo, n
    # Pieces of at least _step_piece_min_rows / 2 rows: a huge step still stops
    # within a few tens of milliseconds; repacking the weights per piece costs a
    # few percent at most.
    cdef Py_ssize_t piece = max(_step_piece_min_rows // 2, 1, _step_piece_work // max(
        2 * G * (I + P) + (2 * P * H if m.given else 0), 1))
    cdef lstm_poll_t poll
    cdef Slice whole_h = _slice(H, 1, 0, 1), whole_p = _slice(P, 1, 0, 1)
    # IN x (B, I), w_ih (4H, I), w_hh (4H, P), bias (4H,), w_hr (P, H) or None,
    # peephole (3, H) or None, h0 (B, P); INOUT c (B, H) (c0 in); OUT h (B, P);
    # SCRATCH gates and rec (B, 4H), m (B, H) with w_hr.
    _check_matrix("x", x, B, I, True)
    _check_matrix("w_ih", w_ih, G, I, True)
    _check_matrix("w_hh", w_hh, G, P, True)
    _check_vector("bias", bias, G, True)
    _check_matrix("w_hr", w_hr, P, H, w_hr.given)
    if not w_hr.given and P != H:
        raise ValueError(f"h must be (B, {H}) without w_hr, got (B, {P})")
    _check_matrix("peephole", peephole, 3, H, peephole.given)
    _check_matrix("h0", h0, B, P, True)
    _check_matrix("gates", gates, B, G, True)
    _check_matrix("rec", rec, B, G, True)
    _check_matrix("m", m, B, H, w_hr.given)
    cdef floating* gates_p = <floating*>gates.data
    cdef floating* rec_p = <floating*>rec.data
    cdef floating* c_p = <floating*>c.data
    cdef floating* m_p = <floating*>m.data
    cdef floating* h_p = <floating*>h.data
    cdef const floating* x_p = <const floating*>x.data
    cdef const floating* h0_p = <const floating*>h0.data
    cdef const floating* w_ih_p = <const floating*>w_ih.data
    cdef const floating* w_hh_p = <const floating*>w_hh.data
    cdef const floating* w_hr_p = <const floating*>w_hr.data
    cdef const floating* peep_p = <const floating*>peephole.data
    cdef const floating* bias_p = <floating*>bias.data
    if B == 0:
        return 0
    # The usual streaming step is one piece: then the main-thread test is not even made.
    lstm_poll_init(&poll, B > piece and _may_check_signals(), 0)
    with nogil:
        lo = 0
        while lo < B:
            if lo > 0 and _stop_between_pieces(&poll, True):
                break
            n = min(piece, B - lo)
            _step_rows(n, I, H, P, x_p + lo * I, w_ih_p, w_hh_p, bias_p, w_hr_p, peep_p,
                       h0_p + lo * P, c_p + lo * H, h_p + lo * P, gates_p + lo * G,
                       rec_p + lo * G, m_p + lo * H if m_p != NULL else NULL, whole_h, whole_p,
                       NULL, 1)
            lo += n
    if poll.raised:
        _raise_pending()
    return 0


# ---------------------------------------------------------------- streaming: the step plan

from libc.stdlib cimport free, malloc

cdef enum:
    # The parameter pointers of one layer in Stepper._params.
    P_W_IH = 0
    P_W_HH = 1
    P_B_IH = 2
    P_B_HH = 3
    P_W_HR = 4
    P_PEEP = 5
    P_COUNT = 6


cdef class Stepper:
    """LSTM.step's compiled plan: every layer bound once, one call per time step.

    It holds the module's own parameter arrays (references, not copies), so
    updates made in place are seen at the next step; an array replaced by
    another (load_state_dict) needs a new plan. A call keeps the GIL: it is
    meant for steps of microseconds (LSTM.step uses it up to a work bound),
    where converting arguments and entering Python once per layer would cost
    more than the step. With `split`, a single row's step can share each
    layer's hidden units among a team of threads that never touch Python:
    each call goes the way (team or calling thread alone) whose recent steps
    took less time, and tries the other now and then, so that a team slowed by
    other work on the machine gives way (both ways give the same bits).
    """

    cdef Py_ssize_t n_layers, n_in, n_hidden, n_out, itemsize
    cdef readonly Py_ssize_t max_batch      # the largest batch try_run takes
    cdef readonly bint split                # whether a team may share a single row's step
    cdef double _team_ns, _alone_ns         # recent time of a single row's step each way; 0: none
    cdef readonly Py_ssize_t team_steps, alone_steps  # single rows' steps with split, each way
    cdef object dtype
    cdef list _arrays              # keeps the parameter arrays alive
    cdef size_t* _params           # L * P_COUNT addresses, 0 for a parameter not present
    cdef char* _scratch            # gates, rec (B, 4H), bias (L, 4H), m (B, H)
    cdef Py_ssize_t _scratch_batch
    # The states (h, c) try_run returned at its last two calls, by call parity: one no
    # array outside the plan uses any more is written again (see _new_state).
    cdef object _h0, _c0, _h1, _c1
    cdef int _parity

    def __cinit__(self):
        self._team_ns = self._alone_ns = 0
        self.team_steps = self.alone_steps = 0
        self._params = NULL
        self._scratch = NULL
        self._scratch_batch = 0
        self._parity = 0

    def __dealloc__(self):
        free(self._params)
        free(self._scratch)

    def __init__(self, list layers, Py_ssize_t input_size, Py_ssize_t hidden_size,
                 Py_ssize_t output_size, Py_ssize_t itemsize, Py_ssize_t max_batch=0,
                 bint split=False):
        """layers: per layer (w_ih, w_hh, b_ih, b_hh, w_hr, peephole), None where absent.

        Every array C-contiguous with `itemsize` bytes per value (4: float32,
        8: float64): w_ih (4H, I) (I = output_size past the first layer),
        w_hh (4H, P), b_ih and b_hh (4H,), w_hr (P, H), peephole (3, H).
        `max_batch`: the largest batch `try_run` takes; `split`: whether a
        call's team of threads may share a single row's step.
        """
        cdef Py_ssize_t l, k, G = 4 * hidden_size
        if itemsize not in (4, 8):
            raise ValueError(f"itemsize must be 4 or 8, got {itemsize}")
        if output_size != hidden_size and any(layer[P_W_HR] is None for layer in layers):
            raise ValueError("output_size differs from hidden_size without w_hr")
        self.n_layers, self.n_in, self.n_hidden, self.n_out, self.itemsize = (
            len(layers), input_size, hidden_size, output_size, itemsize)
        self.max_batch = max_batch
        self.split = split
        self.dtype = np.dtype(np.float32 if itemsize == 4 else np.float64)
        self._arrays = []
        self._params = <size_t*>malloc(max(1, self.n_layers * P_COUNT) * sizeof(size_t))
        if self._params == NULL:
            raise MemoryError()
        for l in range(self.n_layers):
            shapes = ((G, input_size if l == 0 else output_size), (G, output_size), (G,), (G,),
                      (output_size, hidden_size), (3, hidden_size))
            for k in range(P_COUNT):
                array = layers[l][k]
                if array is None:
                    if k in (P_W_IH, P_W_HH):
                        raise ValueError(f"layer {l}: {('w_ih', 'w_hh')[k]} is missing")
                    self._params[l * P_COUNT + k] = 0
                    continue
                if (tuple(array.shape) != shapes[k] or array.dtype.itemsize != itemsize
                        or array.dtype.kind != "f" or not array.flags.c_contiguous):
                    raise ValueError(
                        f"layer {l}, parameter {k}: expected a C-contiguous {shapes[k]} array of "
                        f"{itemsize}-byte floats, got {array.shape} {array.dtype}")
                self._arrays.append(array)
                self._params[l * P_COUNT + k] = <size_t>array.ctypes.data

    cdef int _reserve(self, Py_ssize_t batch) except -1:
        cdef Py_ssize_t G = 4 * self.n_hidden
        if batch <= self._scratch_batch:
            return 0
        free(self._scratch)
        self._scratch = <char*>malloc((2 * batch * G + self.n_layers * G + batch * self.n_hidden)
                                      * self.itemsize)
        if self._scratch == NULL:
            self._scratch_batch = 0
            raise MemoryError()
        self._scratch_batch = batch
        return 0

    def try_run(self, x, hx, int threads=1):
        """LSTM.step's usual call in one: x a C-contiguous (B, I) array of the plan's
        dtype with 1 <= B <= max_batch, hx None or a tuple (h0, c0) of C-contiguous
        arrays of that dtype, (L, B, P) and (L, B, H). Returns (y, (h, c)) as LSTM.step
        does, y = h[L - 1]; None for any other arguments, which LSTM.step then checks
        and converts. `threads`: the team a single row's step may use with `split`
        (ensure_threads(threads) must have passed). BLAS must be bound (see run_d)."""
        cdef Held held
        held.n = 0
        try:
            return _try_run(self, &held, x, hx, threads)
        finally:
            _release(&held)

    def run(self, x, h0, c0, h, c, int threads=1):
        """run_f or run_d, by the plan's dtype."""
        if self.itemsize == 4:
            self.run_f(x, h0, c0, h, c, threads)
        else:
            self.run_d(x, h0, c0, h, c, threads)

    def run_f(self, const float[:, ::1] x not None, const float[:, :, ::1] h0,
              const float[:, :, ::1] c0, float[:, :, ::1] h not None, float[:, :, ::1] c not None,
              int threads=1):
        """One step of every layer in float32 (see run_d)."""
        _run_plan(self, x, h0, c0, h, c, threads)

    def run_d(self, const double[:, ::1] x not None, const double[:, :, ::1] h0,
              const double[:, :, ::1] c0, double[:, :, ::1] h not None, double[:, :, ::1] c not None,
              int threads=1):
        """One step of every layer: x (B, I); h0 (L, B, P) and c0 (L, B, H), None for
        zeros; writes the new state into h (L, B, P) and c (L, B, H). The output of
        the last layer is h[L - 1]. `threads`: as in try_run."""
        _run_plan(self, x, h0, c0, h, c, threads)


cdef bint _view(Held* held, object a, Py_ssize_t itemsize, int ndim, bint writable) except -1:
    """Whether `a` is a C-contiguous array of `ndim` dimensions of `itemsize`-byte floats,
    writable when `writable`; its buffer is then held in `held`. A raw buffer, not a typed
    memoryview: this is try_run's hot path (about 30 ns a buffer against 100)."""
    cdef Py_buffer* view = &held.views[held.n]
    try:
        PyObject_GetBuffer(a, view,
                           PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (PyBUF_WRITABLE if writable else 0))
    except (BufferError, TypeError, ValueError):
        return False
    held.n += 1
    return view.ndim == ndim and _holds(view, itemsize)


cdef inline bint _state_shape(const Py_buffer* view, Py_ssize_t L, Py_ssize_t B,
                              Py_ssize_t n) noexcept:
    return view.shape[0] == L and view.shape[1] == B and view.shape[2] == n


cdef object _try_run(Stepper plan, Held* held, object x, object hx, int threads):
    """Stepper.try_run, its buffers held in `held`."""
    cdef Py_ssize_t B, L = plan.n_layers, itemsize = plan.itemsize
    cdef const Py_buffer* xv = &held.views[0]
    cdef const Py_buffer* h0v = &held.views[1]
    cdef const Py_buffer* c0v = &held.views[2]
    cdef bint given = hx is not None
    if type(x) is not np.ndarray or not _view(held, x, itemsize, 2, False):
        return None
    B = xv.shape[0]
    if not 1 <= B <= plan.max_batch or xv.shape[1] != plan.n_in:
        return None
    if given:
        if type(hx) is not tuple or len(hx) != 2:
            return None
        h0, c0 = hx
        if (type(h0) is not np.ndarray or type(c0) is not np.ndarray
                or not _view(held, h0, itemsize, 3, False) or not _view(held, c0, itemsize, 3, False)
                or not _state_shape(h0v, L, B, plan.n_out) or not _state_shape(c0v, L, B, plan.n_hidden)):
            return None
    h, c = _new_state(plan, B)
    _view(held, h, itemsize, 3, True)
    _view(held, c, itemsize, 3, True)
    plan._reserve(B)
    _run_step(plan, B, xv.buf, h0v.buf if given else NULL, c0v.buf if given else NULL,
              held.views[held.n - 2].buf, held.views[held.n - 1].buf, threads)
    return h[L - 1], (h, c)


# Reference counts tell an array no one uses only on CPython (elsewhere, as under PyPy's
# emulation of the C API, _new_state always allocates).
cdef bint _exact_refcounts = sys.implementation.name == "cpython"


cdef tuple _new_state(Stepper plan, Py_ssize_t B):
    """Arrays (h, c) of (L, B, P) and (L, B, H) for try_run's new state: those it returned
    two calls ago when no array outside the plan uses them any more (the usual loop feeds
    each step the state of the last one and drops the one before), else new ones, kept
    for the call after next. Saves two allocations a step (about 0.3 us); an array still
    in use anywhere, as a view or a buffer, is never written."""
    cdef object h = plan._h1 if plan._parity else plan._h0
    cdef object c = plan._c1 if plan._parity else plan._c0
    if (h is None or not _exact_refcounts or Py_REFCNT(h) != 2 or Py_REFCNT(c) != 2
            or (<Py_ssize_t>h.shape[1]) != B):  # 2: the plan's and this function's
        h = np.empty((plan.n_layers, B, plan.n_out), plan.dtype)
        c = np.empty((plan.n_layers, B, plan.n_hidden), plan.dtype)
        if plan._parity:
            plan._h1, plan._c1 = h, c
        else:
            plan._h0, plan._c0 = h, c
    plan._parity ^= 1
    return h, c


cdef int _check_state(str name, const floating[:, :, ::1] a, Py_ssize_t L, Py_ssize_t B,
                      Py_ssize_t n) except -1:
    if not (a.shape[0] == L and a.shape[1] == B and a.shape[2] == n):
        raise ValueError(f"{name} must be ({L}, {B}, {n}), got ({a.shape[0]}, {a.shape[1]}, {a.shape[2]})")
    return 0


cdef int _run_plan(Stepper plan, const floating[:, ::1] x, const floating[:, :, ::1] h0,
                   const floating[:, :, ::1] c0, floating[:, :, ::1] h,
                   floating[:, :, ::1] c, int threads) except -1:
    """Check the arrays of one step against the plan, then run it (see Stepper.run_d)."""
    cdef Py_ssize_t B = x.shape[0], L = plan.n_layers
    if sizeof(floating) != plan.itemsize:
        raise TypeError(f"this plan computes with {plan.itemsize}-byte floats")
    if x.shape[1] != plan.n_in:
        raise ValueError(f"x must be (B, {plan.n_in}), got (B, {x.shape[1]})")
    _check_state("h", h, L, B, plan.n_out)
    _check_state("c", c, L, B, plan.n_hidden)
    if h0 is not None:
        _check_state("h0", h0, L, B, plan.n_out)
    if c0 is not None:
        _check_state("c0", c0, L, B, plan.n_hidden)
    plan._reserve(B)
    _run_step(plan, B, &x[0, 0] if B else NULL, &h0[0, 0, 0] if h0 is not None and B else NULL,
              &c0[0, 0, 0] if c0 is not None and B else NULL, &h[0, 0, 0] if B else NULL,
              &c[0, 0, 0] if B else NULL, threads)
    return 0


cdef struct StepCall:
    # One step of every layer, as the threads of its team see it (see _step_team).
    Py_ssize_t B, L, H, P
    Py_ssize_t n_in         # I of the first layer (not I: C's complex.h defines it)
    int itemsize
    const size_t* params    # Stepper._params
    char* scratch           # Stepper._scratch
    const void* x
    const void* h0          # NULL for zeros
    void* h                 # c holds c0 on entry
    void* c
    lstm_barrier_t barrier


cdef void _run_step(Stepper plan, Py_ssize_t B, const void* x, const void* h0, const void* c0,
                    void* h, void* c, int threads) noexcept:
    """Every layer of one step; a single row's may run on a team of `threads` (see
    Stepper). BLAS is held at one thread meanwhile, when the step calls it."""
    cdef Py_ssize_t L = plan.n_layers, H = plan.n_hidden, G = 4 * H, l
    cdef Py_ssize_t size = plan.itemsize
    cdef char* bias = plan._scratch + 2 * B * G * size
    cdef const char* b_ih
    cdef const char* b_hh
    cdef StepCall call
    cdef int saved = 1
    if B == 0:
        return
    for l in range(L):  # b_ih + b_hh of every layer, read now: in-place updates are seen
        b_ih = <const char*>plan._params[l * P_COUNT + P_B_IH]
        b_hh = <const char*>plan._params[l * P_COUNT + P_B_HH]
        _bias_sum(bias + l * G * size, b_ih, b_hh, G, size)
    if c0 != NULL:
        memcpy(c, c0, L * B * H * size)
    else:
        memset(c, 0, L * B * H * size)
    call.B, call.L, call.n_in, call.H, call.P = B, L, plan.n_in, H, plan.n_out
    call.itemsize = <int>size
    call.params = plan._params
    call.scratch = plan._scratch
    call.x, call.h0, call.h, call.c = x, h0, h, c
    lstm_barrier_init(&call.barrier)
    # A single row's products never call BLAS (_step_rows): its thread count is then left
    # alone, with no call to set it and set it back.
    if _blas_get_threads != NULL and not (B == 1 and LSTM_HAVE_PANELS):
        saved = _blas_get_threads()
        if saved != 1:
            _blas_set_threads(1)
    if B == 1 and plan.split and threads > 1:
        _run_single(plan, threads, &call)
    else:
        lstm_run_team(1, _step_team, &call, LSTM_TEAM_ALL)
    if saved != 1:
        _blas_set_threads(saved)


cdef void _run_single(Stepper plan, int threads, StepCall* call) noexcept:
    """A single row's step on the team or on the calling thread alone, whichever way took
    less time recently; the other way every 16th step, to follow the machine's load.
    A way's recent time moves a quarter of the way to each new step's (counted at most
    4x the recent time: one step delayed by a preemption barely moves it), and drops at
    once to a step under half of it (the first steps of a way, while its threads start
    and its caches fill, take far longer than the later ones)."""
    cdef bint team
    cdef double* recent
    cdef double took
    cdef int64_t start
    if plan._team_ns == 0 or plan._alone_ns == 0:
        team = plan._team_ns == 0  # each way once first
    else:
        team = plan._team_ns <= plan._alone_ns
        if (plan.team_steps + plan.alone_steps) % 16 == 15:
            team = not team
    if team:
        plan.team_steps += 1
        recent = &plan._team_ns
    else:
        plan.alone_steps += 1
        recent = &plan._alone_ns
    start = lstm_now_ns()
    lstm_run_team(threads if team else 1, _step_team, call, LSTM_TEAM_ALL)
    took = max(1.0, <double>(lstm_now_ns() - start))
    if recent[0] == 0 or took < recent[0] / 2:
        recent[0] = took
    else:
        recent[0] += (min(took, 4 * recent[0]) - recent[0]) / 4


cdef void _bias_sum(char* out, const char* b_ih, const char* b_hh, Py_ssize_t G,
                    Py_ssize_t size) noexcept:
    """out = b_ih + b_hh (either NULL for none) of G values of `size` bytes."""
    cdef Py_ssize_t j
    if b_ih != NULL and b_hh != NULL:
        # Each type its own loop, so that the compiler vectorises it.
        if size == 4:
            for j in range(G):
                (<float*>out)[j] = (<const float*>b_ih)[j] + (<const float*>b_hh)[j]
        else:
            for j in range(G):
                (<double*>out)[j] = (<const double*>b_ih)[j] + (<const double*>b_hh)[j]
    elif b_ih != NULL or b_hh != NULL:
        memcpy(out, b_ih if b_ih != NULL else b_hh, G * size)
    else:
        memset(out, 0, G * size)


cdef void _step_team(void* arg, int tid, int team) noexcept nogil:
    """A thread's share of a StepCall: its slice of every layer's units (lstm_run_team)."""
    cdef StepCall* call = <StepCall*>arg
    if call.itemsize == 4:
        _step_layers(<float*>NULL, call, tid, team)
    else:
        _step_layers(<double*>NULL, call, tid, team)


cdef void _step_layers(floating* kind, StepCall* call, int tid, int team) noexcept nogil:
    """_step_team in `floating` (`kind` selects it; never read)."""
    cdef Py_ssize_t B = call.B, H = call.H, P = call.P, G = 4 * H, l
    cdef Slice u = _slice(H, ALIGN, tid, team), q = _slice(P, ALIGN, tid, team)
    cdef floating* gates = <floating*>call.scratch
    cdef floating* rec = gates + B * G
    cdef floating* bias = rec + B * G
    cdef floating* m = bias + call.L * G
    cdef const floating* x = <const floating*>call.x
    cdef const floating* h0 = <const floating*>call.h0
    cdef floating* h = <floating*>call.h
    cdef floating* c = <floating*>call.c
    cdef const size_t* p
    for l in range(call.L):
        if l > 0 and team > 1:
            # Layer l reads all of layer l - 1's h, and m is reused.
            lstm_barrier_wait(&call.barrier, team)
        p = call.params + l * P_COUNT
        _step_rows(B, call.n_in if l == 0 else P, H, P,
                   x if l == 0 else <const floating*>(h + (l - 1) * B * P),
                   <const floating*>p[P_W_IH], <const floating*>p[P_W_HH], bias + l * G,
                   <const floating*>p[P_W_HR], <const floating*>p[P_PEEP],
                   h0 + l * B * P if h0 != NULL else NULL, c + l * B * H, h + l * B * P,
                   gates, rec, m, u, q, &call.barrier, team)


# ---------------------------------------------------------------- test hooks
#
# The small building blocks, callable from Python so that the tests can compare
# each with NumPy directly (as scikit-learn tests its _cython_blas): the
# row-major BLAS wrapper of _blas.pxd, and the packed-panel products.

def _gemm(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] a not None,
          const floating[:, ::1] b not None, double beta, floating[:, ::1] c not None):
    """c = alpha op(a) op(b) + beta c through _blas.gemm, row-major; for tests only."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    if (a.shape[1] if trans_a else a.shape[0]) != m or (b.shape[1] if trans_b else b.shape[0]) != k \
            or (b.shape[0] if trans_b else b.shape[1]) != n:
        raise ValueError("op(a) (m, k), op(b) (k, n) and c (m, n) do not fit")
    gemm(trans_a, trans_b, <int>m, <int>n, <int>k, <floating>alpha, _cptr(a), <int>max(a.shape[1], 1),
         _cptr(b), <int>max(b.shape[1], 1), <floating>beta, _ptr(c), <int>max(n, 1))


def _gemv_product(const floating[:, ::1] w not None, const floating[::1] v not None,
                  floating[::1] out not None):
    """out = w v through the in-place product of a single row (lstm_gemv); for tests only."""
    if not LSTM_HAVE_PANELS:
        raise ValueError("this build has no vector products")
    if v.shape[0] != w.shape[1] or out.shape[0] != w.shape[0]:
        raise ValueError("w (N, K), v (K,) and out (N,) do not fit")
    _gemv(w.shape[0], w.shape[1], &w[0, 0] if w.size else NULL, &v[0] if v.size else NULL,
          &out[0] if out.size else NULL)


def _outer_product(const floating[:, ::1] a not None, const floating[:, ::1] x not None,
                   floating[:, ::1] out not None, Py_ssize_t lo, Py_ssize_t hi):
    """out[lo:hi] = (a^T x)[lo:hi] through the weight gradients' product (lstm_outer, in
    blocks of positions); for tests only. x's width must be whole vectors."""
    cdef Slice g
    cdef lstm_poll_t poll
    cdef Py_ssize_t N = x.shape[1]
    if not LSTM_HAVE_PANELS:
        raise ValueError("this build has no vector products")
    if x.shape[0] != a.shape[0] or out.shape[0] != a.shape[1] or out.shape[1] != N \
            or N == 0 or N % (64 // sizeof(floating)) or not 0 <= lo <= hi <= a.shape[1]:
        raise ValueError("a (K, G), x (K, N), out (G, N) and the rows do not fit")
    g.lo = lo
    g.hi = hi
    lstm_poll_init(&poll, 0, 1.0)
    _outer_pieces(a.shape[0], g, N, &a[0, 0] if a.size else NULL, a.shape[1],
                  &x[0, 0] if x.size else NULL, N, &out[0, 0], N, &poll, True)


def _panel_products(const floating[:, ::1] w_hh not None, const floating[:, ::1] h not None,
                    floating[:, ::1] rec not None, const floating[:, ::1] dgates not None,
                    floating[:, ::1] dh not None, Py_ssize_t lo, Py_ssize_t hi):
    """Through packed panels, for tests only: rec[:, g*H + j] = h W_hh[g*H + j]^T for the
    units j in [lo, hi) (the forward's product) and dh[:, j] = dgates W_hh[:, j] for the
    columns j in [lo, hi) (the backward's); lo a multiple of the panel width."""
    cdef Py_ssize_t G = w_hh.shape[0], H = G // 4, P = w_hh.shape[1], B = h.shape[0]
    cdef Py_ssize_t width = 64 // sizeof(floating)
    cdef Slice u
    cdef floating* panels
    if not LSTM_HAVE_PANELS:
        raise ValueError("this build has no packed-panel products")
    if G % 4 or h.shape[1] != P or rec.shape[0] != B or rec.shape[1] != G or dgates.shape[1] != G \
            or dh.shape[0] != dgates.shape[0] or dh.shape[1] != P or lo % width or not 0 <= lo <= hi:
        raise ValueError("the arrays or the slice do not fit")
    u.lo = lo
    u.hi = min(hi, H)
    panels = <floating*>malloc(max(_packed_size(H, P, sizeof(floating)), 1) * sizeof(floating))
    if panels == NULL:
        raise MemoryError()
    _pack_panels(&w_hh[0, 0], H, P, u, panels)
    _panel_product(panels, B, H, P, u, _cptr(h), P, _ptr(rec), 4 * H)
    free(panels)
    u.hi = min(hi, P)
    panels = <floating*>malloc(max(_packed_size(P, H, sizeof(floating)), 1) * sizeof(floating))
    if panels == NULL:
        raise MemoryError()
    _pack_column_panels(&w_hh[0, 0], G, P, u, panels)
    _column_panel_product(panels, dgates.shape[0], G, u, _cptr(dgates), G, _ptr(dh), P)
    free(panels)
