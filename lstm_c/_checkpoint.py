"""Bounded-memory forward and backward of one layer and direction: checkpoints every k steps.

`lstm_forward(..., checkpoint_every=k)` runs the sequence as segments of k
steps, one call of the compiled kernels each (`lstm_c.functional`, in
inference mode), and keeps only the state (h, c) entering every segment.
`lstm_backward` walks the segments from the last to the first: it re-runs a
segment from its checkpoint in training mode (the same kernels on the same
inputs and state, so the same activations, bitwise), backpropagates through
it with the kernels' own backward, feeding in the gradients (dh, dc) carried
from the later segments as that call's dh_n and dc_n, and adds up the weight
gradients segment by segment. No array of T·B·4H numbers is ever made: the
extra memory is O((T/k + k)·B·H) beyond x, y, dy and dx.

Segments run in step order. At step s row b processes time t = s, or
t = lengths[b] - 1 - s in reverse (see the header of src/_lstm.pyx); segment j
covers steps [j·k, (j+1)·k), and row b takes clip(lengths[b] - j·k, 0, k) of
them. A kernel call over the segment has these lengths and starts from the
segment's checkpoint; rows that ended before the segment have length 0 in it,
so their state and their gradients (dh_n, dc_n) pass through unchanged.

What a segment reads is one of two things:

- a window of time steps, x[j·k : (j+1)·k] (reversed: x[T-(j+1)·k : T-j·k]),
  when every row reads the same times: the forward direction, and the reverse
  direction when every row has all T steps. Time-major, this is a view;
- otherwise (reverse with lengths) the positions the segment's steps read,
  gathered into a time-major (k, B, ·) array in step order, run forward
  (their outputs and input gradients are scattered back).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lstm_c import functional
from lstm_c._types import CheckpointCache, LSTMCache, LSTMGrads
from lstm_c._validation import ForwardArgs, segment_count


class _Segment(NamedTuple):
    """Steps [lo, hi) of one layer and direction, as one kernel call runs them."""

    lengths: np.ndarray  # (B,): the steps each row takes in this segment
    window: slice | None  # the times read, when all rows read the same ones
    reverse: bool  # the kernel call's direction
    time: np.ndarray | None  # (k, B): gathered: the time read at each (step, row)
    valid: np.ndarray | None  # (k, B): gathered: whether the row runs that step


def _segments(args: ForwardArgs, reverse: bool, every: int) -> list[_Segment]:
    lengths, T = args.lengths, args.steps
    windowed = not reverse or bool((lengths == T).all())
    segments = []
    for j in range(segment_count(lengths, every)):
        lo, hi = j * every, min((j + 1) * every, T)
        seg_lengths = np.clip(lengths - lo, 0, hi - lo)
        if windowed:
            window = slice(T - hi, T - lo) if reverse else slice(lo, hi)
            segments.append(_Segment(seg_lengths, window, reverse, None, None))
            continue
        s = np.arange(lo, hi, dtype=np.intp)[:, None]
        valid = s < lengths[None, :]
        time = np.where(valid, lengths[None, :] - 1 - s, 0)
        segments.append(_Segment(seg_lengths, None, False, time, valid))
    return segments


def _take(seg: _Segment, a: np.ndarray, batch_first: bool) -> np.ndarray:
    """What segment `seg` reads of `a` (x or dy, in x's layout), in the kernel call's layout."""
    if seg.window is not None:
        return a[:, seg.window] if batch_first else a[seg.window]
    assert seg.time is not None and seg.valid is not None
    rows = np.arange(a.shape[0 if batch_first else 1])[None, :]
    out = a[rows, seg.time] if batch_first else a[seg.time, rows]  # (k, B, features)
    out[~seg.valid] = 0
    return out


def _put(seg: _Segment, dst: np.ndarray, src: np.ndarray, batch_first: bool) -> None:
    """Write a segment's outputs `src` (y or dx, the kernel call's layout) into `dst` (x's layout)."""
    if seg.window is not None:
        if batch_first:
            dst[:, seg.window] = src
        else:
            dst[seg.window] = src
        return
    assert seg.time is not None and seg.valid is not None
    steps, rows = np.nonzero(seg.valid)
    times = seg.time[steps, rows]
    if batch_first:
        dst[rows, times] = src[steps, rows]
    else:
        dst[times, rows] = src[steps, rows]


def _run_segment(
    args: ForwardArgs,
    seg: _Segment,
    h0: np.ndarray,
    c0: np.ndarray,
    training: bool,
    num_threads: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, LSTMCache | CheckpointCache | None]:
    """One kernel call over a segment, from the state (h0, c0)."""
    return functional.lstm_forward(
        _take(seg, args.x, args.batch_first),
        args.w_ih,
        args.w_hh,
        args.bias,
        None,
        h0,
        c0,
        w_hr=args.w_hr,
        peephole=args.peephole,
        lengths=seg.lengths,
        reverse=seg.reverse,
        batch_first=args.batch_first and seg.window is not None,
        training=training,
        num_threads=num_threads,
    )


def forward(
    args: ForwardArgs, reverse: bool, every: int, training: bool, num_threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, CheckpointCache | None]:
    """`lstm_forward` in segments of `every` steps; the cache holds the state entering each."""
    segments = _segments(args, reverse, every)
    count, batch = len(segments), args.batch
    y = np.zeros(args.y_shape, args.dtype)
    h, c = args.h0.copy(), args.c0.copy()
    h_at = np.empty((count, batch, args.output_size), args.dtype) if training else None
    c_at = np.empty((count, batch, args.hidden_size), args.dtype) if training else None
    for j, seg in enumerate(segments):
        if h_at is not None and c_at is not None:
            h_at[j], c_at[j] = h, c
        y_seg, h, c, _ = _run_segment(args, seg, h, c, False, num_threads)
        _put(seg, y, y_seg, args.batch_first)
        del y_seg
    if h_at is None or c_at is None:
        return y, h, c, None
    return y, h, c, CheckpointCache(args, reverse, every, h_at, c_at)


def backward(
    cache: CheckpointCache,
    dy: np.ndarray | None,
    dh_n: np.ndarray | None,
    dc_n: np.ndarray | None,
    num_threads: int | None,
) -> LSTMGrads:
    """`lstm_backward` of a checkpointed forward, segment by segment from the last.

    dy, dh_n and dc_n are already checked against the forward (None: zeros).
    """
    args = cache.args
    dtype, batch, hidden, out = args.dtype, args.batch, args.hidden_size, args.output_size
    dx = np.zeros(args.x.shape, dtype)
    dw_ih = np.zeros((4 * hidden, args.input_size), dtype)
    dw_hh = np.zeros((4 * hidden, out), dtype)
    db = np.zeros(4 * hidden, dtype)
    dw_hr = None if args.w_hr is None else np.zeros((out, hidden), dtype)
    dpeephole = None if args.peephole is None else np.zeros((3, hidden), dtype)
    dh = np.zeros((batch, out), dtype) if dh_n is None else dh_n.copy()
    dc = np.zeros((batch, hidden), dtype) if dc_n is None else dc_n.copy()
    segments = _segments(args, cache.reverse, cache.every)
    for j in reversed(range(len(segments))):
        seg = segments[j]
        seg_cache = _run_segment(args, seg, cache.h[j], cache.c[j], True, num_threads)[3]
        assert isinstance(seg_cache, LSTMCache)
        seg_dy = None if dy is None else _take(seg, dy, args.batch_first)
        g = functional.lstm_backward(seg_cache, seg_dy, dh, dc, num_threads=num_threads)
        del seg_cache, seg_dy
        _put(seg, dx, g.dx, args.batch_first)
        dw_ih += g.dw_ih
        dw_hh += g.dw_hh
        db += g.db
        if dw_hr is not None and g.dw_hr is not None:
            dw_hr += g.dw_hr
        if dpeephole is not None and g.dpeephole is not None:
            dpeephole += g.dpeephole
        dh, dc = g.dh0, g.dc0
        del g
    return LSTMGrads(dx, dh, dc, dw_ih, dw_hh, db, dw_hr, dpeephole)
