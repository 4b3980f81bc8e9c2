"""Exact weight conversions between lstm_c (PyTorch's layout) and Keras/TensorFlow or ONNX.

lstm_c uses PyTorch's conventions: per layer ``k`` and direction (suffix
``_reverse`` for the second direction) a state_dict, a plain dict of NumPy
arrays, holds

==================  ===========  ==========================================
key                 shape        meaning
==================  ===========  ==========================================
``weight_ih_l{k}``  (4H, I)      input weights, gate blocks i, f, g, o
``weight_hh_l{k}``  (4H, H_out)  recurrent weights (H_out = P with projection)
``bias_ih_l{k}``    (4H,)        optional; only ``bias_ih + bias_hh`` matters
``bias_hh_l{k}``    (4H,)        optional
``weight_hr_l{k}``  (P, H)       optional projection
``peephole_l{k}``   (3, H)       optional peepholes, rows i, f, o
==================  ===========  ==========================================

A state_dict of a model without biases has no bias keys.

Keras / TensorFlow ``LSTM`` (:func:`from_keras`, :func:`to_keras`)
    ``kernel`` (I, 4H), ``recurrent_kernel`` (H, 4H), one ``bias`` (4H,); gate
    blocks i, f, c, o (ours, with c = g), so the conversion is a transpose.
    The single Keras bias becomes ``bias_ih`` with ``bias_hh = 0``; back to
    Keras the two biases are summed (exact when ``bias_hh`` is 0, otherwise
    rounded once, and then ``from_keras(*to_keras(sd))`` equals ``sd`` in
    function but not key by key). Keras has no projection and no peepholes:
    :func:`to_keras` refuses them. A Keras layer with ``go_backwards=True``
    has the same weights (pass ``reverse=True`` and run with
    ``reverse=True``), but Keras returns that layer's sequence in processing
    order, i.e. flipped in time relative to lstm_c's ``y``.

ONNX ``LSTM`` operator (:func:`from_onnx`, :func:`from_onnx_node`, :func:`to_onnx`)
    ``W`` (D, 4H, I), ``R`` (D, 4H, H), ``B`` (D, 8H) = ``[Wb | Rb]``,
    ``P`` (D, 3H); gate blocks i, o, f, c and peepholes i, o, f (lstm_c: gates
    i, f, g, o and peepholes i, f, o), so blocks are permuted. D = 2 is
    bidirectional, forward first. The peephole math is the same: i and f see
    c_{t-1}, o sees c_t. The conversion is a permutation in both directions,
    so round trips are exact.

    A one-direction ONNX LSTM with ``direction="reverse"`` is returned under
    ``_reverse`` keys only (``weight_ih_l0_reverse``, ...), and :func:`to_onnx`
    maps a state_dict with only ``_reverse`` keys back to D = 1, "reverse".
    Run it with ``lstm_c.lstm_forward(..., reverse=True)``. A one-direction
    layer class expects unsuffixed keys and reports the mismatch instead of
    silently running the weights forwards.

    ``layout=1`` (batch-major X, Y, initial_h, ...) is accepted: it does not
    change the weights. Run such a model with ``batch_first=True``, and note
    that its ``initial_h``/``Y_h`` are (B, D, H) instead of (D, B, H).

    What lstm_c does not compute is refused with a ValueError naming the
    attribute, never converted approximately: activations other than
    Sigmoid, Tanh, Tanh; ``clip``; ``input_forget=1``; and (in
    :func:`to_onnx`) projections and more than one layer.

    Padding: in ONNX Runtime, as in lstm_c, ``Y`` is 0 past a row's
    ``sequence_lens``, and the reverse direction starts at each row's own last
    valid step. A row of length 0, however, gets ``Y_h = Y_c = 0`` from ONNX
    Runtime, where lstm_c returns the initial state ``h0``, ``c0``.

Every function returns new C-contiguous arrays (never views of its inputs)
in the dtype it was given: float32 stays float32, float64 stays float64; the
arrays of one call must share a dtype. Errors name the argument, what it got
and what was expected. PyTorch tensors are accepted wherever arrays are (they
are converted with ``.detach().cpu().numpy()``); neither torch nor onnx is
imported by this module at import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lstm_c._params import KINDS, param_name, parse_param_name
from lstm_c._validation import (
    as_float_array_of_own_dtype,
    check_flag,
    check_int,
    check_ndim,
    check_shape,
    same_dtype,
)

__all__ = [
    "from_keras",
    "to_keras",
    "from_onnx",
    "from_onnx_node",
    "to_onnx",
    "onnx_attributes",
]

# Gate blocks. Ours: i, f, g, o. ONNX: i, o, f, c. Keras: i, f, c, o (= ours).
# For each of our blocks, the ONNX block it comes from, and the reverse map.
_OURS_FROM_ONNX_GATES = (0, 2, 3, 1)
_ONNX_FROM_OURS_GATES = (0, 3, 1, 2)
# Peepholes. Ours: i, f, o. ONNX: i, o, f. Swapping the last two is its own inverse.
_OURS_FROM_ONNX_PEEPHOLES = (0, 2, 1)
_ONNX_FROM_OURS_PEEPHOLES = (0, 2, 1)


_ONNX_ACTIVATIONS = ("sigmoid", "tanh", "tanh")
_ONNX_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
_ONNX_ATTRIBUTES = frozenset(
    {
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "input_forget",
        "layout",
    }
)


# ----------------------------------------------------------------------------
# Helpers


def _hidden_from_gates(name: str, rows: int, shape: tuple[int, ...], layout: str) -> int:
    """H from a 4H dimension of `name`; it must be a positive multiple of 4."""
    if rows == 0 or rows % 4:
        raise ValueError(
            f"{name} has shape {shape}; its 4*hidden_size dimension in {layout} must be a "
            f"positive multiple of 4 (four gate blocks), got {rows}"
        )
    return rows // 4


def _permute_blocks(array: np.ndarray, order: Sequence[int], axis: int = 0) -> np.ndarray:
    """Split `array` into len(order) equal blocks along `axis` and reorder them (a copy)."""
    blocks = np.split(array, len(order), axis=axis)
    return np.ascontiguousarray(np.concatenate([blocks[k] for k in order], axis=axis))


def _copy(array: np.ndarray) -> np.ndarray:
    return np.array(array, order="C", copy=True)


def _parse_state_dict(state_dict: Any) -> dict[tuple[int, bool], dict[str, np.ndarray]]:
    """Group a state_dict by (layer, reverse); unknown keys are a ValueError."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of parameter names to arrays, got {type(state_dict).__name__}"
        )
    groups: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        parsed = parse_param_name(key)
        if parsed is None:
            raise ValueError(
                f"state_dict has the key {key!r}; expected LSTM parameter names such as "
                f"'weight_ih_l0', 'bias_hh_l0_reverse' (kinds: {', '.join(KINDS)}); strip any "
                f"module prefix such as 'lstm.' first"
            )
        kind, layer, reverse = parsed
        groups.setdefault((layer, reverse), {})[kind] = as_float_array_of_own_dtype(
            f"state_dict[{key!r}]", value
        )
    if not groups:
        raise ValueError("state_dict is empty; expected at least 'weight_ih_l0' and 'weight_hh_l0'")
    return groups


def _check_direction(params: Mapping[str, np.ndarray], layer: int, reverse: bool) -> tuple[int, int, int]:
    """Check the shapes of one layer and direction; return (I, H, H_out)."""

    def key(kind: str) -> str:
        return f"state_dict[{param_name(kind, layer, reverse)!r}]"

    for kind in ("weight_ih", "weight_hh"):
        if kind not in params:
            present = ", ".join(sorted(param_name(k, layer, reverse) for k in params))
            raise ValueError(f"state_dict has no {param_name(kind, layer, reverse)!r} (has {present})")
    w_ih = params["weight_ih"]
    check_ndim(key("weight_ih"), w_ih, 2, "(4*hidden_size, input_size)")
    hidden = _hidden_from_gates(key("weight_ih"), w_ih.shape[0], w_ih.shape, "(4*hidden_size, input_size)")
    inputs = w_ih.shape[1]
    hidden_out = hidden
    if "weight_hr" in params:
        w_hr = params["weight_hr"]
        check_ndim(key("weight_hr"), w_hr, 2, "(proj_size, hidden_size)")
        if w_hr.shape[1] != hidden or w_hr.shape[0] < 1:
            raise ValueError(
                f"{key('weight_hr')} must have shape (proj_size, hidden_size) = (P, {hidden}) with "
                f"P >= 1, got {w_hr.shape}"
            )
        hidden_out = w_hr.shape[0]
    check_shape(
        key("weight_hh"),
        params["weight_hh"],
        (4 * hidden, hidden_out),
        "(4*hidden_size, proj_size)" if "weight_hr" in params else "(4*hidden_size, hidden_size)",
    )
    for kind in ("bias_ih", "bias_hh"):
        if kind in params:
            check_shape(key(kind), params[kind], (4 * hidden,), "(4*hidden_size,)")
    if "peephole" in params:
        check_shape(key("peephole"), params["peephole"], (3, hidden), "(3, hidden_size), rows i, f, o")
    same_dtype({param_name(kind, layer, reverse): a for kind, a in params.items()})
    return inputs, hidden, hidden_out


# ----------------------------------------------------------------------------
# Keras / TensorFlow


def _check_keras_activation(name: str, value: Any, expected: str, note: str = "") -> None:
    if not isinstance(value, str) or value.lower() != expected:
        raise ValueError(
            f"{name} is {value!r}; lstm_c computes only {name}={expected!r}{note}, "
            f"so this Keras layer cannot be converted exactly"
        )


def from_keras(
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any = None,
    *,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    layer: int = 0,
    reverse: bool = False,
) -> dict[str, np.ndarray]:
    """A Keras/TensorFlow ``LSTM`` layer's weights as an lstm_c (PyTorch) state_dict.

    Parameters
    ----------
    kernel : array_like, (I, 4H)
        Keras ``kernel``, gate blocks i, f, c, o along the columns.
    recurrent_kernel : array_like, (H, 4H)
        Keras ``recurrent_kernel``.
    bias : array_like, (4H,), optional
        Keras ``bias``; None for a layer with ``use_bias=False``.
    activation, recurrent_activation : str
        The layer's config values. Only ``"tanh"`` and ``"sigmoid"`` (Keras's
        defaults since 2.3; older Keras defaulted to ``hard_sigmoid``) are
        accepted; anything else is a ValueError.
    layer : int
        The layer index ``k`` of the keys (``weight_ih_l{k}``), for stacking.
    reverse : bool
        Store under ``_reverse`` keys, e.g. for the backward layer of a Keras
        ``Bidirectional`` wrapper::

            sd = {**from_keras(*fw.get_weights()), **from_keras(*bw.get_weights(), reverse=True)}

    Returns
    -------
    dict of str to ndarray
        ``weight_ih_l{k}`` (4H, I) = kernel.T, ``weight_hh_l{k}`` (4H, H) =
        recurrent_kernel.T and, when `bias` is given, ``bias_ih_l{k}`` = bias
        and ``bias_hh_l{k}`` = 0 (4H,). Without `bias` there are no bias keys,
        as in the state_dict of a model built with ``bias=False``. All new
        arrays in the inputs' dtype.

    Raises
    ------
    ValueError
        A shape does not fit, or an activation is not the default.
    TypeError
        A dtype is not float32/float64, or the dtypes differ.
    """
    _check_keras_activation("activation", activation, "tanh")
    _check_keras_activation(
        "recurrent_activation",
        recurrent_activation,
        "sigmoid",
        " (Keras before 2.3 defaulted to 'hard_sigmoid')",
    )
    layer = check_int("layer", layer, 0)
    reverse = check_flag("reverse", reverse)
    k = as_float_array_of_own_dtype("kernel", kernel)
    r = as_float_array_of_own_dtype("recurrent_kernel", recurrent_kernel)
    b = None if bias is None else as_float_array_of_own_dtype("bias", bias)
    dtype = same_dtype({"kernel": k, "recurrent_kernel": r, "bias": b})

    check_ndim("kernel", k, 2, "(input_size, 4*hidden_size)")
    hidden = _hidden_from_gates("kernel", k.shape[1], k.shape, "(input_size, 4*hidden_size)")
    check_shape("recurrent_kernel", r, (hidden, 4 * hidden), "(hidden_size, 4*hidden_size)")
    if b is not None:
        if b.shape == (8 * hidden,):
            raise ValueError(
                f"bias has shape {b.shape} = (8*hidden_size,), the layout of the old CuDNNLSTM layer; "
                f"expected the Keras LSTM bias (4*hidden_size,) = ({4 * hidden},)"
            )
        check_shape("bias", b, (4 * hidden,), "(4*hidden_size,)")

    out = {
        param_name("weight_ih", layer, reverse): _copy(k.T),
        param_name("weight_hh", layer, reverse): _copy(r.T),
    }
    if b is not None:
        out[param_name("bias_ih", layer, reverse)] = _copy(b)
        out[param_name("bias_hh", layer, reverse)] = np.zeros(4 * hidden, dtype)
    return out


def to_keras(
    state_dict: Mapping[str, Any], layer: int = 0, reverse: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One layer and direction of an lstm_c (PyTorch) state_dict as Keras ``LSTM`` weights.

    Parameters
    ----------
    state_dict : mapping of str to array_like
        Keys as in the module docstring; other layers and directions may be
        present and are ignored.
    layer : int
        Which layer ``k``.
    reverse : bool
        Take the ``_reverse`` direction.

    Returns
    -------
    kernel : ndarray, (I, 4H)
        ``weight_ih.T``; gate blocks i, f, c, o.
    recurrent_kernel : ndarray, (H, 4H)
        ``weight_hh.T``.
    bias : ndarray, (4H,), or None
        ``bias_ih + bias_hh`` (either may be absent); None when both are
        absent, for a Keras layer with ``use_bias=False``. Ready for
        ``keras_layer.set_weights([kernel, recurrent_kernel, bias])``.

    Raises
    ------
    ValueError
        The layer/direction is missing, a shape does not fit, or it has a
        projection (``weight_hr``) or peepholes, which Keras's LSTM lacks.
    """
    layer = check_int("layer", layer, 0)
    reverse = check_flag("reverse", reverse)
    groups = _parse_state_dict(state_dict)
    if (layer, bool(reverse)) not in groups:
        have = ", ".join(f"layer {l}{' reverse' if r else ''}" for l, r in sorted(groups))
        raise ValueError(
            f"state_dict has no {param_name('weight_ih', layer, reverse)!r} (layer={layer}, "
            f"reverse={bool(reverse)}); it has {have}"
        )
    params = groups[(layer, bool(reverse))]
    _check_direction(params, layer, bool(reverse))
    if "weight_hr" in params:
        raise ValueError(
            f"state_dict has {param_name('weight_hr', layer, reverse)!r} (a projection, proj_size > 0); "
            f"Keras's LSTM has no projection, so it cannot be converted exactly"
        )
    if "peephole" in params:
        raise ValueError(
            f"state_dict has {param_name('peephole', layer, reverse)!r} (peephole connections); "
            f"Keras's LSTM has no peepholes, so it cannot be converted exactly"
        )
    kernel = _copy(params["weight_ih"].T)
    recurrent_kernel = _copy(params["weight_hh"].T)
    biases = [params[k] for k in ("bias_ih", "bias_hh") if k in params]
    bias = None
    if biases:
        bias = _copy(biases[0]) if len(biases) == 1 else biases[0] + biases[1]
    return kernel, recurrent_kernel, bias


# ----------------------------------------------------------------------------
# ONNX


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _check_onnx_attributes(
    directions: int,
    activations: Sequence[str] | None,
    clip: float | None,
    input_forget: int,
    layout: int,
    direction: str | None,
) -> str:
    """Refuse what lstm_c does not compute; return the direction."""
    if direction is None:
        direction = "forward" if directions == 1 else "bidirectional"
    direction = _text(direction)
    if not isinstance(direction, str) or direction not in _ONNX_DIRECTIONS:
        raise ValueError(f"direction is {direction!r}; expected 'forward', 'reverse' or 'bidirectional'")
    if _ONNX_DIRECTIONS[direction] != directions:
        raise ValueError(
            f"direction is {direction!r}, which needs W's num_directions = "
            f"{_ONNX_DIRECTIONS[direction]}, but W has num_directions = {directions}"
        )
    if activations is not None:
        if isinstance(activations, (str, bytes)) or not isinstance(activations, Iterable):
            raise ValueError(
                f"activations is {activations!r}; expected a list of activation names, "
                f"e.g. {['Sigmoid', 'Tanh', 'Tanh'] * directions!r}"
            )
        names = [_text(a) for a in activations]
        expected = ["Sigmoid", "Tanh", "Tanh"] * directions
        if len(names) != len(expected) or any(
            not isinstance(a, str) or a.lower() != e for a, e in zip(names, _ONNX_ACTIVATIONS * directions)
        ):
            raise ValueError(
                f"activations is {names!r}; lstm_c computes only {expected!r} (f, g, h per direction), "
                f"so this ONNX LSTM cannot be converted exactly"
            )
    if clip is not None:
        raise ValueError(
            f"clip is {clip!r}; lstm_c does not clip the gate pre-activations, "
            f"so an ONNX LSTM with clip cannot be converted exactly"
        )
    if isinstance(input_forget, bool) or input_forget not in (0, 1):
        raise ValueError(f"input_forget must be 0 or 1, got {input_forget!r}")
    if input_forget == 1:
        raise ValueError(
            "input_forget is 1 (input and forget gates coupled); lstm_c computes independent "
            "gates, so this ONNX LSTM cannot be converted exactly"
        )
    if isinstance(layout, bool) or layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1, got {layout!r}")
    return direction


def from_onnx(
    W: Any,
    R: Any,
    B: Any = None,
    P: Any = None,
    *,
    activations: Sequence[str] | None = None,
    clip: float | None = None,
    input_forget: int = 0,
    layout: int = 0,
    direction: str | None = None,
) -> dict[str, np.ndarray]:
    """The weights of an ONNX ``LSTM`` operator as a one-layer lstm_c (PyTorch) state_dict.

    Parameters
    ----------
    W : array_like, (D, 4H, I)
        Input weights, gate blocks i, o, f, c; D = 2 when bidirectional.
    R : array_like, (D, 4H, H)
        Recurrent weights, gate blocks i, o, f, c.
    B : array_like, (D, 8H), optional
        ``[Wb | Rb]``, each gate blocks i, o, f, c. None (ONNX's default of
        zeros) gives a state_dict without bias keys.
    P : array_like, (D, 3H), optional
        Peepholes in order i, o, f. None gives no peephole keys.
    activations, clip, input_forget, layout, direction
        The operator's attributes, checked so that nothing is converted that
        lstm_c would compute differently: `activations` must be None or
        ``["Sigmoid", "Tanh", "Tanh"]`` per direction (case-insensitive),
        `clip` None, `input_forget` 0. `layout` 0 or 1 (both accepted; the
        weights do not depend on it). `direction` None infers "forward"
        (D = 1) or "bidirectional" (D = 2); "reverse" needs D = 1.

    Returns
    -------
    dict of str to ndarray
        ``weight_ih_l0`` (4H, I), ``weight_hh_l0`` (4H, H), and when given
        ``bias_ih_l0``, ``bias_hh_l0`` (4H,) and ``peephole_l0`` (3, H) in
        lstm_c's order i, f, o. With D = 2 the same again with ``_reverse``.
        With ``direction="reverse"`` (D = 1) only the ``_reverse`` keys: run
        them with ``lstm_forward(..., reverse=True)``. New arrays in the
        inputs' dtype.

    Raises
    ------
    ValueError
        A shape does not fit, or an attribute asks for something lstm_c does
        not compute (the message names it).
    TypeError
        A dtype is not float32/float64, or the dtypes differ.
    """
    w = as_float_array_of_own_dtype("W", W)
    r = as_float_array_of_own_dtype("R", R)
    b = None if B is None else as_float_array_of_own_dtype("B", B)
    p = None if P is None else as_float_array_of_own_dtype("P", P)
    same_dtype({"W": w, "R": r, "B": b, "P": p})

    check_ndim("W", w, 3, "(num_directions, 4*hidden_size, input_size)")
    directions = w.shape[0]
    if directions not in (1, 2):
        raise ValueError(
            f"W must have shape (num_directions, 4*hidden_size, input_size) with num_directions "
            f"1 or 2, got {w.shape}"
        )
    hidden = _hidden_from_gates("W", w.shape[1], w.shape, "(num_directions, 4*hidden_size, input_size)")
    check_shape("R", r, (directions, 4 * hidden, hidden), "(num_directions, 4*hidden_size, hidden_size)")
    if b is not None:
        check_shape("B", b, (directions, 8 * hidden), "(num_directions, 8*hidden_size)")
    if p is not None:
        check_shape("P", p, (directions, 3 * hidden), "(num_directions, 3*hidden_size)")
    direction = _check_onnx_attributes(directions, activations, clip, input_forget, layout, direction)

    out: dict[str, np.ndarray] = {}
    for d in range(directions):
        reverse = d == 1 or direction == "reverse"
        out[param_name("weight_ih", 0, reverse)] = _permute_blocks(w[d], _OURS_FROM_ONNX_GATES)
        out[param_name("weight_hh", 0, reverse)] = _permute_blocks(r[d], _OURS_FROM_ONNX_GATES)
        if b is not None:
            out[param_name("bias_ih", 0, reverse)] = _permute_blocks(
                b[d, : 4 * hidden], _OURS_FROM_ONNX_GATES
            )
            out[param_name("bias_hh", 0, reverse)] = _permute_blocks(
                b[d, 4 * hidden :], _OURS_FROM_ONNX_GATES
            )
        if p is not None:
            out[param_name("peephole", 0, reverse)] = _permute_blocks(
                p[d], _OURS_FROM_ONNX_PEEPHOLES
            ).reshape(3, hidden)
    return out


def _initializer_map(initializers: Any) -> Mapping[str, Any]:
    """A mapping name -> value; an iterable of onnx TensorProto (graph.initializer) is accepted."""
    if isinstance(initializers, Mapping):
        return initializers
    if isinstance(initializers, Iterable) and not isinstance(initializers, (str, bytes)):
        items = list(initializers)
        if all(hasattr(t, "name") and hasattr(t, "dims") for t in items):
            return {t.name: t for t in items}
    raise TypeError(
        f"initializers must be a dict of name -> array (or graph.initializer), "
        f"got {type(initializers).__name__}"
    )


def _tensor_value(value: Any) -> Any:
    """An onnx TensorProto as an ndarray; anything else as it is."""
    if hasattr(value, "dims") and hasattr(value, "data_type"):
        from onnx import numpy_helper  # lazy: onnx is optional

        return numpy_helper.to_array(value)
    return value


def from_onnx_node(node: Any, initializers: Any) -> dict[str, np.ndarray]:
    """The weights of an ONNX ``LSTM`` node as a one-layer lstm_c state_dict.

    Reads the node's attributes and weight inputs, checks them and calls
    :func:`from_onnx`. onnx is imported only when this is called.

    Parameters
    ----------
    node : onnx.NodeProto
        A node with op_type "LSTM" (default domain). Inputs W (1) and R (2)
        must be initializers; B (3) and P (7) must be initializers when
        present. X, sequence_lens and the initial states are not read, nor
        are ``activation_alpha``/``activation_beta`` (Sigmoid and Tanh, the
        only activations accepted, take no parameters).
    initializers : mapping of str to array_like or onnx.TensorProto, or graph.initializer
        The graph's constant tensors by name.

    Returns
    -------
    dict of str to ndarray
        As :func:`from_onnx`: ``_reverse`` keys for the second direction of a
        bidirectional node, and only ``_reverse`` keys for a node with
        ``direction="reverse"``.

    Raises
    ------
    ValueError
        Not an LSTM node, an unknown attribute, ``hidden_size`` disagreeing
        with R, a weight input that is not an initializer, or an attribute
        that lstm_c does not compute (see :func:`from_onnx`).
    """
    from onnx import helper  # lazy: onnx is optional

    op_type = getattr(node, "op_type", None)
    if op_type != "LSTM":
        raise ValueError(f"node must be an ONNX node with op_type 'LSTM', got op_type {op_type!r}")
    if node.domain not in ("", "ai.onnx"):
        raise ValueError(f"node must be in the default ONNX domain, got domain {node.domain!r}")
    attributes = {a.name: _text(helper.get_attribute_value(a)) for a in node.attribute}
    unknown = sorted(set(attributes) - _ONNX_ATTRIBUTES)
    if unknown:
        raise ValueError(
            f"node has the attribute(s) {unknown}, unknown to the ONNX LSTM operator that lstm_c "
            f"converts (known: {sorted(_ONNX_ATTRIBUTES)})"
        )
    table = _initializer_map(initializers)
    inputs = list(node.input)

    def weight(index: int, name: str, required: bool) -> Any:
        tensor = inputs[index] if index < len(inputs) else ""
        if not tensor:
            if required:
                raise ValueError(f"node has no input {name} (input {index}); an ONNX LSTM needs it")
            return None
        if tensor not in table:
            raise ValueError(
                f"node input {name} (input {index}) is {tensor!r}, which is not in initializers; "
                f"only constant weights can be converted"
            )
        return _tensor_value(table[tensor])

    W, R = weight(1, "W", True), weight(2, "R", True)
    B, P = weight(3, "B", False), weight(7, "P", False)

    activations = attributes.get("activations")
    if activations is not None:
        activations = [_text(a) for a in activations]
    result = from_onnx(
        W,
        R,
        B,
        P,
        activations=activations,
        clip=attributes.get("clip"),
        input_forget=attributes.get("input_forget", 0),
        layout=attributes.get("layout", 0),
        direction=attributes.get("direction", "forward"),
    )
    if "hidden_size" in attributes:
        hidden = np.shape(R)[2]
        if attributes["hidden_size"] != hidden:
            raise ValueError(
                f"hidden_size is {attributes['hidden_size']}, but R has shape {np.shape(R)} "
                f"(num_directions, 4*hidden_size, hidden_size), i.e. hidden_size {hidden}"
            )
    return result


def _onnx_layer(state_dict: Mapping[str, Any]) -> tuple[list[dict[str, np.ndarray]], str, int, int]:
    """The directions of a one-layer state_dict, its ONNX direction, I and H."""
    groups = _parse_state_dict(state_dict)
    layers = sorted({layer for layer, _ in groups})
    if layers != [0]:
        raise ValueError(
            f"state_dict has layers {layers}; the ONNX LSTM operator is one layer, so to_onnx "
            f"converts only a one-layer state_dict (keys '..._l0'); build a chain of LSTM nodes "
            f"from one-layer state_dicts for a stack"
        )
    reverses = sorted(reverse for _, reverse in groups)
    direction = {(False,): "forward", (True,): "reverse", (False, True): "bidirectional"}[tuple(reverses)]
    shapes = []
    for reverse in reverses:
        params = groups[(0, reverse)]
        shapes.append(_check_direction(params, 0, reverse))
        if "weight_hr" in params:
            raise ValueError(
                f"state_dict has {param_name('weight_hr', 0, reverse)!r} (a projection, proj_size > 0); "
                f"the ONNX LSTM operator has no projection, so it cannot be converted exactly"
            )
    if len(set(shapes)) > 1:
        raise ValueError(
            f"the two directions of state_dict disagree: (input_size, hidden_size) is "
            f"{shapes[0][:2]} forward and {shapes[1][:2]} reverse"
        )
    directions = [groups[(0, reverse)] for reverse in reverses]
    same_dtype({param_name(kind, 0, rev): a for rev, p in zip(reverses, directions) for kind, a in p.items()})
    return directions, direction, shapes[0][0], shapes[0][1]


def onnx_attributes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The ONNX LSTM attributes that go with :func:`to_onnx` of `state_dict`.

    Parameters
    ----------
    state_dict : mapping of str to array_like
        One layer, as for :func:`to_onnx`.

    Returns
    -------
    dict
        ``{"hidden_size": H, "direction": "forward" | "reverse" | "bidirectional"}``,
        for ``onnx.helper.make_node("LSTM", ..., **onnx_attributes(sd))``.
    """
    _, direction, _, hidden = _onnx_layer(state_dict)
    return {"hidden_size": hidden, "direction": direction}


def to_onnx(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A one-layer lstm_c (PyTorch) state_dict as the weight inputs of an ONNX ``LSTM`` operator.

    Parameters
    ----------
    state_dict : mapping of str to array_like
        One layer (keys ``..._l0``), forward, reverse-only (only ``_reverse``
        keys) or bidirectional; no projection.

    Returns
    -------
    dict of str to ndarray
        ``"W"`` (D, 4H, I) and ``"R"`` (D, 4H, H), gate blocks i, o, f, c;
        ``"B"`` (D, 8H) = ``[Wb | Rb]`` when the state_dict has a bias (a
        missing one of ``bias_ih``/``bias_hh``, or a direction without
        biases, is zeros); ``"P"`` (D, 3H), order i, o, f, when it has
        peepholes (zeros for a direction without). No ``"B"``/``"P"`` key
        when it has none: ONNX's default is zeros. D = 2 (forward, then
        reverse) for a bidirectional state_dict. Use :func:`onnx_attributes`
        for the node's ``hidden_size`` and ``direction``.

    Raises
    ------
    ValueError
        More than one layer, a projection, an unknown key or a shape that
        does not fit.
    """
    directions, _, _, hidden = _onnx_layer(state_dict)
    dtype = directions[0]["weight_ih"].dtype
    out = {
        "W": np.stack([_permute_blocks(p["weight_ih"], _ONNX_FROM_OURS_GATES) for p in directions]),
        "R": np.stack([_permute_blocks(p["weight_hh"], _ONNX_FROM_OURS_GATES) for p in directions]),
    }
    if any("bias_ih" in p or "bias_hh" in p for p in directions):
        zeros = np.zeros(4 * hidden, dtype)
        out["B"] = np.stack(
            [
                np.concatenate(
                    [_permute_blocks(p.get(k, zeros), _ONNX_FROM_OURS_GATES) for k in ("bias_ih", "bias_hh")]
                )
                for p in directions
            ]
        )
    if any("peephole" in p for p in directions):
        zeros = np.zeros((3, hidden), dtype)
        out["P"] = np.stack(
            [
                _permute_blocks(p.get("peephole", zeros), _ONNX_FROM_OURS_PEEPHOLES).reshape(3 * hidden)
                for p in directions
            ]
        )
    return out
