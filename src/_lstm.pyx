# Batched LSTM forward and backward kernels (one layer, one direction).
#
# Math (PyTorch's gate order i, f, g, o; peepholes p (3, H) in order i, f, o):
#   a = x_t W_ih^T + h_{t-1} W_hh^T + b
#   i = sig(a_i + p_i c_{t-1}), f = sig(a_f + p_f c_{t-1}), g = tanh(a_g)
#   c_t = f c_{t-1} + i g,  o = sig(a_o + p_o c_t),  m_t = o tanh(c_t)
#   h_t = m_t W_hr^T with a projection W_hr (P, H), else h_t = m_t.
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
# Threads. BLAS is called only outside parallel regions (threaded BLAS is then
# safe); the pointwise passes are OpenMP loops over (row, chunk of units).
#
# The Python layer (lstm_c.functional) validates and allocates; these functions
# only compute, with the GIL released.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, tanh, tanhf
from libc.string cimport memcpy, memset

from _blas cimport gemm

cdef extern from "lstm_omp.h" nogil:
    int lstm_omp_enabled()
    int lstm_omp_max_threads()

cdef enum:
    # Units per pointwise work item: rows are split too so that B = 1 still
    # spreads over the threads.
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
    """The first element, or NULL for None or an empty matrix (never out of bounds)."""
    if m is None or m.shape[0] == 0 or m.shape[1] == 0:
        return NULL
    return &m[0, 0]


cdef inline floating* _ptr(floating[:, ::1] m) noexcept nogil:
    if m is None or m.shape[0] == 0 or m.shape[1] == 0:
        return NULL
    return &m[0, 0]


cdef inline void _zero(floating* row, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    if row != NULL:
        memset(row + j0, 0, (j1 - j0) * sizeof(floating))


cdef inline Py_ssize_t _max_length(const Py_ssize_t[::1] lengths) noexcept nogil:
    cdef Py_ssize_t b, m = 0
    for b in range(lengths.shape[0]):
        if lengths[b] > m:
            m = lengths[b]
    return m


cdef inline int _pointwise_threads(Py_ssize_t cells, int num_threads) noexcept nogil:
    return num_threads if cells >= MIN_PARALLEL_CELLS else 1


cdef struct Steps:
    # Where row b is at step s: see "Lengths and reverse" above.
    const Py_ssize_t* lengths
    bint reverse
    Py_ssize_t stride_t     # position rows between consecutive times
    Py_ssize_t stride_b     # position rows between consecutive batch rows


cdef inline Steps _steps(const Py_ssize_t[::1] lengths, bint reverse, bint batch_first,
                         Py_ssize_t steps) noexcept nogil:
    cdef Steps st
    st.lengths = &lengths[0] if lengths.shape[0] else NULL
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

cdef void _forward_cells(
    Py_ssize_t item, Py_ssize_t nchunk, Py_ssize_t s, Py_ssize_t H, Steps st,
    floating* gates, const floating* rec, const floating* bias, const floating* peep,
    floating* h, floating* c, floating* y, floating* h_prev, floating* c_prev,
    floating* m_step, floating* m_all,
) noexcept nogil:
    """One row's chunk of hidden units at step s.

    Without projection (m_step NULL) the new h goes to h and y. With one, the
    cell output m goes to m_step (and m_all when training) and the projection
    pass writes h and y. Training (c_prev not NULL) replaces the
    pre-activations in `gates` by the activations and records the state.
    """
    cdef Py_ssize_t b = item // nchunk
    cdef Py_ssize_t j0 = (item % nchunk) * CHUNK
    cdef Py_ssize_t j1 = min(j0 + CHUNK, H)
    cdef Py_ssize_t p = _position(st, s, b)
    cdef Py_ssize_t j, k
    cdef bint training = c_prev != NULL
    cdef floating* g = gates + p * 4 * H
    cdef const floating* r = rec + b * 4 * H
    cdef floating gi, gf, gg, go, c_old, c_new, out
    if s >= st.lengths[b]:
        if m_step == NULL:
            _zero(y + p * H, j0, j1)
        if training:
            for k in range(4):
                _zero(g + k * H, j0, j1)
            _zero(c_prev + p * H, j0, j1)
            if m_step == NULL:
                _zero(h_prev + p * H, j0, j1)
            else:
                _zero(m_all + p * H, j0, j1)
        return
    for j in range(j0, j1):
        c_old = c[b * H + j]
        gi = g[j] + r[j] + bias[j]
        gf = g[H + j] + r[H + j] + bias[H + j]
        gg = _tanh(g[2 * H + j] + r[2 * H + j] + bias[2 * H + j])
        go = g[3 * H + j] + r[3 * H + j] + bias[3 * H + j]
        if peep != NULL:
            gi = gi + peep[j] * c_old
            gf = gf + peep[H + j] * c_old
        gi = _sigmoid(gi)
        gf = _sigmoid(gf)
        c_new = gf * c_old + gi * gg
        if peep != NULL:
            go = go + peep[2 * H + j] * c_new
        go = _sigmoid(go)
        out = go * _tanh(c_new)
        c[b * H + j] = c_new
        if training:
            g[j] = gi
            g[H + j] = gf
            g[2 * H + j] = gg
            g[3 * H + j] = go
            c_prev[p * H + j] = c_old
        if m_step == NULL:
            if training:
                h_prev[p * H + j] = h[b * H + j]
            h[b * H + j] = out
            y[p * H + j] = out
        else:
            m_step[b * H + j] = out
            if training:
                m_all[p * H + j] = out


cdef void _projected_outputs(
    Py_ssize_t item, Py_ssize_t nchunk, Py_ssize_t s, Py_ssize_t P, Steps st,
    const floating* proj, floating* h, floating* y, floating* h_prev,
) noexcept nogil:
    """With a projection: the new h (rows of `proj`) into the state and y."""
    cdef Py_ssize_t b = item // nchunk
    cdef Py_ssize_t j0 = (item % nchunk) * CHUNK
    cdef Py_ssize_t j1 = min(j0 + CHUNK, P)
    cdef Py_ssize_t p = _position(st, s, b)
    if s >= st.lengths[b]:
        _zero(y + p * P, j0, j1)
        if h_prev != NULL:
            _zero(h_prev + p * P, j0, j1)
        return
    if h_prev != NULL:
        memcpy(h_prev + p * P + j0, h + b * P + j0, (j1 - j0) * sizeof(floating))
    memcpy(h + b * P + j0, proj + b * P + j0, (j1 - j0) * sizeof(floating))
    memcpy(y + p * P + j0, proj + b * P + j0, (j1 - j0) * sizeof(floating))


def forward(
    const floating[:, ::1] x, const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
    const floating[::1] bias, const floating[:, ::1] w_hr, const floating[:, ::1] peephole,
    floating[:, ::1] h, floating[:, ::1] c,
    const Py_ssize_t[::1] lengths, bint reverse, bint batch_first, Py_ssize_t steps,
    floating[:, ::1] gates, floating[:, ::1] y,
    floating[:, ::1] h_prev, floating[:, ::1] c_prev, floating[:, ::1] m_all,
    floating[:, ::1] rec, floating[:, ::1] m_step, floating[:, ::1] proj,
    int num_threads,
):
    """Run one layer and direction over the sequence.

    x (T*B, I) and y (T*B, P) are in x's layout (see the file header), with
    P = H without projection. h (B, P) and c (B, H) hold h0/c0 on entry and
    h_n/c_n on return. w_hr (P, H) and peephole (3, H) may be None.
    Scratch: gates (T*B, 4H), rec (B, 4H); with a projection also m_step
    (B, H) and proj (B, P) (else None). Training: h_prev (T*B, P) and c_prev
    (T*B, H) receive the state entering each position, gates the activations
    i, f, g, o and, with a projection, m_all (T*B, H) the cell outputs;
    inference passes None for all three.
    """
    cdef Py_ssize_t B = c.shape[0], H = c.shape[1], P = h.shape[1], I = x.shape[1]
    cdef Py_ssize_t G = 4 * H, rows = steps * B
    cdef Py_ssize_t nchunk = (H + CHUNK - 1) // CHUNK, pchunk = (P + CHUNK - 1) // CHUNK
    cdef Py_ssize_t s, item, max_length = _max_length(lengths)
    cdef int threads = _pointwise_threads(B * H, num_threads)
    cdef Steps st = _steps(lengths, reverse, batch_first, steps)
    cdef bint projected = w_hr is not None
    if rows == 0:
        return
    with nogil:
        # The input projection of every position at once.
        gemm(False, True, <int>rows, <int>G, <int>I, 1, _cptr(x), <int>I,
             _cptr(w_ih), <int>I, 0, _ptr(gates), <int>G)
        for s in range(steps):
            if s < max_length:
                gemm(False, True, <int>B, <int>G, <int>P, 1, _ptr(h), <int>P,
                     _cptr(w_hh), <int>P, 0, _ptr(rec), <int>G)
            for item in prange(B * nchunk, schedule="static", num_threads=threads):
                _forward_cells(item, nchunk, s, H, st, _ptr(gates), _ptr(rec), &bias[0],
                               _cptr(peephole), _ptr(h), _ptr(c), _ptr(y), _ptr(h_prev),
                               _ptr(c_prev), _ptr(m_step), _ptr(m_all))
            if projected:
                if s < max_length:
                    gemm(False, True, <int>B, <int>P, <int>H, 1, _ptr(m_step), <int>H,
                         _cptr(w_hr), <int>H, 0, _ptr(proj), <int>P)
                for item in prange(B * pchunk, schedule="static", num_threads=threads):
                    _projected_outputs(item, pchunk, s, P, st, _ptr(proj), _ptr(h), _ptr(y),
                                       _ptr(h_prev))


# ---------------------------------------------------------------- backward

cdef void _backward_cells(
    Py_ssize_t item, Py_ssize_t nchunk, Py_ssize_t s, Py_ssize_t H, Steps st,
    const floating* act, const floating* c_prev, const floating* peep,
    const floating* dy, const floating* dh_last, const floating* dh_rec, floating* dc,
    floating* dgates, floating* dgates_step,
) noexcept nogil:
    """One row's chunk at step s: gate gradients from dh (= dm) and the carried dc.

    dh is dh_last at the row's last valid step (where dh_n enters) and dh_rec
    before it, plus dy when given (dy is NULL with a projection, whose pass
    has added it already).
    """
    cdef Py_ssize_t b = item // nchunk
    cdef Py_ssize_t j0 = (item % nchunk) * CHUNK
    cdef Py_ssize_t j1 = min(j0 + CHUNK, H)
    cdef Py_ssize_t length = st.lengths[b]
    cdef Py_ssize_t p = _position(st, s, b)
    cdef Py_ssize_t j, k
    cdef const floating* a = act + p * 4 * H
    cdef const floating* dh_in
    cdef floating* dg = dgates + p * 4 * H
    cdef floating* ds = dgates_step + b * 4 * H
    cdef floating one = 1
    cdef floating gi, gf, gg, go, c_old, tc, dh, d_c, da_i, da_f, da_o
    if s >= length:
        for k in range(4):
            _zero(dg + k * H, j0, j1)
        return
    dh_in = (dh_last if s == length - 1 else dh_rec) + b * H
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
        da_o = dh * tc * go * (one - go)
        d_c = dc[b * H + j] + dh * go * (one - tc * tc)
        if peep != NULL:
            d_c = d_c + da_o * peep[2 * H + j]
        da_i = d_c * gg * gi * (one - gi)
        da_f = d_c * c_old * gf * (one - gf)
        if peep != NULL:
            dc[b * H + j] = d_c * gf + da_i * peep[j] + da_f * peep[H + j]
        else:
            dc[b * H + j] = d_c * gf
        dg[j] = da_i
        dg[H + j] = da_f
        dg[2 * H + j] = d_c * gi * (one - gg * gg)
        dg[3 * H + j] = da_o
        ds[j] = dg[j]
        ds[H + j] = dg[H + j]
        ds[2 * H + j] = dg[2 * H + j]
        ds[3 * H + j] = dg[3 * H + j]


cdef void _output_grads(
    Py_ssize_t item, Py_ssize_t nchunk, Py_ssize_t s, Py_ssize_t P, Steps st,
    const floating* dy, const floating* dh_last, const floating* dh_rec,
    floating* dh_all, floating* dh_step,
) noexcept nogil:
    """With a projection: dh_t = dh from later steps (or dh_n) + dy, per row."""
    cdef Py_ssize_t b = item // nchunk
    cdef Py_ssize_t j0 = (item % nchunk) * CHUNK
    cdef Py_ssize_t j1 = min(j0 + CHUNK, P)
    cdef Py_ssize_t length = st.lengths[b]
    cdef Py_ssize_t p = _position(st, s, b)
    cdef Py_ssize_t j
    cdef const floating* dh_in
    cdef floating dh
    if s >= length:
        _zero(dh_all + p * P, j0, j1)
        _zero(dh_step + b * P, j0, j1)
        return
    dh_in = (dh_last if s == length - 1 else dh_rec) + b * P
    for j in range(j0, j1):
        dh = dh_in[j]
        if dy != NULL:
            dh = dh + dy[p * P + j]
        dh_all[p * P + j] = dh
        dh_step[b * P + j] = dh


cdef void _column_sums(const floating* m, Py_ssize_t rows, Py_ssize_t cols,
                       floating* out, int num_threads) noexcept nogil:
    """out[j] = sum over rows of m[:, j], in a fixed order (reproducible)."""
    cdef Py_ssize_t block, r, j, j0, j1
    for block in prange((cols + CHUNK - 1) // CHUNK, schedule="static", num_threads=num_threads):
        j0 = block * CHUNK
        j1 = min(j0 + CHUNK, cols)
        for j in range(j0, j1):
            out[j] = 0
        for r in range(rows):
            for j in range(j0, j1):
                out[j] = out[j] + m[r * cols + j]


cdef void _peephole_grads(const floating* dgates, const floating* act, const floating* c_prev,
                          Py_ssize_t rows, Py_ssize_t H, floating* dpeep,
                          int num_threads) noexcept nogil:
    """dp_i = sum da_i c_{t-1}, dp_f = sum da_f c_{t-1}, dp_o = sum da_o c_t, fixed order."""
    cdef Py_ssize_t block, r, j, j0, j1
    cdef const floating* a
    cdef const floating* dg
    cdef floating c_old
    for block in prange((H + CHUNK - 1) // CHUNK, schedule="static", num_threads=num_threads):
        j0 = block * CHUNK
        j1 = min(j0 + CHUNK, H)
        for j in range(j0, j1):
            dpeep[j] = 0
            dpeep[H + j] = 0
            dpeep[2 * H + j] = 0
        for r in range(rows):
            a = act + r * 4 * H
            dg = dgates + r * 4 * H
            for j in range(j0, j1):
                c_old = c_prev[r * H + j]
                dpeep[j] = dpeep[j] + dg[j] * c_old
                dpeep[H + j] = dpeep[H + j] + dg[H + j] * c_old
                dpeep[2 * H + j] = dpeep[2 * H + j] + dg[3 * H + j] * (a[H + j] * c_old + a[j] * a[2 * H + j])


def backward(
    const floating[:, ::1] x, const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
    const floating[:, ::1] w_hr, const floating[:, ::1] peephole,
    const floating[:, ::1] act, const floating[:, ::1] c_prev, const floating[:, ::1] h_prev,
    const floating[:, ::1] m_all,
    const Py_ssize_t[::1] lengths, bint reverse, bint batch_first, Py_ssize_t steps,
    const floating[:, ::1] dy, const floating[:, ::1] dh_n,
    floating[:, ::1] dx, floating[:, ::1] dh0, floating[:, ::1] dc0,
    floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db,
    floating[:, ::1] dw_hr, floating[:, ::1] dpeephole,
    floating[:, ::1] dgates, floating[:, ::1] dgates_step,
    floating[:, ::1] dh_all, floating[:, ::1] dh_step, floating[:, ::1] dm_step,
    int num_threads,
):
    """Backpropagate through one layer and direction.

    act, c_prev, h_prev (and m_all with a projection) come from a training
    forward with the same w_hr/peephole (None when unused). dy (T*B, P) may be
    None (zeros). dc0 (B, H) holds dc_n on entry and the carried dc
    throughout; dh0 (B, P) also serves as the per-step recurrent gradient.
    dw_hr (P, H) and dpeephole (3, H) are written when used (else None).
    Scratch: dgates (T*B, 4H); dgates_step (B, 4H), zero on entry; with a
    projection dh_all (T*B, P), dh_step (B, P) and dm_step (B, H), else None.
    """
    cdef Py_ssize_t B = dc0.shape[0], H = dc0.shape[1], P = dh0.shape[1], I = x.shape[1]
    cdef Py_ssize_t G = 4 * H, rows = steps * B
    cdef Py_ssize_t nchunk = (H + CHUNK - 1) // CHUNK, pchunk = (P + CHUNK - 1) // CHUNK
    cdef Py_ssize_t s, item, b, j, max_length = _max_length(lengths)
    cdef int threads = _pointwise_threads(B * H, num_threads)
    cdef Steps st = _steps(lengths, reverse, batch_first, steps)
    cdef bint projected = w_hr is not None
    # The cells' incoming dh: with a projection always dm (dy and dh_n already in it).
    cdef const floating* cell_dy = _cptr(dy)
    cdef const floating* cell_dh_last = _cptr(dh_n)
    cdef const floating* cell_dh_rec = _cptr(dh0)
    if projected:
        cell_dy = NULL
        cell_dh_last = _cptr(dm_step)
        cell_dh_rec = _cptr(dm_step)
    with nogil:
        for s in range(steps - 1, -1, -1):
            if projected:
                for item in prange(B * pchunk, schedule="static", num_threads=threads):
                    _output_grads(item, pchunk, s, P, st, _cptr(dy), _cptr(dh_n), _ptr(dh0),
                                  _ptr(dh_all), _ptr(dh_step))
                if s < max_length:
                    gemm(False, False, <int>B, <int>H, <int>P, 1, _ptr(dh_step), <int>P,
                         _cptr(w_hr), <int>H, 0, _ptr(dm_step), <int>H)
            for item in prange(B * nchunk, schedule="static", num_threads=threads):
                _backward_cells(item, nchunk, s, H, st, _cptr(act), _cptr(c_prev),
                                _cptr(peephole), cell_dy, cell_dh_last, cell_dh_rec,
                                _ptr(dc0), _ptr(dgates), _ptr(dgates_step))
            if s < max_length:
                gemm(False, False, <int>B, <int>P, <int>G, 1, _ptr(dgates_step), <int>G,
                     _cptr(w_hh), <int>P, 0, _ptr(dh0), <int>P)
        # Rows that never ran pass dh_n straight through.
        for b in range(B):
            if lengths[b] == 0:
                for j in range(P):
                    dh0[b, j] = dh_n[b, j]
        # The weight and input gradients of all positions at once.
        gemm(False, False, <int>rows, <int>I, <int>G, 1, _cptr(dgates), <int>G,
             _cptr(w_ih), <int>I, 0, _ptr(dx), <int>I)
        gemm(True, False, <int>G, <int>I, <int>rows, 1, _cptr(dgates), <int>G,
             _cptr(x), <int>I, 0, _ptr(dw_ih), <int>I)
        gemm(True, False, <int>G, <int>P, <int>rows, 1, _cptr(dgates), <int>G,
             _cptr(h_prev), <int>P, 0, _ptr(dw_hh), <int>P)
        _column_sums(_cptr(dgates), rows, G, &db[0], _pointwise_threads(rows * H, num_threads))
        if projected:
            gemm(True, False, <int>P, <int>H, <int>rows, 1, _cptr(dh_all), <int>P,
                 _cptr(m_all), <int>H, 0, _ptr(dw_hr), <int>H)
        if peephole is not None:
            _peephole_grads(_cptr(dgates), _cptr(act), _cptr(c_prev), rows, H, _ptr(dpeephole),
                            _pointwise_threads(rows * H, num_threads))
