"""What the test modules share: problem builders, tolerances, comparisons and the reference stack.

Imported as ``import helpers``: pyproject.toml's pytest options put tests/ on sys.path
(``pythonpath = ["tests"]``), also when pytest runs as ``pytest /abs/path/tests``
from elsewhere (the wheel check).

- Problems: `make_problem` (one layer and direction, the functional API),
  `grads_for` (output gradients of a problem), `layer_inputs` (an `lstm_c.LSTM`).
- Tolerances: `TOLERANCES`, one row per dtype; `assert_close` and `assert_identical`.
- The reference stack: `reference_layer` runs what an `lstm_c.LSTM` computes
  through the package's own layer stack (`lstm_c._stack`) over the NumPy oracle
  (`lstm_c.reference`), with the parameter names of `lstm_c._params`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pytest

import lstm_c
from lstm_c import reference
from lstm_c._params import ParamNames, layer_param_names
from lstm_c._stack import stack_backward, stack_forward

DTYPES = [np.float32, np.float64]
APIS = pytest.mark.parametrize("api", [lstm_c, reference], ids=["lstm_c", "reference"])

# One layer without and with both extras (projection P = 1, peepholes), for the edge cases.
VARIANTS = {"plain": dict(), "projection_peephole": dict(P=1, peephole=True)}

# Which input each field of LSTMGrads is the gradient of (db is that of b_ih and of b_hh).
GRAD_OF = dict(
    dx="x", dh0="h0", dc0="c0", dw_ih="w_ih", dw_hh="w_hh", db="b_ih", dw_hr="w_hr", dpeephole="peephole"
)


# ----------------------------------------------------------------------------- tolerances


class Tolerance(NamedTuple):
    rtol: float  # elementwise, the kernels (or a peer) against the reference
    atol: float
    scaled: float  # rtol and atol relative to the largest entry: randomised shapes (hypothesis)


TOLERANCES = {
    np.float64: Tolerance(rtol=1e-10, atol=1e-12, scaled=1e-9),
    np.float32: Tolerance(rtol=1e-4, atol=1e-5, scaled=2e-4),
}


def tol(dtype: Any) -> dict[str, float]:
    """rtol and atol of `dtype`, as keywords of numpy.testing.assert_allclose."""
    t = TOLERANCES[np.dtype(dtype).type]
    return dict(rtol=t.rtol, atol=t.atol)


def _pairs(actual: Any, expected: Any, names: Sequence[Any] | None) -> list[tuple[str, Any, Any]]:
    if isinstance(actual, np.ndarray) or actual is None or isinstance(expected, np.ndarray):
        return [("", actual, expected)]
    names = list(names or getattr(actual, "_fields", None) or range(len(actual)))
    actual, expected = list(actual), list(expected)
    assert len(actual) == len(expected), (len(actual), len(expected))
    return [(str(n), a, b) for n, a, b in zip(names, actual, expected)]


def assert_close(
    actual: Any,
    expected: Any,
    dtype: Any = None,
    *,
    names: Sequence[Any] | None = None,
    scaled: bool = False,
    what: str = "",
) -> None:
    """Arrays, or sequences of arrays (None pairs with None), equal within the tolerance of a dtype.

    `dtype`, when given, is also the dtype every actual array must have; else the
    tolerance is that of each actual array. ``scaled=True`` measures both
    tolerances relative to the largest entry of the expected array.
    """
    for name, a, b in _pairs(actual, expected, names):
        label = f"{what} {name}".strip()
        if a is None or b is None:
            assert a is None and b is None, label
            continue
        b = np.asarray(b)
        if dtype is not None:
            assert a.dtype == dtype, (label, a.dtype, dtype)
        assert a.shape == b.shape, (label, a.shape, b.shape)
        t = TOLERANCES[np.dtype(dtype or a.dtype).type]
        if scaled:
            scale = max(1.0, float(np.abs(b).max(initial=0)))
            np.testing.assert_allclose(a, b, rtol=t.scaled, atol=t.scaled * scale, err_msg=label)
        else:
            np.testing.assert_allclose(a, b, rtol=t.rtol, atol=t.atol, err_msg=label)


def assert_identical(actual: Any, expected: Any, names: Sequence[Any] | None = None) -> None:
    """Arrays, or sequences of arrays (None pairs with None), equal bitwise in shape and dtype."""
    for name, a, b in _pairs(actual, expected, names):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=name)


def assert_mentions(message: Any, words: Sequence[str]) -> None:
    """Every one of `words` is in `message` (a string, or what pytest.raises caught)."""
    text = str(getattr(message, "value", message))
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


# ----------------------------------------------------------------------------- the functional API


def make_problem(
    rng: np.random.Generator,
    T: int,
    B: int,
    I: int,
    H: int,
    dtype: Any = np.float64,
    *,
    P: int = 0,
    peephole: bool = False,
    batch_first: bool = False,
    bias: bool = True,
    state: bool = True,
) -> dict[str, Any]:
    """Random `lstm_forward` inputs of one layer, scaled so that the gates are not saturated.

    Keys x, w_ih, w_hh, b_ih, b_hh, h0, c0 (None without `bias` / `state`), and
    w_hr (P, H) with P > 0, peephole (3, H) with `peephole`.
    """
    out = P or H
    p = dict(
        x=rng.standard_normal((B, T, I) if batch_first else (T, B, I)),
        w_ih=rng.standard_normal((4 * H, I)) / np.sqrt(max(I, 1)),
        w_hh=rng.standard_normal((4 * H, out)) / np.sqrt(out),
        b_ih=rng.standard_normal(4 * H) * 0.5 if bias else None,
        b_hh=rng.standard_normal(4 * H) * 0.5 if bias else None,
        h0=rng.standard_normal((B, out)) * 0.5 if state else None,
        c0=rng.standard_normal((B, H)) if state else None,
    )
    if P:
        p["w_hr"] = rng.standard_normal((P, H)) / np.sqrt(H)
    if peephole:
        p["peephole"] = rng.standard_normal((3, H)) * 0.5
    return {k: None if v is None else v.astype(dtype) for k, v in p.items()}


def grads_for(
    rng: np.random.Generator, problem: Mapping[str, Any], *, batch_first: bool = False, which: str = "all"
) -> tuple[np.ndarray | None, ...]:
    """Random output gradients (dy, dh_n, dc_n) of `problem`'s forward, in its dtype.

    `which`: "all", "dy_only", "state_only" or "none" (None for those left out).
    """
    x, w_hh = problem["x"], problem["w_hh"]
    T, B = (x.shape[1], x.shape[0]) if batch_first else x.shape[:2]
    H, out, dtype = w_hh.shape[0] // 4, w_hh.shape[1], w_hh.dtype
    shape = (B, T) if batch_first else (T, B)
    dy = rng.standard_normal((*shape, out)).astype(dtype) if which in ("all", "dy_only") else None
    states = which in ("all", "state_only")
    dh = rng.standard_normal((B, out)).astype(dtype) if states else None
    dc = rng.standard_normal((B, H)).astype(dtype) if states else None
    return dy, dh, dc


def like(rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Random arrays of the shapes and dtypes of `arrays` (e.g. output gradients of y, h_n, c_n)."""
    return tuple(rng.standard_normal(a.shape).astype(a.dtype) for a in arrays)


def run(
    api: Any,
    problem: Mapping[str, Any],
    grads: Sequence[Any] = (),
    num_threads: int | None = None,
    **options: Any,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], Any]:
    """Forward and backward through `api`: (y, h_n, c_n) and the LSTMGrads."""
    y, h, c, cache = api.lstm_forward(**problem, **options, num_threads=num_threads)
    return (y, h, c), api.lstm_backward(cache, *grads, num_threads=num_threads)


def numerical_gradient(loss: Any, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of loss() with respect to every element of `array` (changed in place)."""
    grad = np.zeros(array.shape)
    flat = array.reshape(-1)
    for k in range(flat.size):
        keep = flat[k]
        flat[k] = keep + eps
        up = loss()
        flat[k] = keep - eps
        down = loss()
        flat[k] = keep
        grad.reshape(-1)[k] = (up - down) / (2 * eps)
    return grad


def check_finite_differences(
    api: Any,
    problem: dict[str, Any],
    options: Mapping[str, Any],
    rng: np.random.Generator,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """`api`'s gradients of a random linear loss of (y, h_n, c_n) equal central differences."""
    y, h, c, cache = api.lstm_forward(**problem, **options)
    dy, dh, dc = like(rng, y, h, c)
    g = api.lstm_backward(cache, dy, dh, dc)

    def loss() -> float:
        y, h, c, _ = api.lstm_forward(**problem, **options, training=False)
        return float((y * dy).sum() + (h * dh).sum() + (c * dc).sum())

    for field, name in GRAD_OF.items():
        if problem.get(name) is None:
            continue
        numeric = numerical_gradient(loss, problem[name])
        np.testing.assert_allclose(getattr(g, field), numeric, rtol=rtol, atol=atol, err_msg=field)


# ----------------------------------------------------------------------------- arrays in other forms


LAYOUTS = ["fortran", "strided", "negative", "swapped", "read_only", "list"]


def as_layout(a: Any, layout: str) -> Any:
    """The same values in another memory layout (or as a list)."""
    a = np.asarray(a)
    if layout == "list":
        return a.tolist()
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if layout == "negative":
        return np.flip(np.flip(a, axis=-1).copy(), axis=-1)
    if layout == "swapped" and a.ndim >= 2:
        return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)
    if layout == "read_only":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a.copy()


def zero_stride(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """A read-only array of `shape` that takes one element of memory."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def run_in_child(script: str, cwd: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`script` in a new interpreter (outside the source tree: cwd), so that a crash fails
    the test that ran it instead of ending the test run; a crash prints its Python stack."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )


def child_failure(result: subprocess.CompletedProcess) -> str:
    return (
        f"exit code {result.returncode} (a negative code is the signal that killed it)\n"
        f"{result.stderr[-2000:]}"
    )


# ----------------------------------------------------------------------------- the layer


class LayerInputs(NamedTuple):
    x: np.ndarray
    hx: tuple[np.ndarray, np.ndarray] | None  # (h0, c0)
    dy: np.ndarray
    dhx: tuple[np.ndarray, np.ndarray]  # gradients of (h_n, c_n)


def layer_inputs(
    m: lstm_c.LSTM, rng: np.random.Generator, T: int, B: int, *, unbatched: bool = False, hx: bool = True
) -> LayerInputs:
    """Random inputs, initial state and output gradients of `m` in its dtype and layout."""
    dtype, LD, features = m.dtype, m.num_layers * m.num_directions, m.num_directions * m.output_size
    batch = () if unbatched else (B,)
    if unbatched:
        steps: tuple[int, ...] = (T,)
    else:
        steps = (B, T) if m.batch_first else (T, B)
    x = rng.standard_normal((*steps, m.input_size)).astype(dtype)
    h_shape, c_shape = (LD, *batch, m.output_size), (LD, *batch, m.hidden_size)
    state = None
    if hx:
        state = (
            rng.standard_normal(h_shape).astype(dtype) * dtype.type(0.5),
            rng.standard_normal(c_shape).astype(dtype),
        )
    dy = rng.standard_normal((*steps, features)).astype(dtype)
    dhx = (rng.standard_normal(h_shape).astype(dtype), rng.standard_normal(c_shape).astype(dtype))
    return LayerInputs(x, state, dy, dhx)


def layer_call(m: lstm_c.LSTM, x: Any, hx: Any, lengths: Any, dy: Any, dhx: Any) -> tuple[np.ndarray, ...]:
    """m's forward and backward: (y, h_n, c_n, dx, dh0, dc0, *gradients in state_dict order)."""
    y, (h, c) = m(x, hx, lengths=lengths)
    dx, (dh0, dc0) = m.backward(dy, dhx)
    return (y, h, c, dx, dh0, dc0) + tuple(m.grads.values())


def layer_call_names(m: lstm_c.LSTM) -> list[str]:
    return ["y", "h_n", "c_n", "dx", "dh0", "dc0", *m.state_dict()]


def layer_names(m: lstm_c.LSTM) -> list[ParamNames]:
    """The names of m's parameters per layer and direction, from lstm_c._params."""
    return layer_param_names(
        m.num_layers, m.num_directions, bias=m.bias, projection=m.proj_size > 0, peephole=m.peephole
    )


class ReferenceBackward(NamedTuple):
    dx: np.ndarray
    dh0: np.ndarray
    dc0: np.ndarray
    grads: dict[str, np.ndarray]


def reference_layer(
    m: lstm_c.LSTM,
    x: np.ndarray,
    hx: Any = None,
    lengths: Any = None,
    *,
    masks: Sequence[np.ndarray | None] | None = None,
    dy: Any = None,
    dhx: Any = None,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ReferenceBackward | None]:
    """What `m` computes, by the package's layer stack (lstm_c._stack) over lstm_c.reference.

    x is batched, in m's layout; `masks[k - 1]` multiplies the input of layer k
    (dropout: pass ``m._trace.masks``). Returns (y, h_n, c_n) and, when `dy` or
    `dhx` is given, (dx, dh0, dc0, grads) with grads keyed by parameter name.
    """
    names = layer_names(m)
    D = m.num_directions
    h0, c0 = (None, None) if hx is None else hx

    def dropout_mask(layer: int, shape: tuple[int, ...]) -> np.ndarray | None:
        return None if masks is None else masks[layer - 1]

    training = dy is not None or dhx is not None
    y, h_n, c_n, trace = stack_forward(
        reference,
        m.state_dict(),
        names,
        D,
        x,
        h0,
        c0,
        lengths=lengths,
        batch_first=m.batch_first,
        training=training,
        dropout_mask=dropout_mask,
    )
    if not training:
        return (y, h_n, c_n), None
    assert trace is not None
    dh_n, dc_n = (None, None) if dhx is None else dhx
    dx, dh0, dc0, grads = stack_backward(reference, names, D, trace, dy, dh_n, dc_n)
    return (y, h_n, c_n), ReferenceBackward(dx, dh0, dc0, grads)


def reference_layer_call(
    m: lstm_c.LSTM,
    x: Any,
    hx: Any,
    lengths: Any,
    dy: Any,
    dhx: Any,
    masks: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, ...]:
    """`reference_layer` in the order of `layer_call`."""
    forward, backward = reference_layer(m, x, hx, lengths, masks=masks, dy=dy, dhx=dhx)
    assert backward is not None
    return (
        *forward,
        backward.dx,
        backward.dh0,
        backward.dc0,
        *(backward.grads[name] for name in m.state_dict()),
    )
