"""The types the functional API returns: its caches and its gradients."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lstm_c._validation import ForwardArgs


class LSTMGrads(NamedTuple):
    """Gradients from `lstm_backward`, all in the forward input's dtype.

    Attributes
    ----------
    dx : ndarray, x's shape: (T, B, I), or (B, T, I) with batch_first.
    dh0 : ndarray (B, P): gradient of h0 (P = proj_size, else H).
    dc0 : ndarray (B, H): gradient of c0.
    dw_ih : ndarray (4H, I).
    dw_hh : ndarray (4H, P).
    db : ndarray (4H,): the gradient of b_ih and equally of b_hh.
    dw_hr : ndarray (P, H), or None without a projection.
    dpeephole : ndarray (3, H), or None without peepholes.
    """

    dx: np.ndarray
    dh0: np.ndarray
    dc0: np.ndarray
    dw_ih: np.ndarray
    dw_hh: np.ndarray
    db: np.ndarray
    dw_hr: np.ndarray | None = None
    dpeephole: np.ndarray | None = None


class LSTMCache:
    """What `lstm_backward` needs from a training-mode `lstm_forward`.

    Holds references to the inputs (not copies) and, per position, the gate
    activations i, f, g, o (4H), the cell state entering the step (H) and the
    hidden state entering the step (H, or P with a projection): about T·B·6H
    numbers; a projection adds the cell outputs before it (H). Treat it as
    opaque; the inputs must not be changed in place before the backward pass.
    """

    __slots__ = ("args", "reverse", "act", "c_prev", "h_prev", "m")

    def __init__(
        self,
        args: ForwardArgs,
        reverse: bool,
        act: np.ndarray,
        c_prev: np.ndarray,
        h_prev: np.ndarray,
        m: np.ndarray | None,
    ) -> None:
        self.args = args
        self.reverse = reverse
        self.act = act
        self.c_prev = c_prev
        self.h_prev = h_prev
        self.m = m

    def __repr__(self) -> str:
        a = self.args
        return (
            f"LSTMCache(seq_len={a.steps}, batch={a.batch}, input_size={a.input_size}, "
            f"hidden_size={a.hidden_size}, dtype={a.dtype}, reverse={self.reverse}, "
            f"batch_first={a.batch_first})"
        )


class CheckpointCache:
    """What `lstm_backward` needs from `lstm_forward(..., checkpoint_every=k)`.

    Holds references to the inputs (not copies) and the state entering every
    k-th step, in step order: h (S, B, P) and c (S, B, H) for the S = ceil(T'/k)
    segments of k steps that cover the longest row (T' steps). About
    (T/k)·B·(H + P) numbers instead of the T·B·6H of an `LSTMCache`; the
    backward pass recomputes each segment's activations from them. Treat it
    as opaque; the inputs must not be changed in place before the backward pass.
    """

    __slots__ = ("args", "reverse", "every", "h", "c")

    def __init__(
        self, args: ForwardArgs, reverse: bool, every: int, h: np.ndarray, c: np.ndarray
    ) -> None:
        self.args = args
        self.reverse = reverse
        self.every = every
        self.h = h
        self.c = c

    def __repr__(self) -> str:
        a = self.args
        return (
            f"CheckpointCache(seq_len={a.steps}, batch={a.batch}, input_size={a.input_size}, "
            f"hidden_size={a.hidden_size}, dtype={a.dtype}, reverse={self.reverse}, "
            f"batch_first={a.batch_first}, checkpoint_every={self.every}, checkpoints={len(self.h)})"
        )
