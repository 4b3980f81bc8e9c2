"""The layer stack, written once: layers and directions wired over a functional API.

`stack_forward` and `stack_backward` run a stacked, optionally bidirectional
LSTM as one `lstm_forward` / `lstm_backward` call per layer and direction of
a functional API: the compiled one (`lstm_c.functional`), which `lstm_c.LSTM`
uses, or the NumPy reference (`lstm_c.reference`), which the tests and the
benchmarks compare it with. Layer k > 0 reads the outputs of layer k - 1,
directions concatenated [forward, reverse], times an optional dropout mask.

Arrays here are batched and already in the computing dtype: x is (T, B, I)
or (B, T, I) with `batch_first`; states are (L·D, B, ·), index
``layer * D + direction``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from lstm_c._params import ParamNames, layer_arrays

# Called as mask(layer, shape) for the input of each layer > 0 in training: a
# scaled dropout mask to multiply it by, or None.
DropoutMask = Callable[[int, tuple[int, ...]], "np.ndarray | None"]


class StackTrace(NamedTuple):
    """What a training-mode `stack_forward` keeps for `stack_backward`."""

    caches: list[list[Any]]  # [layer][direction]: the functional API's caches
    masks: list[np.ndarray | None]  # [layer - 1]: the mask applied to that layer's input


def stack_forward(
    api: ModuleType,
    params: Mapping[str, np.ndarray],
    names: Sequence[ParamNames],
    num_directions: int,
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    *,
    lengths: Any = None,
    batch_first: bool = False,
    training: bool = False,
    dropout_mask: DropoutMask | None = None,
    num_threads: int | None = None,
    checkpoint_every: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, StackTrace | None]:
    """Every layer and direction forward; returns (y, h_n, c_n, trace or None).

    `names[layer * num_directions + direction]` names that layer's entries of
    `params`; h0 and c0 are (L·D, B, H_out) and (L·D, B, H), or None for zeros.
    `checkpoint_every` goes to every `lstm_forward` call when not None (an API
    without that option, such as the reference, is then never passed it).
    """
    D = num_directions
    L = len(names) // D
    h_n: list[np.ndarray] = []
    c_n: list[np.ndarray] = []
    caches: list[list[Any]] = []
    masks: list[np.ndarray | None] = []
    options = {} if checkpoint_every is None else {"checkpoint_every": checkpoint_every}
    layer_input = x
    for layer in range(L):
        if layer > 0 and training:
            mask = None if dropout_mask is None else dropout_mask(layer, layer_input.shape)
            if mask is not None:
                layer_input = layer_input * mask
            masks.append(mask)
        outputs, layer_caches = [], []
        for direction in range(D):
            k = layer * D + direction
            a = layer_arrays(params, names[k])
            y, h, c, cache = api.lstm_forward(
                layer_input,
                a.w_ih,
                a.w_hh,
                a.b_ih,
                a.b_hh,
                None if h0 is None else h0[k],
                None if c0 is None else c0[k],
                w_hr=a.w_hr,
                peephole=a.peephole,
                lengths=lengths,
                reverse=direction == 1,
                batch_first=batch_first,
                training=training,
                num_threads=num_threads,
                **options,
            )
            h_n.append(h)
            c_n.append(c)
            outputs.append(y)
            layer_caches.append(cache)
        layer_input = outputs[0] if D == 1 else np.concatenate(outputs, axis=-1)
        caches.append(layer_caches)
    trace = StackTrace(caches, masks) if training else None
    return layer_input, _stacked(h_n), _stacked(c_n), trace


def stack_backward(
    api: ModuleType,
    names: Sequence[ParamNames],
    num_directions: int,
    trace: StackTrace,
    dy: np.ndarray | None,
    dh_n: np.ndarray | None = None,
    dc_n: np.ndarray | None = None,
    *,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Backward through a training-mode `stack_forward`; returns (dx, dh0, dc0, grads).

    dy is the gradient of y (None for zeros), dh_n and dc_n of the final
    states (L·D, B, ·) (None for zeros). `grads` maps every parameter name of
    `names` to its gradient; ``bias_ih`` and ``bias_hh`` get equal values.
    """
    D = num_directions
    L = len(names) // D
    dh0: list[np.ndarray] = [np.empty(0)] * (L * D)
    dc0: list[np.ndarray] = [np.empty(0)] * (L * D)
    grads: dict[str, np.ndarray] = {}
    d_out = dy
    for layer in reversed(range(L)):
        d_in: np.ndarray | None = None
        for direction in range(D):
            k = layer * D + direction
            cache = trace.caches[layer][direction]
            dy_k = d_out
            if d_out is not None and D > 1:
                width = d_out.shape[-1] // D
                dy_k = d_out[..., direction * width : (direction + 1) * width]
            g = api.lstm_backward(
                cache,
                dy_k,
                None if dh_n is None else dh_n[k],
                None if dc_n is None else dc_n[k],
                num_threads=num_threads,
            )
            dh0[k], dc0[k] = g.dh0, g.dc0
            d_in = g.dx if d_in is None else d_in + g.dx
            n = names[k]
            grads[n.w_ih] = g.dw_ih
            grads[n.w_hh] = g.dw_hh
            if n.b_ih is not None and n.b_hh is not None:
                grads[n.b_ih] = g.db
                grads[n.b_hh] = g.db.copy()
            if n.w_hr is not None:
                grads[n.w_hr] = g.dw_hr
            if n.peephole is not None:
                grads[n.peephole] = g.dpeephole
        assert d_in is not None
        if layer > 0 and trace.masks[layer - 1] is not None:
            d_in = d_in * trace.masks[layer - 1]
        d_out = d_in
    assert d_out is not None
    return d_out, _stacked(dh0), _stacked(dc0), grads


def _stacked(states: list[np.ndarray]) -> np.ndarray:
    """`np.stack(states)`; a single layer and direction's state as a view of it, since
    np.stack costs microseconds, as much as a small layer's whole step."""
    return states[0][None] if len(states) == 1 else np.stack(states)
