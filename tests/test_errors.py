"""Bad input to the functional API raises ValueError or TypeError naming the argument."""

import numpy as np
import pytest

import lstm_c
from lstm_c import reference

T, B, I, H = 4, 3, 5, 6


def good(dtype=np.float64):
    rng = np.random.default_rng(0)
    return dict(
        x=rng.standard_normal((T, B, I)).astype(dtype),
        w_ih=rng.standard_normal((4 * H, I)).astype(dtype),
        w_hh=rng.standard_normal((4 * H, H)).astype(dtype),
        b_ih=np.zeros(4 * H, dtype),
        b_hh=np.zeros(4 * H, dtype),
        h0=np.zeros((B, H), dtype),
        c0=np.zeros((B, H), dtype),
    )


# (what to change, the exception, words the message must contain)
FORWARD_CASES = {
    "x_2d": (dict(x=np.zeros((T, I))), ValueError, ["x", "3-D", "(4, 5)"]),
    "x_4d": (dict(x=np.zeros((T, B, I, 1))), ValueError, ["x", "3-D"]),
    "w_ih_columns": (dict(w_ih=np.zeros((4 * H, I + 1))), ValueError, ["w_ih", "input_size", "(24, 6)"]),
    "w_ih_rows_not_4h": (dict(w_ih=np.zeros((4 * H + 1, I))), ValueError, ["w_ih", "4*hidden_size", "(25, 5)"]),
    "w_ih_1d": (dict(w_ih=np.zeros(4 * H)), ValueError, ["w_ih", "2-D"]),
    "w_hh_shape": (dict(w_hh=np.zeros((4 * H, H + 1))), ValueError, ["w_hh", "(24, 6)", "(24, 7)"]),
    "b_ih_shape": (dict(b_ih=np.zeros(4 * H + 1)), ValueError, ["b_ih", "(24,)", "(25,)"]),
    "b_hh_2d": (dict(b_hh=np.zeros((1, 4 * H))), ValueError, ["b_hh", "1-D"]),
    "h0_shape": (dict(h0=np.zeros((B + 1, H))), ValueError, ["h0", "(3, 6)", "(4, 6)"]),
    "c0_shape": (dict(c0=np.zeros((B, H, 1))), ValueError, ["c0", "2-D"]),
    "lengths_too_long": (dict(lengths=[1, 2, T + 1]), ValueError, ["lengths", "[0, 4]", "5"]),
    "lengths_negative": (dict(lengths=[1, -1, 2]), ValueError, ["lengths", "-1"]),
    "lengths_count": (dict(lengths=[1, 2]), ValueError, ["lengths", "(3,)", "(2,)"]),
    "lengths_float": (dict(lengths=[1.0, 2.0, 3.0]), TypeError, ["lengths", "integers", "float64"]),
    "lengths_fraction": (dict(lengths=np.array([1.5, 2, 3])), TypeError, ["lengths", "integers"]),
    "complex_x": (dict(x=np.zeros((T, B, I), complex)), TypeError, ["x", "real", "complex128"]),
    "string_w_hh": (dict(w_hh=np.full((4 * H, H), "a")), TypeError, ["w_hh", "real"]),
    "float16": (dict(x=np.zeros((T, B, I), np.float16)), TypeError, ["x", "float16", "float32 or float64"]),
    "mixed_dtypes": (dict(w_hh=np.zeros((4 * H, H), np.float32)), TypeError, ["mixed", "x is float64", "w_hh is float32"]),
    "w_hr_columns": (dict(w_hr=np.zeros((3, H + 1))), ValueError, ["w_hr", "(proj_size, hidden_size)", "(3, 7)"]),
    "w_hh_not_projected": (dict(w_hr=np.zeros((3, H))), ValueError, ["w_hh", "proj_size", "(24, 3)", "(24, 6)"]),
    "peephole_shape": (dict(peephole=np.zeros((4, H))), ValueError, ["peephole", "(3, 6)", "(4, 6)"]),
    "peephole_mixed": (dict(peephole=np.zeros((3, H), np.float32)), TypeError, ["mixed", "peephole is float32"]),
    "num_threads_zero": (dict(num_threads=0), ValueError, ["num_threads", ">= 1"]),
    "num_threads_float": (dict(num_threads=2.0), TypeError, ["num_threads"]),
}


@pytest.mark.parametrize("api", [lstm_c, reference], ids=["lstm_c", "reference"])
@pytest.mark.parametrize("case", FORWARD_CASES)
def test_forward_rejects_bad_input(api, case):
    change, error, words = FORWARD_CASES[case]
    change = dict(change)
    args = good()
    options = {k: change.pop(k) for k in ("lengths", "num_threads", "w_hr", "peephole") if k in change}
    args.update(change)
    with pytest.raises(error) as info:
        api.lstm_forward(**args, **options)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("api", [lstm_c, reference], ids=["lstm_c", "reference"])
def test_backward_rejects_bad_cache_and_gradients(api):
    args = good()
    y, _, _, cache = api.lstm_forward(**args)
    _, _, _, no_cache = api.lstm_forward(**args, training=False)
    with pytest.raises(ValueError, match="cache is None.*training=True"):
        api.lstm_backward(no_cache, y)
    with pytest.raises(TypeError, match="cache must be .*got dict"):
        api.lstm_backward({"x": 1}, y)
    with pytest.raises(ValueError, match=r"dy must have shape .*\(4, 3, 6\), got \(4, 3, 5\)"):
        api.lstm_backward(cache, np.zeros((T, B, H - 1)))
    with pytest.raises(ValueError, match=r"dh_n must have shape .*\(3, 6\)"):
        api.lstm_backward(cache, dh_n=np.zeros((B, H + 1)))
    with pytest.raises(ValueError, match=r"dc_n must be 2-D"):
        api.lstm_backward(cache, dc_n=np.zeros(B * H))
    with pytest.raises(TypeError, match="mixed float dtypes.*dy is float32"):
        api.lstm_backward(cache, y.astype(np.float32))


def test_caches_are_not_interchangeable_between_kernels_and_reference():
    args = good()
    _, _, _, ours = lstm_c.lstm_forward(**args)
    _, _, _, theirs = reference.lstm_forward(**args)
    with pytest.raises(TypeError, match="cache must be the LSTMCache"):
        lstm_c.lstm_backward(theirs)
    with pytest.raises(TypeError, match="cache must be"):
        reference.lstm_backward(ours)


def test_integer_inputs_follow_the_float_dtype():
    args = good(np.float32)
    args["x"] = np.ones((T, B, I), dtype=np.int64)
    y, _, _, _ = lstm_c.lstm_forward(**args)
    assert y.dtype == np.float32
