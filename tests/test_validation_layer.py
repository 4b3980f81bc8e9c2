"""Bad arguments to lstm_c.LSTM: its constructor, calls, backward, step and state dicts.
Each refusal names the argument and comes before any compiled kernel runs (the `kernels`
fixture) and before anything is allocated or changed."""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import pytest
from helpers import assert_identical, assert_mentions

from lstm_c import LSTM
from lstm_c._params import param_name
from lstm_c._validation import BLAS_INT_MAX

T, B, I, H = 5, 3, 4, 6
LD = 4  # num_layers=2, bidirectional


# (what to change, the exception, words the message must contain)
CONSTRUCTOR_CASES = {
    "input_size_zero": (dict(input_size=0), ValueError, ["input_size", ">= 1", "0"]),
    "input_size_negative": (dict(input_size=-3), ValueError, ["input_size", ">= 1", "-3"]),
    "input_size_numpy_float": (dict(input_size=np.float64(4)), TypeError, ["input_size", "float64"]),
    "input_size_string": (dict(input_size="4"), TypeError, ["input_size", "'4'"]),
    "input_size_past_blas": (dict(input_size=2**31), ValueError, ["input_size", str(2**31), "32-bit BLAS"]),
    "hidden_size_zero": (dict(hidden_size=0), ValueError, ["hidden_size", ">= 1", "0"]),
    "hidden_size_negative": (dict(hidden_size=-2), ValueError, ["hidden_size", "-2"]),
    "hidden_size_float": (dict(hidden_size=6.0), TypeError, ["hidden_size", "int", "6.0"]),
    "hidden_size_none": (dict(hidden_size=None), TypeError, ["hidden_size", "None"]),
    "hidden_size_past_blas": (
        dict(hidden_size=2**29),
        ValueError,
        ["4*hidden_size", str(2**31), str(BLAS_INT_MAX), "32-bit BLAS"],
    ),
    "num_layers_zero": (dict(num_layers=0), ValueError, ["num_layers", ">= 1"]),
    "num_layers_negative": (dict(num_layers=-1), ValueError, ["num_layers", ">= 1", "-1"]),
    "num_layers_bool": (dict(num_layers=True), TypeError, ["num_layers"]),
    "proj_negative": (dict(proj_size=-1), ValueError, ["proj_size", ">= 0"]),
    "proj_too_big": (dict(proj_size=H), ValueError, ["proj_size", "smaller than hidden_size", "6"]),
    "proj_size_bool": (dict(proj_size=True), TypeError, ["proj_size", "True"]),
    "dropout_high": (dict(dropout=1.5), ValueError, ["dropout", "[0, 1]", "1.5"]),
    "dropout_negative": (dict(dropout=-0.1), ValueError, ["dropout", "-0.1"]),
    "dropout_nan": (dict(dropout=float("nan")), ValueError, ["dropout", "nan"]),
    "dropout_string": (dict(dropout="0.5"), TypeError, ["dropout", "'0.5'"]),
    "bias_string": (dict(bias="False"), TypeError, ["bias", "True or False", "'False'"]),
    "batch_first_none": (dict(batch_first=None), TypeError, ["batch_first", "None"]),
    "bidirectional_two": (dict(bidirectional=2), TypeError, ["bidirectional", "2"]),
    "peephole_string": (dict(peephole="yes"), TypeError, ["peephole", "'yes'"]),
    "dtype_none": (dict(dtype=None), TypeError, ["dtype", "None"]),
    "dtype_int32": (dict(dtype=np.int32), TypeError, ["dtype", "int32"]),
    "dtype_complex": (dict(dtype=np.complex128), TypeError, ["dtype", "complex128"]),
    "dtype_float16": (dict(dtype=np.float16), TypeError, ["dtype", "float16", "float32 or numpy.float64"]),
    "dtype_nonsense": (dict(dtype="banana"), TypeError, ["dtype", "banana"]),
    "seed_negative": (dict(seed=-1), ValueError, ["seed", "-1"]),
    "seed_float": (dict(seed=1.5), TypeError, ["seed", "1.5"]),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES)
def test_constructor_refuses_before_allocating(case):
    change, error, words = CONSTRUCTOR_CASES[case]
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            LSTM(**{**dict(input_size=I, hidden_size=H, num_layers=2), **change})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_mentions(info, words)
    assert peak < 2**20, peak


def test_constructor_refuses_parameters_larger_than_memory():
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


def test_constructor_takes_numpy_ints_and_0_1_flags():
    a = LSTM(
        np.int64(4),
        np.int32(H),
        np.int8(2),
        bias=1,
        batch_first=np.False_,
        bidirectional=0,
        proj_size=np.uint8(2),
        seed=3,
    )
    b = LSTM(4, H, 2, bias=True, batch_first=False, bidirectional=False, proj_size=2, seed=3)
    assert repr(a) == repr(b)
    assert_identical(list(a.state_dict().values()), list(b.state_dict().values()))


def test_train_mode_must_be_a_bool():
    m = LSTM(I, H)
    with pytest.raises(TypeError, match="mode must be True or False, got 'False'"):
        m.train("False")
    assert m.training


# ----------------------------------------------------------------------------- calls


def small_lstm(**options):
    return LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, **options)


CALL_CASES = {
    "x_1d": (dict(x=np.zeros(I)), ValueError, ["x", "3-D", "2-D", "(4,)"]),
    "x_4d": (dict(x=np.zeros((T, B, I, 1))), ValueError, ["x", "(5, 3, 4, 1)"]),
    "x_features": (dict(x=np.zeros((T, B, I + 1))), ValueError, ["x", "5 features", "input_size=4"]),
    "x_no_features": (dict(x=np.zeros((T, B, 0))), ValueError, ["x", "0 features", "input_size=4"]),
    "x_float32": (dict(x=np.zeros((T, B, I), np.float32)), TypeError, ["x", "float32", "float64", "astype"]),
    "x_complex": (dict(x=np.zeros((T, B, I), complex)), TypeError, ["x", "real"]),
    "x_ragged": (dict(x=[[[0.0] * I] * B, [[0.0] * I]]), ValueError, ["x", "could not be converted"]),
    "x_none": (dict(x=None), TypeError, ["x", "real numbers"]),
    "x_strings": (dict(x=np.full((T, B, I), "a")), TypeError, ["x", "real numbers"]),
    "hx_not_pair": (dict(hx=np.zeros((LD, B, H))), TypeError, ["hx", "tuple (h, c)", "ndarray"]),
    "hx_three": (dict(hx=(None, None, None)), TypeError, ["hx", "length 3"]),
    "hx_dict": (dict(hx={"h": None, "c": None}), TypeError, ["hx", "tuple (h, c)", "dict"]),
    "h0_layers": (dict(hx=(np.zeros((2, B, H)), None)), ValueError, ["hx[0]", "(4, 3, 6)", "(2, 3, 6)"]),
    "h0_2d_for_batched": (dict(hx=(np.zeros((LD, H)), None)), ValueError, ["hx[0]", "(4, 3, 6)", "(4, 6)"]),
    "h0_dtype": (dict(hx=(np.zeros((LD, B, H), np.float32), None)), TypeError, ["hx[0]", "float32"]),
    "h0_complex": (dict(hx=(np.zeros((LD, B, H), complex), None)), TypeError, ["hx[0]", "real"]),
    "h0_3d_for_unbatched": (
        dict(x=np.zeros((T, I)), hx=(np.zeros((LD, 1, H)), None)),
        ValueError,
        ["hx[0]", "(4, 6)", "(4, 1, 6)", "unbatched 2-D input takes 2-D states"],
    ),
    "c0_batch": (dict(hx=(None, np.zeros((LD, B + 1, H)))), ValueError, ["hx[1]", "(4, 3, 6)", "(4, 4, 6)"]),
    "c0_ragged": (
        dict(hx=(None, [[[0.0] * H] * B] * 3 + [[[0.0]]])),
        ValueError,
        ["hx[1]", "could not be converted"],
    ),
    "c0_transposed": (dict(hx=(None, np.zeros((LD, H, B)))), ValueError, ["hx[1]", "(4, 3, 6)", "(4, 6, 3)"]),
    "lengths_unbatched": (dict(x=np.zeros((T, I)), lengths=[T]), ValueError, ["lengths", "batched"]),
    "lengths_too_long": (dict(lengths=[1, 2, T + 1]), ValueError, ["lengths", "[0, 5]"]),
    "lengths_negative": (dict(lengths=[1, -1, 2]), ValueError, ["lengths", "[0, 5]", "-1"]),
    "lengths_count": (dict(lengths=[1, 2]), ValueError, ["lengths", "(3,)", "(2,)"]),
    "lengths_float": (dict(lengths=[1.0, 2.0, 3.0]), TypeError, ["lengths", "integers"]),
    "lengths_bool": (dict(lengths=np.ones(B, bool)), TypeError, ["lengths", "integers", "bool"]),
    "lengths_2d": (dict(lengths=np.ones((B, 1), int)), ValueError, ["lengths", "(3,)", "(3, 1)"]),
    "lengths_ragged": (dict(lengths=[[1], [2, 3], []]), ValueError, ["lengths", "could not be converted"]),
}


@pytest.mark.parametrize("case", CALL_CASES)
def test_forward_refuses_before_any_kernel_runs(case, kernels):
    change, error, words = CALL_CASES[case]
    args = {**dict(x=np.zeros((T, B, I)), hx=None, lengths=None), **change}
    with pytest.raises(error) as info:
        small_lstm()(args["x"], args["hx"], lengths=args["lengths"])
    assert_mentions(info, words)
    assert kernels == []


def test_a_float64_array_on_a_float32_module_is_refused_naming_x(kernels):
    """Float arrays must be in the dtype computed in (lists and integers are converted)."""
    m = LSTM(I, H, num_layers=2)
    for call, name in [
        (lambda: m(np.zeros((T, B, I))), "x"),
        (lambda: m.step(np.zeros((B, I))), "x_t"),
        (lambda: m(np.zeros((T, B, I), np.float32), (np.zeros((2, B, H)), None)), "hx[0]"),
    ]:
        with pytest.raises(TypeError) as info:
            call()
        assert_mentions(info, [f"{name} has dtype float64", "computes in float32", ".astype(numpy.float32)"])
    assert kernels == []


BACKWARD_CASES = {
    "dy_ragged": (
        dict(dy=[[[0.0] * 2 * H] * B] * (T - 1) + [[[0.0]]]),
        ValueError,
        ["dy", "could not be converted"],
    ),
    "dy_complex": (dict(dy=np.zeros((T, B, 2 * H), complex)), TypeError, ["dy", "real"]),
    "dy_strings": (dict(dy=np.full((T, B, 2 * H), "a")), TypeError, ["dy", "real"]),
    "dy_one_direction": (dict(dy=np.zeros((T, B, H))), ValueError, ["dy", "(5, 3, 12)", "(5, 3, 6)"]),
    "dhx_complex": (dict(dhx=(np.zeros((LD, B, H), complex), None)), TypeError, ["dhx[0]", "real"]),
    "dhx_three": (dict(dhx=[None, None, None]), TypeError, ["dhx", "length 3"]),
    "dhx_c_layers": (dict(dhx=(None, np.zeros((2, B, H)))), ValueError, ["dhx[1]", "(4, 3, 6)", "(2, 3, 6)"]),
}


@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_backward_refuses_before_any_kernel_runs(case, kernels):
    change, error, words = BACKWARD_CASES[case]
    m = small_lstm()
    m(np.zeros((T, B, I)))
    args = {**dict(dy=None, dhx=None), **change}
    with pytest.raises(error) as info:
        m.backward(args["dy"], args["dhx"])
    assert_mentions(info, words)
    assert "backward" not in kernels


def test_backward_rejects_bad_arguments():
    m = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64)
    y, (h, c) = m(np.zeros((T, B, I)))
    with pytest.raises(ValueError, match=r"dy.*\(5, 3, 4\).*\(5, 3, 2\)"):
        m.backward(np.zeros((T, B, 2)))
    with pytest.raises(TypeError, match="dy.*float32"):
        m.backward(np.zeros(y.shape, np.float32))
    with pytest.raises(ValueError, match=r"dhx\[0\].*\(4, 3, 2\).*\(4, 3, 6\)"):
        m.backward(None, (np.zeros((4, B, H)), None))
    with pytest.raises(ValueError, match=r"dhx\[1\].*\(4, 3, 6\).*\(4, 3, 2\)"):
        m.backward(None, (h, h))
    with pytest.raises(TypeError, match="dhx"):
        m.backward(None, h)
    dx, (dh0, dc0) = m.backward(None, (h, c))
    assert dx.shape == (T, B, I) and dh0.shape == h.shape and dc0.shape == c.shape


def test_backward_after_an_inference_forward_names_the_reason(kernels):
    m = small_lstm()
    m(np.zeros((T, B, I)))
    m.eval()
    m(np.zeros((T, B, I)))  # this forward made no cache: backward must not use the older one
    with pytest.raises(ValueError, match="eval mode"):
        m.backward(np.zeros((T, B, 2 * H)))
    assert "backward" not in kernels


def test_backward_after_a_parameter_changed_shape_is_refused(kernels):
    m = small_lstm()
    y, _ = m(np.zeros((T, B, I)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # In place (a parameter is a view of memory aligned for the kernels: no resize).
        m.params[param_name("weight_hh", 1, reverse=True)].shape = (6, 24)
    with pytest.raises(
        ValueError,
        match=r"layer 1 \(reverse direction\): cache no longer matches.*w_hh.*"
        r"\(6, 24\).*\(24, 6\)",
    ):
        m.backward(np.ones_like(y))
    assert "backward" not in kernels


# ----------------------------------------------------------------------------- step


STEP_CASES = {
    "x_t_0d": (dict(x_t=np.float64(1)), ValueError, ["x_t", "()"]),
    "x_t_none": (dict(x_t=None), TypeError, ["x_t", "real"]),
    "x_t_ragged": (dict(x_t=[[0.0] * I, [0.0]]), ValueError, ["x_t", "could not be converted"]),
    "x_t_complex": (dict(x_t=np.zeros((B, I), complex)), TypeError, ["x_t", "real"]),
    "hx_unbatched_for_batched": (
        dict(hx=(np.zeros((2, H)), None)),
        ValueError,
        ["hx[0]", "(2, 3, 6)", "(2, 6)"],
    ),
    "hx_c_complex": (dict(hx=(None, np.zeros((2, B, H), complex))), TypeError, ["hx[1]", "real"]),
    "hx_not_a_pair": (dict(hx=np.zeros((2, B, H))), TypeError, ["hx", "tuple (h, c)"]),
}


@pytest.mark.parametrize("case", STEP_CASES)
def test_step_refuses_before_any_kernel_runs(case, kernels):
    change, error, words = STEP_CASES[case]
    m = LSTM(I, H, num_layers=2, dtype=np.float64, seed=0)
    args = {**dict(x_t=np.zeros((B, I)), hx=None), **change}
    with pytest.raises(error) as info:
        m.step(args["x_t"], args["hx"])
    assert_mentions(info, words)
    assert kernels == []


def test_step_rejects_bad_arguments(kernels):
    with pytest.raises(ValueError, match="unidirectional"):
        LSTM(I, H, bidirectional=True).step(np.zeros((B, I), np.float32))
    m = LSTM(I, H, num_layers=2, dtype=np.float64)
    with pytest.raises(ValueError, match=r"x_t.*input_size=4.*\(3, 5\)"):
        m.step(np.zeros((B, I + 1)))
    with pytest.raises(ValueError, match=r"x_t.*\(1, 3, 4\)"):
        m.step(np.zeros((1, B, I)))
    with pytest.raises(TypeError, match="x_t.*float32"):
        m.step(np.zeros((B, I), np.float32))
    with pytest.raises(ValueError, match=r"hx\[0\].*\(2, 3, 6\).*\(1, 3, 6\)"):
        m.step(np.zeros((B, I)), (np.zeros((1, B, H)), np.zeros((2, B, H))))
    assert kernels == []


# ----------------------------------------------------------------------------- state dicts


def test_load_state_dict_refusals_name_the_entry_and_change_nothing():
    m = LSTM(I, H, dtype=np.float64, seed=0)
    before = m.state_dict()
    good = m.state_dict()
    w_ih, w_hh, b_ih, b_hh = (
        param_name(kind, 0) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    cases = [
        ({**good, w_ih: [[0.0] * I, [0.0]]}, ValueError, f"state_dict['{w_ih}'] could not be converted"),
        ({**good, b_ih: None}, TypeError, f"state_dict['{b_ih}'] must hold real numbers"),
        ({**good, w_hh: np.zeros((4 * H, H), complex)}, TypeError, f"state_dict['{w_hh}']"),
        ({**good, b_hh: np.zeros((1, 4 * H))}, ValueError, f"state_dict['{b_hh}'] must have shape (24,)"),
    ]
    for state_dict, error, words in cases:
        with pytest.raises(error) as info:
            m.load_state_dict(state_dict)
        assert words in str(info.value), str(info.value)
    with pytest.raises(TypeError, match="strict must be True or False, got 'False'"):
        m.load_state_dict(good, strict="False")
    assert_identical(list(m.state_dict().values()), list(before.values()))
