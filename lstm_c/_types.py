"""Result types of the functional API."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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
