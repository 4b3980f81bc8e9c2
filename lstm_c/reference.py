"""Plain-NumPy LSTM: the oracle for the tests and the baseline for the benchmarks.

Same signatures and conventions as the compiled functional API
(:mod:`lstm_c.functional`), written to be simple and obviously correct rather
than fast: one Python loop over time steps, NumPy matrix products, no tricks.

Conventions (PyTorch's): gates in order i, f, g, o; ``w_ih`` is (4H, I),
``w_hh`` is (4H, H)::

    gates = x_t W_ih^T + h_{t-1} W_hh^T + b_ih + b_hh
    i, f, o = sigmoid(.),  g = tanh(.)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

With a projection ``w_hr`` (P, H), ``h_t = (o * tanh(c_t)) W_hr^T`` (PyTorch's
``proj_size``). With peepholes ``peephole`` (3, H) in order (i, f, o), i and f
add ``p_i * c_{t-1}`` and ``p_f * c_{t-1}`` and o adds ``p_o * c_t``.

Variable lengths: row ``b`` runs over ``t < lengths[b]`` and its state then
freezes; ``y`` is exactly 0 past a row's length. With ``reverse=True`` each
row runs from its own last valid step ``lengths[b] - 1`` down to 0. Nothing
has to be sorted or packed by the caller.

Sigmoid is :func:`scipy.special.expit` and tanh is :func:`numpy.tanh`, so huge
pre-activations saturate exactly to 0/1/-1 without warnings, and NaN propagates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit

from lstm_c._types import LSTMGrads, describe_cache
from lstm_c._validation import (
    ForwardArgs,
    check_backward_grads,
    check_cache,
    check_flag,
    check_forward,
    check_num_threads,
)

__all__ = ["ReferenceCache", "lstm_forward", "lstm_backward"]

_PRODUCER = "lstm_c.reference.lstm_forward"


@dataclass(slots=True, eq=False, repr=False)
class ReferenceCache:
    """What :func:`lstm_forward` keeps (``training=True``) for :func:`lstm_backward`.

    All per-step arrays are indexed by the step ``s`` (processing order), not by
    the time index; ``time_index[s, b]`` gives the time index row ``b`` processed
    at step ``s`` (meaningful only where ``valid[s, b]``).

    Attributes
    ----------
    args : ForwardArgs
        The validated forward arguments (weights are used by the backward pass:
        do not modify them in place between forward and backward).
    reverse : bool
        Direction of the forward pass.
    valid : ndarray of bool, (T, B)
        ``valid[s, b]`` is ``s < lengths[b]``.
    time_index : ndarray of intp, (T, B)
        Time index of row ``b`` at step ``s`` (clipped to 0 where not valid).
    x_steps : ndarray, (T, B, I)
        The input seen at each step (zeros where not valid).
    gates : ndarray, (T, B, 4H)
        Gate activations i, f, g, o (after sigmoid/tanh).
    h_prev : ndarray, (T, B, P)
        Hidden state entering each step.
    c_prev : ndarray, (T, B, H)
        Cell state entering each step.
    c_new : ndarray, (T, B, H)
        Cell state ``c_t`` produced at each step.
    m : ndarray, (T, B, H)
        Cell output ``o * tanh(c_t)`` at each step (before any projection).
    """

    args: ForwardArgs
    reverse: bool
    valid: np.ndarray
    time_index: np.ndarray
    x_steps: np.ndarray
    gates: np.ndarray
    h_prev: np.ndarray
    c_prev: np.ndarray
    c_new: np.ndarray
    m: np.ndarray

    __repr__ = describe_cache


def _step_indices(lengths: np.ndarray, steps: int, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Valid masks and time indices, both (T, B), for every step and row."""
    s = np.arange(steps, dtype=np.intp)[:, None]  # (T, 1)
    valid = s < lengths[None, :]  # (T, B)
    t = lengths[None, :] - 1 - s if reverse else np.broadcast_to(s, valid.shape)
    time_index = np.where(valid, t, 0).astype(np.intp)
    return valid, time_index


# lstm_forward and lstm_backward repeat lstm_c.functional's signatures on purpose:
# the two APIs are interchangeable (lstm_c._stack runs over either), so that
# this plain-NumPy oracle can stand in for the kernels anywhere.
def lstm_forward(
    x: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any = None,
    b_hh: Any = None,
    h0: Any = None,
    c0: Any = None,
    *,
    w_hr: Any = None,
    peephole: Any = None,
    lengths: Any = None,
    reverse: bool = False,
    batch_first: bool = False,
    training: bool = True,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ReferenceCache | None]:
    """One LSTM layer in one direction, in plain NumPy.

    Parameters
    ----------
    x : array_like, (T, B, I), or (B, T, I) when ``batch_first``
        Input sequence, float32 or float64 (integers follow the other arrays).
    w_ih : array_like, (4H, I)
        Input-to-hidden weights, gates in order i, f, g, o.
    w_hh : array_like, (4H, P)
        Hidden-to-hidden weights, gates in order i, f, g, o; P = H without a
        projection.
    b_ih, b_hh : array_like, (4H,), optional
        Biases; None means zeros. Only their sum matters.
    h0 : array_like, (B, P), optional
        Initial hidden state; None means zeros.
    c0 : array_like, (B, H), optional
        Initial cell state; None means zeros.
    w_hr : array_like, (P, H), optional
        Projection of the hidden state; None means none.
    peephole : array_like, (3, H), optional
        Peephole weights for gates i, f, o; None means none.
    lengths : array_like of int, (B,), optional
        Valid length of each row, each in [0, T]; None means all T.
    reverse : bool
        Run each row from its last valid step ``lengths[b] - 1`` down to 0.
    batch_first : bool
        ``x`` and ``y`` are (B, T, .) instead of (T, B, .).
    training : bool
        Return a cache for :func:`lstm_backward`; with False the cache is None.
    num_threads : int, optional
        Validated and ignored (the reference is single-threaded NumPy).

    Returns
    -------
    y : ndarray, (T, B, P), or (B, T, P) when ``batch_first``
        Hidden state at every time step (C-contiguous); exactly 0 past a
        row's length. ``y[t]`` is the h produced while processing time ``t``,
        also with ``reverse``.
    h_n : ndarray, (B, P)
    c_n : ndarray, (B, H)
        State after each row's last valid step (``h0``, ``c0`` for length 0).
    cache : ReferenceCache or None
        What the backward pass needs; None when ``training`` is False.
    """
    check_num_threads(num_threads)
    args = check_forward(
        x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, batch_first, w_hr=w_hr, peephole=peephole
    )
    reverse = check_flag("reverse", reverse)
    training = check_flag("training", training)
    T, B, I, H, P = args.steps, args.batch, args.input_size, args.hidden_size, args.output_size
    dtype = args.dtype
    peep = args.peephole  # None: no peephole terms at all (0 * inf would be NaN)

    x_tm = args.x.swapaxes(0, 1) if args.batch_first else args.x  # (T, B, I)
    valid, time_index = _step_indices(args.lengths, T, reverse)
    rows = np.arange(B)

    y_tm = np.zeros((T, B, P), dtype=dtype)
    h = args.h0.copy()
    c = args.c0.copy()
    if training:
        x_steps = np.zeros((T, B, I), dtype=dtype)
        gates_all = np.zeros((T, B, 4 * H), dtype=dtype)
        h_prev = np.zeros((T, B, P), dtype=dtype)
        c_prev = np.zeros((T, B, H), dtype=dtype)
        c_new_all = np.zeros((T, B, H), dtype=dtype)
        m_all = np.zeros((T, B, H), dtype=dtype)

    for s in range(T):
        v = valid[s]  # (B,)
        vv = v[:, None]
        t_b = time_index[s]  # (B,)
        # Rows past their length see zeros, so padding (even NaN/inf) never matters.
        x_s = np.where(vv, x_tm[t_b, rows], 0).astype(dtype, copy=False)  # (B, I)

        z = x_s @ args.w_ih.T + h @ args.w_hh.T + args.bias  # (B, 4H)
        a_i, a_f, a_o = z[:, 0 * H : 1 * H], z[:, 1 * H : 2 * H], z[:, 3 * H : 4 * H]
        if peep is not None:
            a_i, a_f = a_i + peep[0] * c, a_f + peep[1] * c
        i = expit(a_i)
        f = expit(a_f)
        g = np.tanh(z[:, 2 * H : 3 * H])
        c_new = f * c + i * g
        o = expit(a_o + peep[2] * c_new if peep is not None else a_o)
        m = o * np.tanh(c_new)
        h_new = m @ args.w_hr.T if args.w_hr is not None else m

        if training:
            x_steps[s] = x_s
            gates_all[s] = np.concatenate([i, f, g, o], axis=1)
            h_prev[s] = h
            c_prev[s] = c
            c_new_all[s] = c_new
            m_all[s] = m

        y_tm[t_b[v], rows[v]] = h_new[v]
        h = np.where(vv, h_new, h).astype(dtype, copy=False)
        c = np.where(vv, c_new, c).astype(dtype, copy=False)

    y = np.ascontiguousarray(y_tm.swapaxes(0, 1)) if args.batch_first else y_tm
    cache = None
    if training:
        cache = ReferenceCache(
            args, reverse, valid, time_index, x_steps, gates_all, h_prev, c_prev, c_new_all, m_all
        )
    return y, h, c, cache


def lstm_backward(
    cache: ReferenceCache,
    dy: Any = None,
    dh_n: Any = None,
    dc_n: Any = None,
    *,
    num_threads: int | None = None,
) -> LSTMGrads:
    """Backpropagation through time for :func:`lstm_forward`, in plain NumPy.

    Parameters
    ----------
    cache : ReferenceCache
        Returned by :func:`lstm_forward` with ``training=True``.
    dy : array_like, y's shape: (T, B, P), or (B, T, P) when ``batch_first``, optional
        Gradient of the loss with respect to ``y``; None means zeros. Entries
        past a row's length are ignored.
    dh_n : array_like, (B, P), optional
    dc_n : array_like, (B, H), optional
        Gradients with respect to ``h_n`` and ``c_n``; None means zeros. They
        enter at each row's last valid step.
    num_threads : int, optional
        Validated and ignored.

    Returns
    -------
    LSTMGrads
        ``dx`` (x's shape; 0 past a row's length), ``dh0`` (B, P), ``dc0`` (B, H),
        ``dw_ih`` (4H, I), ``dw_hh`` (4H, P), ``db`` (4H,) -- the gradient of
        ``b_ih`` and equally of ``b_hh`` --, ``dw_hr`` (P, H) and ``dpeephole``
        (3, H), None when unused. All in x's dtype. Rows of length 0 get
        ``dh0 = dh_n`` and ``dc0 = dc_n``.
    """
    check_num_threads(num_threads)
    check_cache(cache, ReferenceCache, _PRODUCER)
    args = cache.args
    dy_arr, dh_arr, dc_arr = check_backward_grads(dy, dh_n, dc_n, args)
    T, B, I, H, P = args.steps, args.batch, args.input_size, args.hidden_size, args.output_size
    dtype = args.dtype
    rows = np.arange(B)
    peep = args.peephole

    if dy_arr is None:
        dy_tm = np.zeros((T, B, P), dtype=dtype)
    else:
        dy_tm = dy_arr.swapaxes(0, 1) if args.batch_first else dy_arr
    dh = np.zeros((B, P), dtype=dtype) if dh_arr is None else dh_arr.copy()
    dc = np.zeros((B, H), dtype=dtype) if dc_arr is None else dc_arr.copy()

    dx_tm = np.zeros((T, B, I), dtype=dtype)
    dw_ih = np.zeros((4 * H, I), dtype=dtype)
    dw_hh = np.zeros((4 * H, P), dtype=dtype)
    db = np.zeros(4 * H, dtype=dtype)
    dw_hr = np.zeros((P, H), dtype=dtype)
    dpeep = np.zeros((3, H), dtype=dtype)

    for s in range(T - 1, -1, -1):
        v = cache.valid[s]
        vv = v[:, None]
        t_b = cache.time_index[s]
        gates = cache.gates[s]
        i = gates[:, 0 * H : 1 * H]
        f = gates[:, 1 * H : 2 * H]
        g = gates[:, 2 * H : 3 * H]
        o = gates[:, 3 * H : 4 * H]
        c_prev = cache.c_prev[s]
        c_new = cache.c_new[s]
        tanh_c = np.tanh(c_new)

        # Gradient reaching h_t: from later steps plus from y at this row's time index.
        dh_t = dh + np.where(vv, dy_tm[t_b, rows], 0)
        dh_t = np.where(vv, dh_t, 0)  # rows past their length: no step
        if args.w_hr is not None:
            dw_hr += dh_t.T @ cache.m[s]
            dm = dh_t @ args.w_hr
        else:
            dm = dh_t
        dao = dm * tanh_c * o * (1 - o)
        dc_t = dc + dm * o * (1 - tanh_c * tanh_c)
        if peep is not None:
            dc_t = dc_t + dao * peep[2]
        dai = dc_t * g * i * (1 - i)
        daf = dc_t * c_prev * f * (1 - f)
        dag = dc_t * i * (1 - g * g)
        dc_prev = dc_t * f
        if peep is not None:
            dc_prev = dc_prev + dai * peep[0] + daf * peep[1]

        dz = np.concatenate([dai, daf, dag, dao], axis=1)
        dz = np.where(vv, dz, 0).astype(dtype, copy=False)

        dw_ih += dz.T @ cache.x_steps[s]
        dw_hh += dz.T @ cache.h_prev[s]
        db += dz.sum(axis=0)
        if peep is not None:
            dpeep += np.stack([(dai * c_prev)[v].sum(0), (daf * c_prev)[v].sum(0), (dao * c_new)[v].sum(0)])
        dx_s = dz @ args.w_ih
        dx_tm[t_b[v], rows[v]] = dx_s[v]

        dh = np.where(vv, dz @ args.w_hh, dh).astype(dtype, copy=False)
        dc = np.where(vv, dc_prev, dc).astype(dtype, copy=False)

    dx = np.ascontiguousarray(dx_tm.swapaxes(0, 1)) if args.batch_first else dx_tm
    return LSTMGrads(
        dx=dx.astype(dtype, copy=False),
        dh0=dh.astype(dtype, copy=False),
        dc0=dc.astype(dtype, copy=False),
        dw_ih=dw_ih,
        dw_hh=dw_hh,
        db=db,
        dw_hr=dw_hr if args.w_hr is not None else None,
        dpeephole=dpeep.astype(dtype, copy=False) if args.peephole is not None else None,
    )
