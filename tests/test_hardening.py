"""Hardening: bad input, odd layouts, degenerate sizes, the 32-bit BLAS guard and numerics.

What test_errors.py, test_layer.py, test_interop.py and test_cli.py already check
is not repeated here; this file adds the cases they leave out. Every refusal is
also checked to happen before any compiled kernel runs (the `kernels` fixture
counts the calls into lstm_c._lstm).

Threads, fork and state are in test_threads.py, leaks and the AddressSanitizer
build in test_memory.py, randomised comparisons with the reference in
test_properties.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest

import lstm_c
from lstm_c import LSTM, _lstm, _validation, interop, reference
from lstm_c._validation import BLAS_INT_MAX, MAX_THREADS

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
APIS = pytest.mark.parametrize("api", [lstm_c, reference], ids=["lstm_c", "reference"])
T, B, I, H = 4, 3, 5, 6


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def kernels(monkeypatch):
    """The names of the compiled kernels called during the test, in order."""
    calls: list[str] = []
    for name in ("forward", "backward", "step"):
        original = getattr(_lstm, name, None)
        if original is None:
            continue

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_lstm, name, spy)
    return calls


def make_problem(rng, T, B, I, H, dtype=np.float64, *, P=0, peephole=False, batch_first=False,
                 bias=True, state=True):
    """Random inputs of one layer, scaled so that the gates are not saturated."""
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


def output_grads(rng, y, h, c):
    return tuple(rng.standard_normal(a.shape).astype(a.dtype) for a in (y, h, c))


def run(api, problem, grads, **options):
    """Forward and backward through `api`: (y, h_n, c_n) and the LSTMGrads."""
    y, h, c, cache = api.lstm_forward(**problem, **options)
    return (y, h, c), api.lstm_backward(cache, *grads)


def assert_same(ours, theirs, dtype=np.float64, names=None):
    names = names or getattr(ours, "_fields", None) or range(len(ours))
    for name, a, b in zip(names, ours, theirs):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert a.shape == b.shape, (name, a.shape, b.shape)
        np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=str(name))


def assert_identical(ours, theirs, names=None):
    names = names or getattr(ours, "_fields", None) or range(len(ours))
    for name, a, b in zip(names, ours, theirs):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=str(name))


def numerical_gradient(loss, array, eps=1e-6):
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


# Which input each field of LSTMGrads is the gradient of (db is that of b_ih and of b_hh).
GRAD_OF = dict(dx="x", dh0="h0", dc0="c0", dw_ih="w_ih", dw_hh="w_hh", db="b_ih", dw_hr="w_hr",
               dpeephole="peephole")


def check_finite_differences(problem, options, rng):
    """lstm_c's gradients of a random linear loss of (y, h_n, c_n) equal central differences."""
    y, h, c, cache = lstm_c.lstm_forward(**problem, **options)
    dy, dh, dc = output_grads(rng, y, h, c)
    g = lstm_c.lstm_backward(cache, dy, dh, dc)

    def loss():
        y, h, c, _ = lstm_c.lstm_forward(**problem, **options, training=False)
        return float((y * dy).sum() + (h * dh).sum() + (c * dc).sum())

    for field, name in GRAD_OF.items():
        analytic = getattr(g, field)
        if problem.get(name) is None:
            continue
        numeric = numerical_gradient(loss, problem[name])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=field)


# ============================================================================= bad input


# (what to change, the exception, words the message must contain). test_errors.py
# has the basic shape, dtype and lengths cases; these are the ones it leaves out.
FORWARD_CASES = {
    "x_ragged": (dict(x=[[[0.0] * I] * B] * (T - 1) + [[[0.0] * I] * (B - 1)]), ValueError,
                 ["x", "could not be converted"]),
    "x_none": (dict(x=None), TypeError, ["x", "real numbers", "object"]),
    "x_0d": (dict(x=np.float64(1.0)), ValueError, ["x", "3-D", "0-D"]),
    "x_strings": (dict(x=np.full((T, B, I), "a")), TypeError, ["x", "real numbers"]),
    "x_bytes": (dict(x=np.zeros((T, B, I), "S1")), TypeError, ["x", "real numbers"]),
    "w_ih_none": (dict(w_ih=None), TypeError, ["w_ih", "real numbers"]),
    "w_ih_no_rows": (dict(w_ih=np.zeros((0, I))), ValueError, ["w_ih", "hidden_size >= 1", "(0, 5)"]),
    "w_hh_none": (dict(w_hh=None), TypeError, ["w_hh", "real numbers"]),
    "w_hh_transposed": (dict(w_hh=np.zeros((H, 4 * H))), ValueError, ["w_hh", "(24, 6)", "(6, 24)"]),
    "b_ih_ragged": (dict(b_ih=[[0.0] * 4 * H, [0.0]]), ValueError, ["b_ih", "could not be converted"]),
    "b_hh_complex": (dict(b_hh=np.zeros(4 * H, complex)), TypeError, ["b_hh", "real", "complex128"]),
    "h0_mixed": (dict(h0=np.zeros((B, H), np.float32)), TypeError, ["mixed", "h0 is float32"]),
    "h0_hidden_with_projection": (dict(w_hr=np.zeros((2, H))), ValueError,
                                  ["w_hh", "proj_size", "(24, 2)"]),
    "c0_complex": (dict(c0=np.zeros((B, H), complex)), TypeError, ["c0", "real", "complex128"]),
    "c0_transposed": (dict(c0=np.zeros((H, B))), ValueError, ["c0", "(3, 6)", "(6, 3)"]),
    "w_hr_no_rows": (dict(w_hr=np.zeros((0, H))), ValueError, ["w_hr", "P >= 1", "(0, 6)"]),
    "w_hr_1d": (dict(w_hr=np.zeros(H)), ValueError, ["w_hr", "(proj_size, hidden_size)", "(6,)"]),
    "peephole_1d": (dict(peephole=np.zeros(3 * H)), ValueError, ["peephole", "2-D", "(18,)"]),
    "peephole_complex": (dict(peephole=np.zeros((3, H), complex)), TypeError, ["peephole", "real"]),
    "lengths_2d": (dict(lengths=np.full((B, 1), T)), ValueError, ["lengths", "(3,)", "(3, 1)"]),
    "lengths_scalar": (dict(lengths=T), ValueError, ["lengths", "(3,)", "()"]),
    "lengths_bool": (dict(lengths=np.ones(B, bool)), TypeError, ["lengths", "integers", "bool"]),
    "lengths_object": (dict(lengths=np.array([1, 2, 3], object)), TypeError, ["lengths", "integers", "object"]),
    "lengths_ragged": (dict(lengths=[[1], [2, 3], [3]]), ValueError, ["lengths", "could not be converted"]),
    "lengths_string": (dict(lengths="123"), TypeError, ["lengths", "integers"]),
    "lengths_huge_unsigned": (dict(lengths=np.array([2**63, 1, 1], np.uint64)), ValueError,
                              ["lengths", "[0, 4]", str(2**63)]),
    "batch_first_string": (dict(batch_first="False"), TypeError, ["batch_first", "True or False", "'False'"]),
    "batch_first_none": (dict(batch_first=None), TypeError, ["batch_first", "None"]),
    "batch_first_two": (dict(batch_first=2), TypeError, ["batch_first", "2"]),
    "num_threads_huge": (dict(num_threads=2**40), ValueError, ["num_threads", "<=", str(2**40)]),
    "num_threads_above_max": (dict(num_threads=MAX_THREADS + 1), ValueError,
                              ["num_threads", f"<= {MAX_THREADS}", str(MAX_THREADS + 1)]),
    "num_threads_negative": (dict(num_threads=-2), ValueError, ["num_threads", ">= 1", "-2"]),
    "num_threads_string": (dict(num_threads="2"), TypeError, ["num_threads", "'2'"]),
}

KEYWORD_ONLY = ("w_hr", "peephole", "lengths", "reverse", "batch_first", "training", "num_threads")


def good_args(dtype=np.float64):
    return make_problem(np.random.default_rng(0), T, B, I, H, dtype)


@APIS
@pytest.mark.parametrize("case", FORWARD_CASES)
def test_forward_refuses_before_any_kernel_runs(api, case, kernels):
    change, error, words = FORWARD_CASES[case]
    args = {**good_args(), **change}
    with pytest.raises(error) as info:
        api.lstm_forward(**args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert kernels == []


@APIS
@pytest.mark.parametrize("flag", ["reverse", "training"])
def test_forward_refuses_flags_that_are_not_bools(api, flag, kernels):
    with pytest.raises(TypeError, match=f"{flag}.*True or False.*'False'"):
        api.lstm_forward(**good_args(), **{flag: "False"})
    assert kernels == []


def test_flags_accept_numpy_bools_and_0_1():
    p = good_args()
    expected = lstm_c.lstm_forward(**p, batch_first=False)[0]
    for flag in (np.False_, 0, np.int64(0)):
        np.testing.assert_array_equal(lstm_c.lstm_forward(**p, batch_first=flag)[0], expected)


def test_torch_tensors_are_array_likes_too():
    if os.environ.get("LSTM_C_UNDER_SANITIZER", "0") not in ("", "0"):
        pytest.skip("torch's C++ exceptions fail under a preloaded AddressSanitizer runtime")
    torch = pytest.importorskip("torch")
    p = good_args(np.float32)
    expected = lstm_c.lstm_forward(**p)
    got = lstm_c.lstm_forward(**{k: torch.from_numpy(v) for k, v in p.items()})
    for a, b in zip(got[:3], expected[:3]):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="x could not be converted.*grad"):
        lstm_c.lstm_forward(torch.from_numpy(p["x"]).requires_grad_(), p["w_ih"], p["w_hh"])


def not_caches(api):
    p = good_args()
    y, h, c, cache = api.lstm_forward(**p)
    return {
        "forward_tuple": (y, h, c, cache),
        "grads": api.lstm_backward(cache, y),
        "forward_args": cache.args,
        "string": "cache",
        "number": 42,
        "array": y,
    }


@APIS
@pytest.mark.parametrize("what", ["forward_tuple", "grads", "forward_args", "string", "number", "array"])
def test_backward_refuses_objects_that_are_not_caches(api, what, kernels):
    thing = not_caches(api)[what]
    del kernels[:]
    with pytest.raises(TypeError) as info:
        api.lstm_backward(thing)
    message = str(info.value)
    assert "cache must be the" in message and type(thing).__name__ in message, message
    assert kernels == []


@APIS
def test_backward_refuses_the_none_of_an_inference_call_with_the_reason(api, kernels):
    _, _, _, cache = api.lstm_forward(**good_args(), training=False)
    with pytest.raises(ValueError, match="cache is None.*training=True"):
        api.lstm_backward(cache, dh_n=np.ones((B, H)))
    assert "backward" not in kernels


BACKWARD_CASES = {
    "dy_ragged": (dict(dy=[[[0.0] * H] * B] * (T - 1) + [[[0.0]]]), ValueError, ["dy", "could not be converted"]),
    "dy_complex": (dict(dy=np.zeros((T, B, H), complex)), TypeError, ["dy", "real", "complex128"]),
    "dy_1d": (dict(dy=np.zeros(T * B * H)), ValueError, ["dy", "3-D", "(72,)"]),
    "dy_time_major_for_batch_first": (dict(batch_first=True, dy=np.zeros((T, B, H))), ValueError,
                                      ["dy", "(batch, seq_len, hidden_size)", "(3, 4, 6)", "(4, 3, 6)"]),
    "dy_hidden_with_projection": (dict(w_hr=np.ones((2, H)) * 0.1, w_hh=np.zeros((4 * H, 2)), h0=None,
                                       dy=np.zeros((T, B, H))), ValueError,
                                  ["dy", "proj_size", "(4, 3, 2)", "(4, 3, 6)"]),
    "dh_n_mixed": (dict(dh_n=np.zeros((B, H), np.float32)), TypeError, ["mixed", "dh_n is float32"]),
    "dh_n_strings": (dict(dh_n=np.full((B, H), "a")), TypeError, ["dh_n", "real"]),
    "dc_n_transposed": (dict(dc_n=np.zeros((H, B))), ValueError, ["dc_n", "(3, 6)", "(6, 3)"]),
    "num_threads_zero": (dict(num_threads=0), ValueError, ["num_threads", ">= 1"]),
}


@APIS
@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_backward_refuses_before_any_kernel_runs(api, case, kernels):
    change, error, words = BACKWARD_CASES[case]
    change = dict(change)
    backward_args = {k: change.pop(k) for k in ("dy", "dh_n", "dc_n", "num_threads") if k in change}
    p = {**good_args(), **change}
    if change.get("batch_first"):
        p["x"] = np.ascontiguousarray(p["x"].swapaxes(0, 1))
    _, _, _, cache = api.lstm_forward(**p)
    with pytest.raises(error) as info:
        api.lstm_backward(cache, **backward_args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert "backward" not in kernels


def change_in_place(p, what):
    """Resize, reshape or re-type one of the caller's arrays in place, as NumPy allows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if what == "w_hh_resized":
            p["w_hh"].resize((1, 1), refcheck=False)
        elif what == "x_reshaped":
            p["x"].shape = (T * B, I)
        elif what == "w_ih_retyped":
            p["w_ih"].dtype = np.float32
        elif what == "peephole_resized":
            p["peephole"].resize((1, 3 * H), refcheck=False)


@APIS
@pytest.mark.parametrize("what, name, shape", [
    ("w_hh_resized", "w_hh", "(1, 1)"),
    ("x_reshaped", "x", "(12, 5)"),
    ("w_ih_retyped", "w_ih", "float32"),
    ("peephole_resized", "peephole", "(1, 18)"),
])
def test_a_cache_whose_inputs_changed_shape_is_refused(api, what, name, shape, kernels):
    p = make_problem(np.random.default_rng(1), T, B, I, H, peephole=True)
    y, _, _, cache = api.lstm_forward(**p)
    assert cache.args.x is p["x"]  # the cache references the caller's arrays
    change_in_place(p, what)
    with pytest.raises(ValueError) as info:
        api.lstm_backward(cache, y)
    message = str(info.value)
    for word in ("cache no longer matches", name, shape, "run the forward again"):
        assert word in message, (word, message)
    assert "backward" not in kernels


@APIS
def test_the_cache_keeps_its_own_lengths(api):
    p = good_args()
    lengths = np.array([4, 0, 2], np.intp)
    y, _, _, cache = api.lstm_forward(**p, lengths=lengths)
    expected = api.lstm_backward(cache, np.ones_like(y))
    lengths[:] = [10**9, -(10**9), 3]  # the kernels index memory with lengths: they must not see this
    assert_identical(api.lstm_backward(cache, np.ones_like(y)), expected)


# ----------------------------------------------------------------------------- LSTM


CONSTRUCTOR_CASES = {
    "input_size_negative": (dict(input_size=-3), ValueError, ["input_size", ">= 1", "-3"]),
    "hidden_size_zero": (dict(hidden_size=0), ValueError, ["hidden_size", ">= 1", "0"]),
    "num_layers_negative": (dict(num_layers=-1), ValueError, ["num_layers", ">= 1", "-1"]),
    "proj_size_equal": (dict(proj_size=H), ValueError, ["proj_size", "smaller than hidden_size"]),
    "proj_size_bool": (dict(proj_size=True), TypeError, ["proj_size", "True"]),
    "input_size_numpy_float": (dict(input_size=np.float64(4)), TypeError, ["input_size", "float64"]),
    "input_size_string": (dict(input_size="4"), TypeError, ["input_size", "'4'"]),
    "hidden_size_none": (dict(hidden_size=None), TypeError, ["hidden_size", "None"]),
    "bias_string": (dict(bias="False"), TypeError, ["bias", "True or False", "'False'"]),
    "batch_first_none": (dict(batch_first=None), TypeError, ["batch_first", "None"]),
    "bidirectional_two": (dict(bidirectional=2), TypeError, ["bidirectional", "2"]),
    "peephole_string": (dict(peephole="yes"), TypeError, ["peephole", "'yes'"]),
    "dtype_none": (dict(dtype=None), TypeError, ["dtype", "None"]),
    "dtype_int32": (dict(dtype=np.int32), TypeError, ["dtype", "int32"]),
    "dtype_complex": (dict(dtype=np.complex128), TypeError, ["dtype", "complex128"]),
    "hidden_size_past_blas": (dict(hidden_size=2**29), ValueError,
                              ["4*hidden_size", str(2**31), str(BLAS_INT_MAX), "32-bit BLAS"]),
    "input_size_past_blas": (dict(input_size=2**31), ValueError, ["input_size", str(2**31), "32-bit BLAS"]),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES)
def test_lstm_constructor_refuses_before_allocating(case):
    change, error, words = CONSTRUCTOR_CASES[case]
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            LSTM(**{**dict(input_size=4, hidden_size=H, num_layers=2), **change})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert peak < 2**20, peak


def test_lstm_constructor_refuses_parameters_larger_than_memory():
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pytest.skip("the OS does not tell the size of its memory")
    # A typo's worth of layers: 10**9 layers of 1024 units would take petabytes.
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"parameters \(.* GiB in float32\), more than this machine's"):
            LSTM(256, 1024, num_layers=10**9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20 and memory > 0


def test_lstm_constructor_takes_numpy_ints_and_0_1_flags():
    a = LSTM(np.int64(4), np.int32(H), np.int8(2), bias=1, batch_first=np.False_, bidirectional=0,
             proj_size=np.uint8(2), seed=3)
    b = LSTM(4, H, 2, bias=True, batch_first=False, bidirectional=False, proj_size=2, seed=3)
    assert repr(a) == repr(b)
    assert_identical(list(a.state_dict().values()), list(b.state_dict().values()))


def small_lstm(**options):
    return LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, **options)


LSTM_CALL_CASES = {
    "x_ragged": (dict(x=[[[0.0] * I] * B, [[0.0] * I]]), ValueError, ["x", "could not be converted"]),
    "x_none": (dict(x=None), TypeError, ["x", "real numbers"]),
    "x_strings": (dict(x=np.full((T, B, I), "a")), TypeError, ["x", "real numbers"]),
    "x_no_features": (dict(x=np.zeros((T, B, 0))), ValueError, ["x", "0 features", "input_size=5"]),
    "hx_dict": (dict(hx={"h": None, "c": None}), TypeError, ["hx", "tuple (h, c)", "dict"]),
    "hx_h_complex": (dict(hx=(np.zeros((4, B, H), complex), None)), TypeError, ["hx[0]", "real"]),
    "hx_c_ragged": (dict(hx=(None, [[[0.0] * H] * B] * 3 + [[[0.0]]])), ValueError,
                    ["hx[1]", "could not be converted"]),
    "hx_c_transposed": (dict(hx=(None, np.zeros((4, H, B)))), ValueError, ["hx[1]", "(4, 3, 6)", "(4, 6, 3)"]),
    "lengths_negative": (dict(lengths=[1, -1, 2]), ValueError, ["lengths", "[0, 4]", "-1"]),
    "lengths_bool": (dict(lengths=np.ones(B, bool)), TypeError, ["lengths", "integers", "bool"]),
    "lengths_2d": (dict(lengths=np.ones((B, 1), int)), ValueError, ["lengths", "(3,)", "(3, 1)"]),
    "lengths_ragged": (dict(lengths=[[1], [2, 3], []]), ValueError, ["lengths", "could not be converted"]),
}


@pytest.mark.parametrize("case", LSTM_CALL_CASES)
def test_lstm_forward_refuses_before_any_kernel_runs(case, kernels):
    change, error, words = LSTM_CALL_CASES[case]
    m = small_lstm()
    args = {**dict(x=np.zeros((T, B, I)), hx=None, lengths=None), **change}
    with pytest.raises(error) as info:
        m(args["x"], args["hx"], lengths=args["lengths"])
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert kernels == []


LSTM_BACKWARD_CASES = {
    "dy_ragged": (dict(dy=[[[0.0] * 2 * H] * B] * (T - 1) + [[[0.0]]]), ValueError, ["dy", "could not be converted"]),
    "dy_complex": (dict(dy=np.zeros((T, B, 2 * H), complex)), TypeError, ["dy", "real"]),
    "dy_strings": (dict(dy=np.full((T, B, 2 * H), "a")), TypeError, ["dy", "real"]),
    "dy_one_direction": (dict(dy=np.zeros((T, B, H))), ValueError, ["dy", "(4, 3, 12)", "(4, 3, 6)"]),
    "dhx_complex": (dict(dhx=(np.zeros((4, B, H), complex), None)), TypeError, ["dhx[0]", "real"]),
    "dhx_three": (dict(dhx=[None, None, None]), TypeError, ["dhx", "length 3"]),
    "dhx_c_layers": (dict(dhx=(None, np.zeros((2, B, H)))), ValueError, ["dhx[1]", "(4, 3, 6)", "(2, 3, 6)"]),
}


@pytest.mark.parametrize("case", LSTM_BACKWARD_CASES)
def test_lstm_backward_refuses_before_any_kernel_runs(case, kernels):
    change, error, words = LSTM_BACKWARD_CASES[case]
    m = small_lstm()
    m(np.zeros((T, B, I)))
    args = {**dict(dy=None, dhx=None), **change}
    with pytest.raises(error) as info:
        m.backward(args["dy"], args["dhx"])
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert "backward" not in kernels


def test_lstm_backward_after_an_inference_forward_names_the_reason(kernels):
    m = small_lstm()
    m(np.zeros((T, B, I)))
    m.eval()
    m(np.zeros((T, B, I)))  # this forward made no cache: backward must not use the older one
    with pytest.raises(ValueError, match="eval mode"):
        m.backward(np.zeros((T, B, 2 * H)))
    assert "backward" not in kernels


def test_lstm_backward_after_a_parameter_changed_shape_is_refused(kernels):
    m = small_lstm()
    y, _ = m(np.zeros((T, B, I)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.params["weight_hh_l1_reverse"].resize((2, 2), refcheck=False)
    with pytest.raises(ValueError, match=r"layer 1 \(reverse direction\): cache no longer matches.*w_hh.*"
                                         r"\(2, 2\).*\(24, 6\)"):
        m.backward(np.ones_like(y))
    assert "backward" not in kernels


STEP_CASES = {
    "x_t_0d": (dict(x_t=np.float64(1)), ValueError, ["x_t", "()"]),
    "x_t_none": (dict(x_t=None), TypeError, ["x_t", "real"]),
    "x_t_ragged": (dict(x_t=[[0.0] * I, [0.0]]), ValueError, ["x_t", "could not be converted"]),
    "x_t_complex": (dict(x_t=np.zeros((B, I), complex)), TypeError, ["x_t", "real"]),
    "hx_unbatched_for_batched": (dict(hx=(np.zeros((2, H)), None)), ValueError, ["hx[0]", "(2, 3, 6)", "(2, 6)"]),
    "hx_c_complex": (dict(hx=(None, np.zeros((2, B, H), complex))), TypeError, ["hx[1]", "real"]),
    "hx_not_a_pair": (dict(hx=np.zeros((2, B, H))), TypeError, ["hx", "tuple (h, c)"]),
}


@pytest.mark.parametrize("case", STEP_CASES)
def test_lstm_step_refuses_before_any_kernel_runs(case, kernels):
    change, error, words = STEP_CASES[case]
    m = LSTM(I, H, num_layers=2, dtype=np.float64, seed=0)
    args = {**dict(x_t=np.zeros((B, I)), hx=None), **change}
    with pytest.raises(error) as info:
        m.step(args["x_t"], args["hx"])
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert kernels == []


def test_load_state_dict_refusals_name_the_entry_and_change_nothing():
    m = LSTM(I, H, dtype=np.float64, seed=0)
    before = m.state_dict()
    good = m.state_dict()
    cases = [
        ({**good, "weight_ih_l0": [[0.0] * I, [0.0]]}, ValueError, "state_dict['weight_ih_l0'] could not be converted"),
        ({**good, "bias_ih_l0": None}, TypeError, "state_dict['bias_ih_l0'] must hold real numbers"),
        ({**good, "weight_hh_l0": np.zeros((4 * H, H), complex)}, TypeError, "state_dict['weight_hh_l0']"),
        ({**good, "bias_hh_l0": np.zeros((1, 4 * H))}, ValueError, "state_dict['bias_hh_l0'] must have shape (24,)"),
    ]
    for state_dict, error, words in cases:
        with pytest.raises(error) as info:
            m.load_state_dict(state_dict)
        assert words in str(info.value), str(info.value)
    with pytest.raises(TypeError, match="strict must be True or False, got 'False'"):
        m.load_state_dict(good, strict="False")
    assert_identical(list(m.state_dict().values()), list(before.values()))


def test_train_mode_must_be_a_bool():
    m = LSTM(I, H)
    with pytest.raises(TypeError, match="mode must be True or False, got 'False'"):
        m.train("False")
    assert m.training


# ----------------------------------------------------------------------------- interop


def _sd():
    return LSTM(4, 3, seed=0).state_dict()


def _onnx():
    return interop.to_onnx(_sd())


INTEROP_CASES = {
    "onnx_direction_list": (lambda: interop.from_onnx(**_onnx(), direction=["forward"]), ValueError,
                            ["direction", "['forward']"]),
    "onnx_activations_number": (lambda: interop.from_onnx(**_onnx(), activations=5), ValueError,
                                ["activations", "5", "list"]),
    "onnx_activations_string": (lambda: interop.from_onnx(**_onnx(), activations="Sigmoid"), ValueError,
                                ["activations", "'Sigmoid'", "list"]),
    "onnx_W_complex": (lambda: interop.from_onnx(**{**_onnx(), "W": np.zeros((1, 12, 4), complex)}),
                       TypeError, ["W", "complex128"]),
    "onnx_W_none": (lambda: interop.from_onnx(None, _onnx()["R"]), TypeError, ["W", "object"]),
    "onnx_R_ragged": (lambda: interop.from_onnx(_onnx()["W"], [[[0.0] * 3] * 12, [[0.0]]]), ValueError,
                      ["R", "could not be converted"]),
    "keras_kernel_none": (lambda: interop.from_keras(None, np.zeros((3, 12))), TypeError, ["kernel", "object"]),
    "keras_kernel_ragged": (lambda: interop.from_keras([[0.0] * 12, [0.0]], np.zeros((3, 12))), ValueError,
                            ["kernel", "could not be converted"]),
    "keras_reverse_string": (lambda: interop.from_keras(np.zeros((4, 12)), np.zeros((3, 12)), reverse="yes"),
                             TypeError, ["reverse", "True or False", "'yes'"]),
    "to_keras_reverse_string": (lambda: interop.to_keras(_sd(), reverse="no"), TypeError, ["reverse", "'no'"]),
    "to_keras_layer_float": (lambda: interop.to_keras(_sd(), layer=1.5), ValueError, ["layer", "1.5"]),
    "state_dict_int_key": (lambda: interop.to_onnx({**_sd(), 0: np.zeros(3)}), ValueError, ["key 0"]),
    "state_dict_empty": (lambda: interop.onnx_attributes({}), ValueError, ["empty"]),
    "state_dict_value_none": (lambda: interop.to_keras({**_sd(), "bias_ih_l0": None}), TypeError,
                              ["bias_ih_l0", "object"]),
}


@pytest.mark.parametrize("case", INTEROP_CASES)
def test_interop_refusals(case):
    call, error, words = INTEROP_CASES[case]
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_from_onnx_node_refuses_initializers_that_are_not_a_table():
    pytest.importorskip("onnx")
    from onnx import helper

    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=3)
    with pytest.raises(TypeError, match="initializers must be a dict.*got int"):
        interop.from_onnx_node(node, 42)


# ============================================================================= layouts


def as_layout(a, layout):
    """The same values as a C-contiguous array, in another layout (or a list)."""
    a = np.asarray(a)
    if layout == "contiguous":
        return a.copy()
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


LAYOUTS = ["fortran", "strided", "negative", "swapped", "read_only", "list"]


def layer_call(m, x, hx, lengths, dy, dhx):
    y, (h, c) = m(x, hx, lengths=lengths)
    dx, (dh0, dc0) = m.backward(dy, dhx)
    return (y, h, c, dx, dh0, dc0) + tuple(m.grads.values())


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lstm_any_layout_gives_the_same_answer_and_inputs_are_not_written(layout, batch_first):
    m = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, peephole=True, batch_first=batch_first,
             dtype=np.float64, seed=4)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    hx = (rng.standard_normal((4, B, 2)), rng.standard_normal((4, B, H)))
    lengths = np.array([T, 0, 2])
    dy = rng.standard_normal((B, T, 4) if batch_first else (T, B, 4))
    dhx = (rng.standard_normal((4, B, 2)), rng.standard_normal((4, B, H)))
    expected = layer_call(m, x, hx, lengths, dy, dhx)

    inputs = dict(x=x, h0=hx[0], c0=hx[1], lengths=lengths, dy=dy, dh=dhx[0], dc=dhx[1])
    q = {k: as_layout(v, layout) for k, v in inputs.items()}
    before = {k: np.array(v, copy=True) for k, v in q.items()}
    got = layer_call(m, q["x"], (q["h0"], q["c0"]), q["lengths"], q["dy"], (q["dh"], q["dc"]))
    assert_identical(got, expected, names=["y", "h_n", "c_n", "dx", "dh0", "dc0", *m.grads])
    for k, v in q.items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lstm_step_any_layout(layout):
    m = LSTM(I, H, num_layers=2, proj_size=3, peephole=True, dtype=np.float64, seed=5)
    rng = np.random.default_rng(5)
    x_t = rng.standard_normal((B, I))
    hx = (rng.standard_normal((2, B, 3)), rng.standard_normal((2, B, H)))
    expected = m.step(x_t, hx)
    q = [as_layout(a, layout) for a in (x_t, *hx)]
    before = [np.array(a, copy=True) for a in q]
    y_t, (h, c) = m.step(q[0], (q[1], q[2]))
    assert_identical((y_t, h, c), (expected[0], *expected[1]))
    for a, b in zip(q, before):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_lstm_loads_state_dicts_in_any_layout():
    source = LSTM(I, H, num_layers=2, dtype=np.float64, seed=6)
    x = np.random.default_rng(6).standard_normal((T, B, I))
    expected = source(x)[0]
    for layout in LAYOUTS:
        m = LSTM(I, H, num_layers=2, dtype=np.float64, seed=7)
        m.load_state_dict({k: as_layout(v, layout) for k, v in source.state_dict().items()})
        np.testing.assert_array_equal(m(x)[0], expected, err_msg=layout)


@pytest.mark.parametrize("lengths", [
    np.array([3, 0, 4], np.intp)[::-1][::-1].copy()[::-1],  # negative stride
    np.array([4, 0, 3], np.int32),
    np.array([4, 0, 3], np.uint8),
    np.repeat(np.array([4, 0, 3]), 2)[::2],
    (4, 0, 3),
    [np.int16(4), 0, np.int64(3)],
], ids=["negative_stride", "int32", "uint8", "strided", "tuple", "numpy_scalars"])
def test_lengths_in_any_integer_form(lengths):
    p = good_args()
    expected = run(lstm_c, p, (np.ones((T, B, H)),), lengths=np.array([4, 0, 3]))
    read_only = np.array(lengths)
    read_only.flags.writeable = False
    for form in (lengths, read_only):
        got = run(lstm_c, p, (np.ones((T, B, H)),), lengths=form)
        assert_identical(got[0] + tuple(got[1]), expected[0] + tuple(expected[1]))


def test_batch_first_from_a_swapped_view_of_time_major_data():
    p = good_args()
    rng = np.random.default_rng(8)
    dy = rng.standard_normal((T, B, H))
    tm = run(lstm_c, p, (dy,), lengths=[4, 1, 0])
    bf = run(lstm_c, {**p, "x": p["x"].swapaxes(0, 1)}, (dy.swapaxes(0, 1),), batch_first=True,
             lengths=[4, 1, 0])
    # Each position is computed alike in both layouts; only the sums over all positions
    # (the weight gradients) add in another order.
    np.testing.assert_array_equal(bf[0][0], tm[0][0].swapaxes(0, 1))
    np.testing.assert_array_equal(bf[1].dx, tm[1].dx.swapaxes(0, 1))
    assert_identical(bf[0][1:] + tuple(bf[1])[1:3], tm[0][1:] + tuple(tm[1])[1:3])
    assert_same(tuple(bf[1])[3:], tuple(tm[1])[3:])


# ============================================================================= degenerate sizes


_INFERENCE_WITH_PROJECTION = """
import numpy as np, lstm_c
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 4, 2))
w_ih, w_hh, w_hr = rng.standard_normal((12, 2)), rng.standard_normal((12, 1)), rng.standard_normal((1, 3))
for reverse in (False, True):
    lstm_c.lstm_forward(x, w_ih, w_hh, w_hr=w_hr, lengths=[0, 4, 4, 0], reverse=reverse, training=False)
m = lstm_c.LSTM(2, 3, num_layers=2, proj_size=1, dtype=np.float64).eval()
m(x, lengths=[4, 1, 0, 2])
print("ok")
"""


def test_inference_with_a_projection_and_padding_does_not_crash(tmp_path):
    """Padding (a row shorter than T) with a projection in inference mode: the forward
    zeroes the padding of the cached states, which inference does not keep. In a child
    process, so that a crash fails this test instead of ending the test run."""
    result = subprocess.run([sys.executable, "-c", _INFERENCE_WITH_PROJECTION], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"exit code {result.returncode} (a negative code is the signal that killed it)\n{result.stderr[-2000:]}"
    )


DEGENERATE = {
    "T0": dict(T=0, B=3, I=2, H=4),
    "B0": dict(T=3, B=0, I=2, H=4),
    "T0_B0": dict(T=0, B=0, I=2, H=3),
    "H1_I1": dict(T=4, B=2, I=1, H=1),
    "I0": dict(T=3, B=2, I=0, H=3),
    "all_lengths_0": dict(T=3, B=3, I=2, H=3, lengths=[0, 0, 0]),
    "lengths_0_and_T": dict(T=4, B=4, I=2, H=3, lengths=[0, 4, 4, 0]),
}
VARIANTS = {"plain": dict(), "projection_peephole": dict(P=1, peephole=True)}


def degenerate_problem(case, variant, batch_first, dtype=np.float64):
    spec = dict(DEGENERATE[case])
    lengths = spec.pop("lengths", None)
    rng = np.random.default_rng(zlib.crc32(f"{case}{variant}{batch_first}".encode()))
    p = make_problem(rng, **spec, dtype=dtype, batch_first=batch_first, **VARIANTS[variant])
    return p, lengths, rng


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_sizes_match_the_reference(case, variant, batch_first, reverse):
    p, lengths, rng = degenerate_problem(case, variant, batch_first)
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    y, h, c, _ = lstm_c.lstm_forward(**p, **options)
    grads = output_grads(rng, y, h, c)
    ours = run(lstm_c, p, grads, **options)
    theirs = run(reference, p, grads, **options)
    assert_same(ours[0], theirs[0], names=["y", "h_n", "c_n"])
    assert_same(ours[1], theirs[1])

    steps = p["x"].shape[1 if batch_first else 0]
    lengths = np.full(h.shape[0], steps) if lengths is None else np.asarray(lengths)
    idle = lengths == 0  # rows that never run keep their state and pass gradients through
    np.testing.assert_array_equal(h[idle], p["h0"][idle])
    np.testing.assert_array_equal(c[idle], p["c0"][idle])
    np.testing.assert_array_equal(ours[1].dh0[idle], grads[1][idle])
    np.testing.assert_array_equal(ours[1].dc0[idle], grads[2][idle])
    y_rows = y if batch_first else y.swapaxes(0, 1)
    dx_rows = ours[1].dx if batch_first else ours[1].dx.swapaxes(0, 1)
    assert not y_rows[idle].any() and not dx_rows[idle].any()
    if idle.all():  # nothing ran: no parameter gradient at all
        for g in (ours[1].dw_ih, ours[1].dw_hh, ours[1].db, ours[1].dw_hr, ours[1].dpeephole):
            assert g is None or not g.any()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["H1_I1", "lengths_0_and_T", "all_lengths_0"])
def test_degenerate_sizes_gradients_match_finite_differences(case, variant):
    for reverse in (False, True):
        p, lengths, rng = degenerate_problem(case, variant, False)
        check_finite_differences(p, dict(lengths=lengths, reverse=reverse), rng)


def suffix(layer, direction):
    return f"_l{layer}" + ("_reverse" if direction else "")


def layer_by_hand(m, x, hx, lengths, dy, dhx):
    """The LSTM composed by hand from lstm_c.reference (no dropout), batched x."""
    sd = m.state_dict()
    L, D, P = m.num_layers, m.num_directions, m.output_size
    inp, h_n, c_n, caches = x, [], [], []
    for layer in range(L):
        outs = []
        for d in range(D):
            s, k = suffix(layer, d), layer * D + d
            y, h, c, cache = reference.lstm_forward(
                inp, sd[f"weight_ih{s}"], sd[f"weight_hh{s}"], sd.get(f"bias_ih{s}"), sd.get(f"bias_hh{s}"),
                hx[0][k], hx[1][k], w_hr=sd.get(f"weight_hr{s}"), peephole=sd.get(f"peephole{s}"),
                lengths=lengths, reverse=bool(d), batch_first=m.batch_first,
            )
            outs.append(y)
            h_n.append(h)
            c_n.append(c)
            caches.append(cache)
        inp = np.concatenate(outs, axis=2)
    grads, dh0, dc0 = {}, [None] * (L * D), [None] * (L * D)
    d_out = dy
    for layer in reversed(range(L)):
        d_in = 0
        for d in range(D):
            s, k = suffix(layer, d), layer * D + d
            g = reference.lstm_backward(caches[k], d_out[..., d * P:(d + 1) * P], dhx[0][k], dhx[1][k])
            d_in = d_in + g.dx
            dh0[k], dc0[k] = g.dh0, g.dc0
            grads[f"weight_ih{s}"], grads[f"weight_hh{s}"] = g.dw_ih, g.dw_hh
            grads[f"bias_ih{s}"] = grads[f"bias_hh{s}"] = g.db
            if m.proj_size:
                grads[f"weight_hr{s}"] = g.dw_hr
            if m.peephole:
                grads[f"peephole{s}"] = g.dpeephole
        d_out = d_in
    return (inp, np.stack(h_n), np.stack(c_n), d_out, np.stack(dh0), np.stack(dc0)) + tuple(
        grads[name] for name in sd)


LAYER_DEGENERATE = {
    "T0": dict(T=0, B=3, I=2, H=4),
    "B0": dict(T=3, B=0, I=2, H=4),
    "H1_I1": dict(T=4, B=2, I=1, H=1),
    "all_lengths_0": dict(T=3, B=3, I=2, H=3, lengths=[0, 0, 0]),
    "lengths_0_and_T": dict(T=4, B=4, I=2, H=3, lengths=[0, 4, 4, 0]),
}
LAYER_CONFIGS = {
    "stacked_bidirectional": dict(num_layers=2, bidirectional=True),
    "stacked_bidirectional_projection_peephole": dict(num_layers=3, bidirectional=True, proj_size=1,
                                                      peephole=True),
}


def layer_problem(case, config, batch_first):
    spec = dict(LAYER_DEGENERATE[case])
    lengths = spec.pop("lengths", None)
    T_, B_, I_, H_ = spec["T"], spec["B"], spec["I"], spec["H"]
    options = dict(LAYER_CONFIGS[config])
    if options.get("proj_size", 0) >= H_:
        options["proj_size"] = 0
    m = LSTM(I_, H_, batch_first=batch_first, dtype=np.float64, seed=9, **options)
    rng = np.random.default_rng(zlib.crc32(f"{case}{config}{batch_first}".encode()))
    LD = m.num_layers * m.num_directions
    x = rng.standard_normal((B_, T_, I_) if batch_first else (T_, B_, I_))
    hx = (rng.standard_normal((LD, B_, m.output_size)), rng.standard_normal((LD, B_, H_)))
    y_features = m.num_directions * m.output_size
    dy = rng.standard_normal((B_, T_, y_features) if batch_first else (T_, B_, y_features))
    dhx = (rng.standard_normal(hx[0].shape), rng.standard_normal(hx[1].shape))
    return m, x, hx, lengths, dy, dhx


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("config", LAYER_CONFIGS)
@pytest.mark.parametrize("case", LAYER_DEGENERATE)
def test_lstm_degenerate_sizes_match_the_reference(case, config, batch_first):
    m, x, hx, lengths, dy, dhx = layer_problem(case, config, batch_first)
    got = layer_call(m, x, hx, lengths, dy, dhx)
    expected = layer_by_hand(m, x, hx, lengths, dy, dhx)
    names = ["y", "h_n", "c_n", "dx", "dh0", "dc0", *m.state_dict()]
    assert_same(got, expected, names=names)
    if case == "T0":
        assert got[0].shape == ((3, 0) if batch_first else (0, 3)) + (m.num_directions * m.output_size,)
        assert_identical(got[1:3], hx)  # T = 0: the initial state comes back...
        assert_identical(got[4:6], dhx)  # ...and the state gradients pass straight through
        assert got[3].shape == x.shape


@pytest.mark.parametrize("case", ["H1_I1", "lengths_0_and_T"])
def test_lstm_degenerate_sizes_gradients_match_finite_differences(case):
    m, x, hx, lengths, dy, dhx = layer_problem(case, "stacked_bidirectional_projection_peephole", False)
    got = layer_call(m, x, hx, lengths, dy, dhx)

    def loss():
        y, (h, c) = m.eval()(x, hx, lengths=lengths)
        return float((y * dy).sum() + (h * dhx[0]).sum() + (c * dhx[1]).sum())

    numeric = [numerical_gradient(loss, a) for a in (x, hx[0], hx[1])]
    numeric += [numerical_gradient(loss, p) for p in m.params.values()]
    for name, a, b in zip(["dx", "dh0", "dc0", *m.params], got[3:], numeric):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)


# ============================================================================= 32-bit BLAS guard

HUGE = 2**31  # one more than the largest 32-bit BLAS integer


def zero_stride(shape, dtype=np.float32):
    """A read-only array of `shape` that takes one element of memory."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def huge_problems():
    """Arguments whose sizes pass every other check but one BLAS dimension, and that dimension."""
    f = np.float32
    return {
        "seq_len*batch": (dict(x=zero_stride((2**16, 2**15, 1)), w_ih=zero_stride((4, 1)),
                               w_hh=zero_stride((4, 1))), {}),
        "seq_len*batch (batch_first)": (dict(x=zero_stride((2**15, 2**16, 1)), w_ih=zero_stride((4, 1)),
                                             w_hh=zero_stride((4, 1))), dict(batch_first=True)),
        "4*hidden_size": (dict(x=np.zeros((1, 1, 1), f), w_ih=zero_stride((HUGE, 1)),
                               w_hh=zero_stride((HUGE, HUGE // 4))), {}),
        "input_size": (dict(x=zero_stride((1, 1, HUGE)), w_ih=zero_stride((4, HUGE)),
                            w_hh=zero_stride((4, 1))), {}),
        "proj_size": (dict(x=np.zeros((1, 1, 1), f), w_ih=zero_stride((4, 1)), w_hh=zero_stride((4, HUGE)),
                           w_hr=zero_stride((HUGE, 1))), {}),
    }


@APIS
@pytest.mark.parametrize("dimension", list(huge_problems()))
def test_sizes_past_32_bit_blas_are_refused_before_memory_is_touched(api, dimension, kernels):
    args, options = huge_problems()[dimension]
    name = dimension.split(" ")[0]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            api.lstm_forward(**args, **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    for word in (f"{name} = {HUGE}", str(BLAS_INT_MAX), "32-bit BLAS"):
        assert word in message, (word, message)
    assert peak < 2**20, f"{peak} bytes allocated before refusing"
    assert kernels == []


def test_lstm_refuses_huge_inputs_before_memory_is_touched(kernels):
    m = LSTM(1, 4)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"seq_len\*batch = {HUGE} exceeds {BLAS_INT_MAX}"):
            m(zero_stride((2**16, 2**15, 1)))
        with pytest.raises(ValueError, match=rf"batch = {HUGE} exceeds"):
            m.step(zero_stride((HUGE, 1)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert kernels == []


@pytest.fixture
def small_blas_limit(monkeypatch):
    """Pretend BLAS integers end at 100, to check the guard at its edge with small arrays."""
    monkeypatch.setattr(_validation, "BLAS_INT_MAX", 100)
    return 100


@pytest.mark.parametrize("dimension, fits, refused", [
    ("seq_len*batch", dict(T=10, B=10, I=1, H=1), dict(T=101, B=1, I=1, H=1)),
    ("seq_len*batch", dict(T=10, B=10, I=1, H=1), dict(T=11, B=10, I=1, H=1)),
    ("4*hidden_size", dict(T=1, B=1, I=1, H=25), dict(T=1, B=1, I=1, H=26)),
    ("input_size", dict(T=1, B=1, I=100, H=1), dict(T=1, B=1, I=101, H=1)),
    ("proj_size", dict(T=1, B=1, I=1, H=2, P=100), dict(T=1, B=1, I=1, H=2, P=101)),
])
@APIS
def test_the_blas_guard_at_its_edge(api, dimension, fits, refused, small_blas_limit, kernels):
    rng = np.random.default_rng(0)
    ok = make_problem(rng, **fits)
    y, h, c, cache = api.lstm_forward(**ok)
    api.lstm_backward(cache, y)
    del kernels[:]
    bad = make_problem(rng, **refused)
    with pytest.raises(ValueError, match=rf"{dimension.replace('*', '[*]')} = \d+ exceeds 100 "):
        api.lstm_forward(**bad)
    assert kernels == []


def test_the_layer_blas_guard_at_its_edge(small_blas_limit, kernels):
    for args, words in [(dict(input_size=1, hidden_size=26), "4*hidden_size = 104"),
                        (dict(input_size=101, hidden_size=2), "input_size = 101")]:
        with pytest.raises(ValueError, match=words):
            LSTM(**args)
    m = LSTM(1, 25, num_layers=2, bidirectional=True)
    m(np.zeros((10, 10, 1), np.float32))
    one_way = LSTM(1, 25, num_layers=2)
    one_way.step(np.zeros((100, 1), np.float32))
    del kernels[:]
    with pytest.raises(ValueError, match=r"seq_len\*batch = 110 exceeds 100"):
        m(np.zeros((11, 10, 1), np.float32))
    with pytest.raises(ValueError, match="batch = 101 exceeds 100"):
        one_way.step(np.zeros((101, 1), np.float32))
    assert kernels == []


def test_the_guard_covers_every_dimension_the_kernels_give_blas():
    """The names check_forward passes to check_blas_sizes: rows, 4H, I, P and H."""
    seen = {}

    def record(sizes):
        seen.update(sizes)

    original = _validation.check_blas_sizes
    _validation.check_blas_sizes = record
    try:
        _validation.check_forward(np.zeros((2, 3, 4)), np.zeros((20, 4)), np.zeros((20, 2)), None, None,
                                  None, None, None, False, w_hr=np.zeros((2, 5)))
    finally:
        _validation.check_blas_sizes = original
    assert seen == {"seq_len*batch": 6, "4*hidden_size": 20, "input_size": 4, "proj_size": 2,
                    "hidden_size": 5}


# ============================================================================= numerics


def added_one(c0, steps):
    """c0 + 1 + 1 + ... (`steps` times), rounded after each addition as the recurrence does."""
    c = c0.copy()
    for _ in range(steps):
        c = c + c.dtype.type(1)
    return c


def saturating_problem(dtype, signs, *, P=0, peephole=False, T=5, B=3):
    """Pre-activations of about ±3000 with the sign of each gate i, f, g, o given by `signs`."""
    rng = np.random.default_rng(10)
    H_ = 4
    p = make_problem(rng, T, B, 1, H_, dtype, P=P, peephole=peephole)
    p["x"] = np.abs(p["x"]).astype(dtype) + dtype(1)  # in [1, ~4]
    p["w_ih"] = np.repeat(np.array(signs, dtype) * dtype(3000), H_)[:, None]
    p["b_ih"] = np.repeat(np.array(signs, dtype) * dtype(1000), H_)
    return p


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@APIS
def test_saturation_is_exact_silent_and_has_finite_gradients(api, dtype, variant):
    P = VARIANTS[variant].get("P", 0)
    peephole = VARIANTS[variant].get("peephole", False)
    cases = {
        # i, f, g, o all 1: c_t = c_{t-1} + 1 exactly; h_t = tanh(c_t).
        "open": ((1, 1, 1, 1), added_one),
        # i = 1, f = 0, g = -1: c_t = -1 exactly from the first step on.
        "reset": ((1, -1, -1, 1), lambda c0, t: np.full_like(c0, -1)),
        # i = f = o = 0: c_t = 0, h_t = 0 exactly.
        "closed": ((-1, -1, -1, -1), lambda c0, t: np.zeros_like(c0)),
    }
    for name, (signs, expected_c) in cases.items():
        p = saturating_problem(dtype, signs, P=P, peephole=peephole)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(all="raise"):
                y, h, c, cache = api.lstm_forward(**p)
                dy = np.ones_like(y)
                g = api.lstm_backward(cache, dy, np.ones_like(h), np.ones_like(c))
        np.testing.assert_array_equal(c, expected_c(p["c0"], 5), err_msg=name)
        if name == "closed":
            assert not y.any() and not h.any(), name
        for field, value in g._asdict().items():
            assert value is None or np.isfinite(value).all(), (name, field)
        # Every gate is saturated, so no gradient reaches the gates: exactly zero.
        for field in ("dx", "dw_ih", "dw_hh", "db"):
            assert not getattr(g, field).any(), (name, field)


def test_saturation_matches_the_reference_exactly_in_the_state():
    for dtype in (np.float32, np.float64):
        p = saturating_problem(dtype, (1, 1, 1, 1))
        ours = lstm_c.lstm_forward(**p)
        theirs = reference.lstm_forward(**p)
        np.testing.assert_array_equal(ours[2], theirs[2])
        np.testing.assert_allclose(ours[0], theirs[0], **TOL[dtype])


NAN_ROW = 2  # the batch row that receives a NaN or inf


def poison(p, what):
    """A copy of p with one NaN or inf in row NAN_ROW (of x at time 1, or of the initial state)."""
    q = {k: None if v is None else v.copy() for k, v in p.items()}
    if what == "nan_x":
        q["x"][1, NAN_ROW, 0] = np.nan
    elif what == "inf_x":
        q["x"][1, NAN_ROW, 1] = np.inf
    elif what == "minus_inf_x":
        q["x"][2, NAN_ROW, :] = -np.inf
    elif what == "nan_h0":
        q["h0"][NAN_ROW, 0] = np.nan
    elif what == "inf_c0":
        q["c0"][NAN_ROW, :] = np.inf
    return q


POISONS = ["nan_x", "inf_x", "minus_inf_x", "nan_h0", "inf_c0"]


def poisoned_runs(what, reverse, variant):
    """(clean, poisoned) forward and backward with the same output gradients, and the poisoned inputs."""
    T_, B_, H_ = 6, 5, 7
    rng = np.random.default_rng(11)
    p = make_problem(rng, T_, B_, 3, H_, **VARIANTS[variant])
    options = dict(lengths=[6, 0, 5, 3, 6], reverse=reverse)
    out = VARIANTS[variant].get("P") or H_
    grads = (rng.standard_normal((T_, B_, out)), rng.standard_normal((B_, out)), rng.standard_normal((B_, H_)))
    q = poison(p, what)
    return run(lstm_c, p, grads, **options), run(lstm_c, q, grads, **options), (q, grads, options)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("what", POISONS)
def test_nan_and_inf_stay_in_their_row(what, reverse, variant):
    clean, ((y, h, c), g), _ = poisoned_runs(what, reverse, variant)
    others = np.arange(y.shape[1]) != NAN_ROW
    # Every other row is bitwise what it is without the NaN or inf.
    np.testing.assert_array_equal(y[:, others], clean[0][0][:, others])
    np.testing.assert_array_equal(g.dx[:, others], clean[1].dx[:, others])
    for name, a, b in [("h_n", h, clean[0][1]), ("c_n", c, clean[0][2]), ("dh0", g.dh0, clean[1].dh0),
                       ("dc0", g.dc0, clean[1].dc0)]:
        np.testing.assert_array_equal(a[others], b[others], err_msg=name)
    if what.startswith("nan"):
        # The row itself is NaN from where the NaN enters, and so is every sum over positions.
        assert np.isnan(h[NAN_ROW]).all() and np.isnan(g.dx[:, NAN_ROW]).any()
        for field in ("db", "dw_ih", "dw_hh", "dw_hr", "dpeephole"):
            value = getattr(g, field)
            assert value is None or np.isnan(value).all(), field


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("what", POISONS)
def test_nan_and_inf_rows_match_the_reference(what, reverse, variant):
    _, ((y, h, c), g), (q, grads, options) = poisoned_runs(what, reverse, variant)
    with np.errstate(all="ignore"):
        (ry, rh, rc), rg = run(reference, q, grads, **options)
    for name, a, b in [("y", y, ry), ("h_n", h, rh), ("c_n", c, rc)]:
        np.testing.assert_allclose(a, b, **TOL[np.float64], err_msg=name)
    for field in ("dx", "dh0", "dc0", "db", "dw_ih", "dw_hh", "dw_hr", "dpeephole"):
        a, b = getattr(g, field), getattr(rg, field)
        if a is not None:
            np.testing.assert_allclose(a, b, **TOL[np.float64], err_msg=field)


def float32_vs_float64(seed, reverse, T=1000, B=8, I=16, H=64, P=0, peephole=False):
    """Worst errors of float32 against float64: outputs absolute, gradients relative to their largest entry."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(H)  # PyTorch's initialisation of weights and biases
    out = P or H
    p = dict(x=rng.standard_normal((T, B, I)), w_ih=rng.uniform(-bound, bound, (4 * H, I)),
             w_hh=rng.uniform(-bound, bound, (4 * H, out)), b_ih=rng.uniform(-bound, bound, 4 * H),
             b_hh=rng.uniform(-bound, bound, 4 * H), h0=rng.standard_normal((B, out)) * 0.5,
             c0=rng.standard_normal((B, H)))
    if P:
        p["w_hr"] = rng.uniform(-bound, bound, (P, H))
    if peephole:
        p["peephole"] = rng.uniform(-bound, bound, (3, H))
    lengths = rng.integers(T // 2, T + 1, B)
    grads = (rng.standard_normal((T, B, out)), rng.standard_normal((B, out)), rng.standard_normal((B, H)))
    results = {}
    for dtype in (np.float64, np.float32):
        q = {k: v.astype(dtype) for k, v in p.items()}
        (y, h, c), g = run(lstm_c, q, tuple(a.astype(dtype) for a in grads), lengths=lengths, reverse=reverse)
        results[dtype] = dict(y=y, h_n=h, c_n=c, **{k: v for k, v in g._asdict().items() if v is not None})
    errors = {}
    for name, exact in results[np.float64].items():
        error = np.abs(results[np.float32][name].astype(np.float64) - exact).max()
        errors[name] = error if name in ("y", "h_n", "c_n") else error / np.abs(exact).max()
    return errors


FLOAT32_OUTPUT_TOL = 2e-6
FLOAT32_GRADIENT_TOL = 2e-5


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_stays_close_to_float64_at_T_1000(variant):
    """float32 against float64 over T = 1000 steps (B = 8, I = 16, H = 64, random lengths in
    [500, 1000], both directions, PyTorch's initialisation: weights and biases uniform in
    ±1/sqrt(H), x standard normal): y, h_n and c_n within 2e-6 absolute; every gradient
    within 2e-5 of its largest entry.

    Measured worst cases (seeds 0-4, forward and reverse, plain and with projection and
    peepholes): 9e-8 for the outputs and 3.1e-6 for the gradients (db and dpeephole, sums
    over all T·B positions, are the largest); with weights 3x PyTorch's scale 4e-7 and
    3e-6. The tolerances leave a margin of 5x or more.
    """
    options = dict(P=16, peephole=True) if variant == "projection_peephole" else {}
    for seed in range(2):
        for reverse in (False, True):
            errors = float32_vs_float64(seed, reverse, **options)
            for name, error in errors.items():
                tol = FLOAT32_OUTPUT_TOL if name in ("y", "h_n", "c_n") else FLOAT32_GRADIENT_TOL
                assert error <= tol, (name, error, seed, reverse)
