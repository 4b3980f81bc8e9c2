# Batched LSTM forward and backward kernels (one layer, one direction).
#
# Layout. Gates are stored in PyTorch's order i, f, g, o: a row of 4H values
# [i(0:H) | f(H:2H) | g(2H:3H) | o(3H:4H)]. Every per-position array (x, y,
# gates, h_prev, c_prev, dgates) is a matrix of T*B rows in x's own layout:
# position (t, b) is row t*B + b (time-major) or b*T + t (batch_first), so the
# large GEMMs run over all rows at once and batch_first costs no copy.
#
# Lengths and reverse. At step s row b processes time t = s (forward) or
# t = lengths[b]-1-s (reverse) while s < lengths[b]; after that its state is
# frozen. The positions no step visits are exactly (s, b) for s >= lengths[b],
# which is where y and the gradients are zeroed.
#
# Threads. BLAS is called only outside parallel regions (threaded BLAS is then
# safe); the pointwise passes are OpenMP loops over (row, chunk of hidden units).
#
# The Python layer (lstm_c.functional) validates and allocates; these functions
# only compute, with the GIL released.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, tanh, tanhf
from libc.string cimport memset

from _blas cimport gemm

cdef extern from "lstm_omp.h" nogil:
    int lstm_omp_enabled()
    int lstm_omp_max_threads()

cdef enum:
    # Hidden units per pointwise work item: rows are split too so that B = 1
    # still spreads over the threads.
    CHUNK = 64
    # Below this many cells per step a parallel region costs more than it saves.
    MIN_PARALLEL_CELLS = 2048


def openmp_enabled() -> bool:
    """Whether this build of lstm_c was compiled with OpenMP."""
    return bool(lstm_omp_enabled())


def omp_max_threads() -> int:
    """OpenMP's default thread count (follows OMP_NUM_THREADS); 1 without OpenMP."""
    return lstm_omp_max_threads()


cdef inline floating _sigmoid(floating v) noexcept nogil:
    # exp(-v) overflows to inf for v << 0, giving exactly 0; NaN stays NaN.
    cdef floating one = 1
    if floating is float:
        return one / (one + expf(-v))
    else:
        return one / (one + exp(-v))


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


cdef inline const floating* _cptr(const floating[:, ::1] m) noexcept nogil:
    """The first element, or NULL for an empty matrix (never indexed out of bounds)."""
    return &m[0, 0] if m.shape[0] and m.shape[1] else NULL


cdef inline floating* _ptr(floating[:, ::1] m) noexcept nogil:
    return &m[0, 0] if m.shape[0] and m.shape[1] else NULL


cdef inline Py_ssize_t _max_length(const Py_ssize_t[::1] lengths) noexcept nogil:
    cdef Py_ssize_t b, m = 0
    for b in range(lengths.shape[0]):
        if lengths[b] > m:
            m = lengths[b]
    return m


cdef inline int _pointwise_threads(Py_ssize_t cells, int num_threads) noexcept nogil:
    return num_threads if cells >= MIN_PARALLEL_CELLS else 1


cdef void _forward_cells(
    Py_ssize_t item, Py_ssize_t nchunk, Py_ssize_t s, Py_ssize_t H,
    const Py_ssize_t* lengths, bint reverse, Py_ssize_t stride_t, Py_ssize_t stride_b,
    floating* gates, const floating* rec, const floating* bias,
    floating* h, floating* c, floating* y, floating* h_prev, floating* c_prev,
) noexcept nogil:
    """One row's chunk of hidden units at step s: activations, new state, output."""
    cdef Py_ssize_t b = item // nchunk
    cdef Py_ssize_t j0 = (item % nchunk) * CHUNK
    cdef Py_ssize_t j1 = min(j0 + CHUNK, H)
    cdef Py_ssize_t length = lengths[b]
    cdef Py_ssize_t t, p, j
    cdef floating* g
    cdef const floating* r
    cdef floating gi, gf, gg, go, c_old, c_new, h_new
    if s >= length:
        p = s * stride_t + b * stride_b
        memset(y + p * H + j0, 0, (j1 - j0) * sizeof(floating))
        if h_prev != NULL:
            # Read by the dW_hh GEMM against zero gate gradients: must not be garbage.
            memset(h_prev + p * H + j0, 0, (j1 - j0) * sizeof(floating))
        return
    t = length - 1 - s if reverse else s
    p = t * stride_t + b * stride_b
    g = gates + p * 4 * H
    r = rec + b * 4 * H
    for j in range(j0, j1):
        gi = _sigmoid(g[j] + r[j] + bias[j])
        gf = _sigmoid(g[H + j] + r[H + j] + bias[H + j])
        gg = _tanh(g[2 * H + j] + r[2 * H + j] + bias[2 * H + j])
        go = _sigmoid(g[3 * H + j] + r[3 * H + j] + bias[3 * H + j])
        c_old = c[b * H + j]
        c_new = gf * c_old + gi * gg
        h_new = go * _tanh(c_new)
        if h_prev != NULL:
            # Training: the activations replace the pre-activations in place.
            g[j] = gi
            g[H + j] = gf
            g[2 * H + j] = gg
            g[3 * H + j] = go
            c_prev[p * H + j] = c_old
            h_prev[p * H + j] = h[b * H + j]
        c[b * H + j] = c_new
        h[b * H + j] = h_new
        y[p * H + j] = h_new


def forward(
    const floating[:, ::1] x, const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
    const floating[::1] bias, floating[:, ::1] h, floating[:, ::1] c,
    const Py_ssize_t[::1] lengths, bint reverse, bint batch_first, Py_ssize_t steps,
    floating[:, ::1] gates, floating[:, ::1] y,
    floating[:, ::1] h_prev, floating[:, ::1] c_prev, floating[:, ::1] rec,
    int num_threads,
):
    """Run one layer and direction over the sequence.

    x (T*B, I) and y (T*B, H) are in x's layout (see the file header); h and c
    (B, H) hold h0/c0 on entry and h_n/c_n on return. gates (T*B, 4H) and rec
    (B, 4H) are scratch. For training, h_prev and c_prev (T*B, H) receive the
    state entering each position and gates the activations i, f, g, o; for
    inference pass None for both.
    """
    cdef Py_ssize_t B = h.shape[0], H = h.shape[1], I = x.shape[1]
    cdef Py_ssize_t G = 4 * H, rows = steps * B
    cdef Py_ssize_t stride_t = 1 if batch_first else B
    cdef Py_ssize_t stride_b = steps if batch_first else 1
    cdef Py_ssize_t nchunk = (H + CHUNK - 1) // CHUNK
    cdef Py_ssize_t items = B * nchunk
    cdef Py_ssize_t s, item, max_length = _max_length(lengths)
    cdef int threads = _pointwise_threads(B * H, num_threads)
    cdef floating* h_prev_p = NULL
    cdef floating* c_prev_p = NULL
    if h_prev is not None:
        h_prev_p = _ptr(h_prev)
        c_prev_p = _ptr(c_prev)
    if rows == 0:
        return
    with nogil:
        # The input projection of every position at once.
        gemm(False, True, <int>rows, <int>G, <int>I, 1, _cptr(x), <int>I,
             _cptr(w_ih), <int>I, 0, _ptr(gates), <int>G)
        for s in range(steps):
            if s < max_length:
                gemm(False, True, <int>B, <int>G, <int>H, 1, _ptr(h), <int>H,
                     _cptr(w_hh), <int>H, 0, _ptr(rec), <int>G)
            for item in prange(items, schedule="static", num_threads=threads):
                _forward_cells(item, nchunk, s, H, &lengths[0], reverse, stride_t, stride_b,
                               _ptr(gates), _ptr(rec), &bias[0], _ptr(h), _ptr(c), _ptr(y),
                               h_prev_p, c_prev_p)


cdef void _backward_cells(
    Py_ssize_t item, Py_ssize_t nchunk, Py_ssize_t s, Py_ssize_t H,
    const Py_ssize_t* lengths, bint reverse, Py_ssize_t stride_t, Py_ssize_t stride_b,
    const floating* act, const floating* c_prev, const floating* dy,
    const floating* dh_n, const floating* dh_rec, floating* dc,
    floating* dgates, floating* dgates_step,
) noexcept nogil:
    """One row's chunk at step s: gate gradients from dh and the carried dc."""
    cdef Py_ssize_t b = item // nchunk
    cdef Py_ssize_t j0 = (item % nchunk) * CHUNK
    cdef Py_ssize_t j1 = min(j0 + CHUNK, H)
    cdef Py_ssize_t length = lengths[b]
    cdef Py_ssize_t t, p, j, k
    cdef const floating* a
    cdef const floating* dh_in
    cdef floating* dg
    cdef floating* ds
    cdef floating one = 1
    cdef floating gi, gf, gg, go, c_old, tc, dh, d_c, d_o
    if s >= length:
        p = s * stride_t + b * stride_b
        for k in range(4):
            memset(dgates + p * 4 * H + k * H + j0, 0, (j1 - j0) * sizeof(floating))
        return
    t = length - 1 - s if reverse else s
    p = t * stride_t + b * stride_b
    a = act + p * 4 * H
    dg = dgates + p * 4 * H
    ds = dgates_step + b * 4 * H
    # dh_n enters at the row's last valid step; before it, the recurrent GEMM's result.
    dh_in = (dh_n if s == length - 1 else dh_rec) + b * H
    for j in range(j0, j1):
        gi = a[j]
        gf = a[H + j]
        gg = a[2 * H + j]
        go = a[3 * H + j]
        c_old = c_prev[p * H + j]
        tc = _tanh(gf * c_old + gi * gg)
        dh = dh_in[j]
        if dy != NULL:
            dh = dh + dy[p * H + j]
        d_o = dh * tc
        d_c = dc[b * H + j] + dh * go * (one - tc * tc)
        dc[b * H + j] = d_c * gf
        dg[j] = d_c * gg * gi * (one - gi)
        dg[H + j] = d_c * c_old * gf * (one - gf)
        dg[2 * H + j] = d_c * gi * (one - gg * gg)
        dg[3 * H + j] = d_o * go * (one - go)
        ds[j] = dg[j]
        ds[H + j] = dg[H + j]
        ds[2 * H + j] = dg[2 * H + j]
        ds[3 * H + j] = dg[3 * H + j]


cdef void _column_sums(const floating* m, Py_ssize_t rows, Py_ssize_t cols,
                       floating* out, int num_threads) noexcept nogil:
    """out[j] = sum over rows of m[:, j], in a fixed order (reproducible)."""
    cdef Py_ssize_t nblock = (cols + CHUNK - 1) // CHUNK
    cdef Py_ssize_t block, r, j, j0, j1
    for block in prange(nblock, schedule="static", num_threads=num_threads):
        j0 = block * CHUNK
        j1 = min(j0 + CHUNK, cols)
        for j in range(j0, j1):
            out[j] = 0
        for r in range(rows):
            for j in range(j0, j1):
                out[j] = out[j] + m[r * cols + j]


def backward(
    const floating[:, ::1] x, const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
    const floating[:, ::1] act, const floating[:, ::1] c_prev, const floating[:, ::1] h_prev,
    const Py_ssize_t[::1] lengths, bint reverse, bint batch_first, Py_ssize_t steps,
    const floating[:, ::1] dy, const floating[:, ::1] dh_n,
    floating[:, ::1] dx, floating[:, ::1] dh0, floating[:, ::1] dc0,
    floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db,
    floating[:, ::1] dgates, floating[:, ::1] dgates_step,
    int num_threads,
):
    """Backpropagate through one layer and direction.

    act, c_prev, h_prev come from a training forward. dy (T*B, H) may be None
    (zeros). dc0 (B, H) holds dc_n on entry and the carried dc throughout.
    dgates (T*B, 4H) is scratch; dgates_step (B, 4H) is scratch that must be
    zero on entry. dh0 also serves as the per-step recurrent gradient.
    """
    cdef Py_ssize_t B = dh0.shape[0], H = dh0.shape[1], I = x.shape[1]
    cdef Py_ssize_t G = 4 * H, rows = steps * B
    cdef Py_ssize_t stride_t = 1 if batch_first else B
    cdef Py_ssize_t stride_b = steps if batch_first else 1
    cdef Py_ssize_t nchunk = (H + CHUNK - 1) // CHUNK
    cdef Py_ssize_t items = B * nchunk
    cdef Py_ssize_t s, item, b, j, max_length = _max_length(lengths)
    cdef int threads = _pointwise_threads(B * H, num_threads)
    cdef const floating* dy_p = NULL
    if dy is not None:
        dy_p = _cptr(dy)
    with nogil:
        for s in range(steps - 1, -1, -1):
            for item in prange(items, schedule="static", num_threads=threads):
                _backward_cells(item, nchunk, s, H, &lengths[0], reverse, stride_t, stride_b,
                                _cptr(act), _cptr(c_prev), dy_p, _cptr(dh_n), _ptr(dh0),
                                _ptr(dc0), _ptr(dgates), _ptr(dgates_step))
            if s < max_length:
                gemm(False, False, <int>B, <int>H, <int>G, 1, _ptr(dgates_step), <int>G,
                     _cptr(w_hh), <int>H, 0, _ptr(dh0), <int>H)
        # Rows that never ran pass dh_n straight through.
        for b in range(B):
            if lengths[b] == 0:
                for j in range(H):
                    dh0[b, j] = dh_n[b, j]
        # The weight and input gradients of all positions at once.
        gemm(False, False, <int>rows, <int>I, <int>G, 1, _cptr(dgates), <int>G,
             _cptr(w_ih), <int>I, 0, _ptr(dx), <int>I)
        gemm(True, False, <int>G, <int>I, <int>rows, 1, _cptr(dgates), <int>G,
             _cptr(x), <int>I, 0, _ptr(dw_ih), <int>I)
        gemm(True, False, <int>G, <int>H, <int>rows, 1, _cptr(dgates), <int>G,
             _cptr(h_prev), <int>H, 0, _ptr(dw_hh), <int>H)
        _column_sums(_cptr(dgates), rows, G, &db[0], _pointwise_threads(rows * H, num_threads))
