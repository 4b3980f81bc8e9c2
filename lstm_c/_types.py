"""Result types of the functional API."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LSTMGrads(NamedTuple):
    """Gradients from `lstm_backward`, all in the forward input's dtype.

    Attributes
    ----------
    dx : ndarray, x's shape: (T, B, I), or (B, T, I) with batch_first.
    dh0, dc0 : ndarray (B, H): gradients of the initial state.
    dw_ih : ndarray (4H, I).
    dw_hh : ndarray (4H, H).
    db : ndarray (4H,): the gradient of b_ih and equally of b_hh.
    """

    dx: np.ndarray
    dh0: np.ndarray
    dc0: np.ndarray
    dw_ih: np.ndarray
    dw_hh: np.ndarray
    db: np.ndarray
