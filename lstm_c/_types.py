"""The types the functional API returns: its caches and its gradients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

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


def describe_cache(cache: LSTMCache | Any) -> str:
    """The repr of a functional API's cache: its call's sizes, not its arrays."""
    a = cache.args
    return (
        f"{type(cache).__name__}(seq_len={a.steps}, batch={a.batch}, input_size={a.input_size}, "
        f"hidden_size={a.hidden_size}, dtype={a.dtype}, reverse={cache.reverse}, "
        f"batch_first={a.batch_first})"
    )


@dataclass(slots=True, eq=False, repr=False)
class LSTMCache:
    """What `lstm_backward` needs from a training-mode `lstm_forward`.

    Holds references to the inputs (not copies) and, per position, the gate
    activations i, f, g, o (4H), the cell state entering the step (H) and the
    hidden state entering the step (H, or P with a projection): about T·B·6H
    numbers; a projection adds the cell outputs before it (H). Treat it as
    opaque; the inputs must not be changed in place before the backward pass.
    """

    args: ForwardArgs
    reverse: bool
    act: np.ndarray
    c_prev: np.ndarray
    h_prev: np.ndarray
    m: np.ndarray | None

    __repr__ = describe_cache


@dataclass(slots=True, eq=False)
class CheckpointCache:
    """What `lstm_backward` needs from `lstm_forward(..., checkpoint_every=k)`.

    Holds references to the inputs (not copies) and the state entering every
    k-th step, in step order: h (S, B, P) and c (S, B, H) for the S = ceil(T'/k)
    segments of k steps that cover the longest row (T' steps). About
    (T/k)·B·(H + P) numbers instead of the T·B·6H of an `LSTMCache`; the
    backward pass recomputes each segment's activations from them. Treat it
    as opaque; the inputs must not be changed in place before the backward pass.
    """

    args: ForwardArgs
    reverse: bool
    every: int
    h: np.ndarray
    c: np.ndarray

    def __repr__(self) -> str:
        return describe_cache(self)[:-1] + f", checkpoint_every={self.every}, checkpoints={len(self.h)})"
