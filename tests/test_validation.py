"""Bad arguments to the functional API (lstm_c and its reference alike): a ValueError or
TypeError that names the argument, raised before any compiled kernel runs (the `kernels`
fixture counts the calls into lstm_c._lstm). Caches changed or forged after the forward
are refused too, never read.

The layer's arguments are in test_validation_layer.py, the 32-bit BLAS guard in
test_blas_guard.py.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from helpers import APIS, assert_mentions, child_failure, make_problem, run_in_child

import lstm_c
from lstm_c import reference
from lstm_c._validation import MAX_THREADS

T, B, I, H = 4, 3, 5, 6


def good_args(dtype=np.float64):
    return make_problem(np.random.default_rng(0), T, B, I, H, dtype)


# (what to change, the exception, words the message must contain)
FORWARD_CASES = {
    "x_2d": (dict(x=np.zeros((T, I))), ValueError, ["x must be 3-D", "(4, 5)"]),
    "x_4d": (dict(x=np.zeros((T, B, I, 1))), ValueError, ["x", "3-D"]),
    "x_0d": (dict(x=np.float64(1.0)), ValueError, ["x", "3-D", "0-D"]),
    "x_ragged": (
        dict(x=[[[0.0] * I] * B] * (T - 1) + [[[0.0] * I] * (B - 1)]),
        ValueError,
        ["x", "could not be converted"],
    ),
    "x_none": (dict(x=None), TypeError, ["x", "real numbers", "object"]),
    "x_strings": (dict(x=np.full((T, B, I), "a")), TypeError, ["x", "real numbers"]),
    "x_bytes": (dict(x=np.zeros((T, B, I), "S1")), TypeError, ["x", "real numbers"]),
    "complex_x": (dict(x=np.zeros((T, B, I), complex)), TypeError, ["x", "real", "complex128"]),
    "float16": (dict(x=np.zeros((T, B, I), np.float16)), TypeError, ["x", "float16", "float32 or float64"]),
    "w_ih_none": (dict(w_ih=None), TypeError, ["w_ih", "real numbers"]),
    "w_ih_columns": (dict(w_ih=np.zeros((4 * H, I + 1))), ValueError, ["w_ih", "input_size", "(24, 6)"]),
    "w_ih_rows_not_4h": (
        dict(w_ih=np.zeros((4 * H + 1, I))),
        ValueError,
        ["w_ih", "4*hidden_size", "(25, 5)"],
    ),
    "w_ih_no_rows": (dict(w_ih=np.zeros((0, I))), ValueError, ["w_ih", "hidden_size >= 1", "(0, 5)"]),
    "w_ih_1d": (dict(w_ih=np.zeros(4 * H)), ValueError, ["w_ih", "2-D"]),
    "w_hh_none": (dict(w_hh=None), TypeError, ["w_hh", "real numbers"]),
    "w_hh_shape": (dict(w_hh=np.zeros((4 * H, H + 1))), ValueError, ["w_hh", "(24, 6)", "(24, 7)"]),
    "w_hh_too_few_columns": (dict(w_hh=np.zeros((4 * H, H - 1))), ValueError, ["w_hh", "(24, 6)", "(24, 5)"]),
    "w_hh_transposed": (dict(w_hh=np.zeros((H, 4 * H))), ValueError, ["w_hh", "(24, 6)", "(6, 24)"]),
    "string_w_hh": (dict(w_hh=np.full((4 * H, H), "a")), TypeError, ["w_hh", "real"]),
    "mixed_dtypes": (
        dict(w_hh=np.zeros((4 * H, H), np.float32)),
        TypeError,
        ["mixed", "x is float64", "w_hh is float32"],
    ),
    "b_ih_shape": (dict(b_ih=np.zeros(4 * H + 1)), ValueError, ["b_ih", "(24,)", "(25,)"]),
    "b_ih_ragged": (dict(b_ih=[[0.0] * 4 * H, [0.0]]), ValueError, ["b_ih", "could not be converted"]),
    "b_hh_2d": (dict(b_hh=np.zeros((1, 4 * H))), ValueError, ["b_hh", "1-D"]),
    "b_hh_complex": (dict(b_hh=np.zeros(4 * H, complex)), TypeError, ["b_hh", "real", "complex128"]),
    "h0_shape": (dict(h0=np.zeros((B + 1, H))), ValueError, ["h0", "(3, 6)", "(4, 6)"]),
    "h0_mixed": (dict(h0=np.zeros((B, H), np.float32)), TypeError, ["mixed", "h0 is float32"]),
    "h0_hidden_with_projection": (dict(w_hr=np.zeros((2, H))), ValueError, ["w_hh", "proj_size", "(24, 2)"]),
    "c0_shape": (dict(c0=np.zeros((B, H, 1))), ValueError, ["c0", "2-D"]),
    "c0_complex": (dict(c0=np.zeros((B, H), complex)), TypeError, ["c0", "real", "complex128"]),
    "c0_transposed": (dict(c0=np.zeros((H, B))), ValueError, ["c0", "(3, 6)", "(6, 3)"]),
    "w_hr_columns": (
        dict(w_hr=np.zeros((3, H + 1))),
        ValueError,
        ["w_hr", "(proj_size, hidden_size)", "(3, 7)"],
    ),
    "w_hh_not_projected": (
        dict(w_hr=np.zeros((3, H))),
        ValueError,
        ["w_hh", "proj_size", "(24, 3)", "(24, 6)"],
    ),
    "w_hr_no_rows": (dict(w_hr=np.zeros((0, H))), ValueError, ["w_hr", "P >= 1", "(0, 6)"]),
    "w_hr_1d": (dict(w_hr=np.zeros(H)), ValueError, ["w_hr", "(proj_size, hidden_size)", "(6,)"]),
    "peephole_shape": (dict(peephole=np.zeros((4, H))), ValueError, ["peephole", "(3, 6)", "(4, 6)"]),
    "peephole_1d": (dict(peephole=np.zeros(3 * H)), ValueError, ["peephole", "2-D", "(18,)"]),
    "peephole_complex": (dict(peephole=np.zeros((3, H), complex)), TypeError, ["peephole", "real"]),
    "peephole_mixed": (
        dict(peephole=np.zeros((3, H), np.float32)),
        TypeError,
        ["mixed", "peephole is float32"],
    ),
    "lengths_too_long": (dict(lengths=[1, 2, T + 1]), ValueError, ["lengths", "[0, 4]", "5"]),
    "lengths_negative": (dict(lengths=[1, -1, 2]), ValueError, ["lengths", "-1"]),
    "lengths_count": (dict(lengths=[1, 2]), ValueError, ["lengths", "(3,)", "(2,)"]),
    "lengths_float": (dict(lengths=[1.0, 2.0, 3.0]), TypeError, ["lengths", "integers", "float64"]),
    "lengths_fraction": (dict(lengths=np.array([1.5, 2, 3])), TypeError, ["lengths", "integers"]),
    "lengths_2d": (dict(lengths=np.full((B, 1), T)), ValueError, ["lengths", "(3,)", "(3, 1)"]),
    "lengths_scalar": (dict(lengths=T), ValueError, ["lengths", "(3,)", "()"]),
    "lengths_bool": (dict(lengths=np.ones(B, bool)), TypeError, ["lengths", "integers", "bool"]),
    "lengths_object": (
        dict(lengths=np.array([1, 2, 3], object)),
        TypeError,
        ["lengths", "integers", "object"],
    ),
    "lengths_ragged": (dict(lengths=[[1], [2, 3], [3]]), ValueError, ["lengths", "could not be converted"]),
    "lengths_string": (dict(lengths="123"), TypeError, ["lengths", "integers"]),
    "lengths_huge_unsigned": (
        dict(lengths=np.array([2**63, 1, 1], np.uint64)),
        ValueError,
        ["lengths", "[0, 4]", str(2**63)],
    ),
    "batch_first_string": (dict(batch_first="False"), TypeError, ["batch_first", "True or False", "'False'"]),
    "batch_first_none": (dict(batch_first=None), TypeError, ["batch_first", "None"]),
    "batch_first_two": (dict(batch_first=2), TypeError, ["batch_first", "2"]),
    "num_threads_zero": (dict(num_threads=0), ValueError, ["num_threads", ">= 1"]),
    "num_threads_float": (dict(num_threads=2.0), TypeError, ["num_threads"]),
    "num_threads_huge": (dict(num_threads=2**40), ValueError, ["num_threads", "<=", str(2**40)]),
    "num_threads_above_max": (
        dict(num_threads=MAX_THREADS + 1),
        ValueError,
        ["num_threads", f"<= {MAX_THREADS}", str(MAX_THREADS + 1)],
    ),
    "num_threads_negative": (dict(num_threads=-2), ValueError, ["num_threads", ">= 1", "-2"]),
    "num_threads_string": (dict(num_threads="2"), TypeError, ["num_threads", "'2'"]),
}


@APIS
@pytest.mark.parametrize("case", FORWARD_CASES)
def test_forward_refuses_before_any_kernel_runs(api, case, kernels):
    change, error, words = FORWARD_CASES[case]
    with pytest.raises(error) as info:
        api.lstm_forward(**{**good_args(), **change})
    assert_mentions(info, words)
    assert kernels == []


@APIS
@pytest.mark.parametrize("flag", ["reverse", "training"])
def test_forward_refuses_flags_that_are_not_bools(api, flag, kernels):
    with pytest.raises(TypeError, match=f"{flag}.*True or False.*'False'"):
        api.lstm_forward(**good_args(), **{flag: "False"})
    assert kernels == []


@APIS
def test_num_threads_is_checked_but_any_count_is_accepted(api):
    _, _, _, cache = api.lstm_forward(**good_args(), num_threads=3)
    with pytest.raises(TypeError, match="num_threads"):
        api.lstm_backward(cache, num_threads=1.5)


# ----------------------------------------------------------------------------- backward


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


@APIS
def test_backward_rejects_bad_cache_and_gradients(api):
    args = good_args()
    y, _, _, cache = api.lstm_forward(**args)
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
    args = good_args()
    _, _, _, ours = lstm_c.lstm_forward(**args)
    _, _, _, theirs = reference.lstm_forward(**args)
    with pytest.raises(TypeError, match="cache must be the LSTMCache"):
        lstm_c.lstm_backward(theirs)
    with pytest.raises(TypeError, match="cache must be"):
        reference.lstm_backward(ours)


BACKWARD_CASES = {
    "dy_ragged": (
        dict(dy=[[[0.0] * H] * B] * (T - 1) + [[[0.0]]]),
        ValueError,
        ["dy", "could not be converted"],
    ),
    "dy_complex": (dict(dy=np.zeros((T, B, H), complex)), TypeError, ["dy", "real", "complex128"]),
    "dy_1d": (dict(dy=np.zeros(T * B * H)), ValueError, ["dy", "3-D", "(72,)"]),
    "dy_seq_len": (dict(dy=np.zeros((T - 1, B, H))), ValueError, ["dy", "(4, 3, 6)", "(3, 3, 6)"]),
    "dy_time_major_for_batch_first": (
        dict(batch_first=True, dy=np.zeros((T, B, H))),
        ValueError,
        ["dy", "(batch, seq_len, hidden_size)", "(3, 4, 6)", "(4, 3, 6)"],
    ),
    "dy_hidden_with_projection": (
        dict(w_hr=np.ones((2, H)) * 0.1, w_hh=np.zeros((4 * H, 2)), h0=None, dy=np.zeros((T, B, H))),
        ValueError,
        ["dy", "proj_size", "(4, 3, 2)", "(4, 3, 6)"],
    ),
    "dh_n_mixed": (dict(dh_n=np.zeros((B, H), np.float32)), TypeError, ["mixed", "dh_n is float32"]),
    "dh_n_strings": (dict(dh_n=np.full((B, H), "a")), TypeError, ["dh_n", "real"]),
    "dc_n_transposed": (dict(dc_n=np.zeros((H, B))), ValueError, ["dc_n", "(3, 6)", "(6, 3)"]),
    "num_threads_zero": (dict(num_threads=0), ValueError, ["num_threads", ">= 1"]),
    "num_threads_float": (dict(num_threads=1.5), TypeError, ["num_threads", "1.5"]),
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
    assert_mentions(info, words)
    assert "backward" not in kernels


# ----------------------------------------------------------------------------- caches changed after the forward


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
@pytest.mark.parametrize(
    "what, name, shape",
    [
        ("w_hh_resized", "w_hh", "(1, 1)"),
        ("x_reshaped", "x", "(12, 5)"),
        ("w_ih_retyped", "w_ih", "float32"),
        ("peephole_resized", "peephole", "(1, 18)"),
    ],
)
def test_a_cache_whose_inputs_changed_shape_is_refused(api, what, name, shape, kernels):
    p = make_problem(np.random.default_rng(1), T, B, I, H, peephole=True)
    y, _, _, cache = api.lstm_forward(**p)
    assert cache.args.x is p["x"]  # the cache references the caller's arrays
    change_in_place(p, what)
    with pytest.raises(ValueError) as info:
        api.lstm_backward(cache, y)
    assert_mentions(info, ["cache no longer matches", name, shape, "run the forward again"])
    assert "backward" not in kernels


# A cache built by hand, or whose arrays or lengths were replaced or changed after the
# forward (T=4, B=3, H=6, projection P=4, peepholes: act is (12, 24), c_prev (12, 6),
# h_prev (12, 4), m (12, 6)): refused, never read. Each forgery runs in one child process,
# so that a crash fails these tests instead of ending the test run.
# (statement that forges `cache`, the exception, words its message must contain)
FORGED = {
    "by_hand_act_shape": (
        "cache = lstm_c.LSTMCache(cache.args, cache.reverse, np.zeros((1, 1)), cache.c_prev, "
        "cache.h_prev, cache.m)",
        "ValueError",
        ["cache.act", "(12, 24)", "(1, 1)"],
    ),
    "by_hand_act_float32": (
        "cache = lstm_c.LSTMCache(cache.args, cache.reverse, cache.act.astype(np.float32), "
        "cache.c_prev, cache.h_prev, cache.m)",
        "ValueError",
        ["cache.act", "float32"],
    ),
    "by_hand_act_fortran": (
        "cache = lstm_c.LSTMCache(cache.args, cache.reverse, np.asfortranarray(cache.act), "
        "cache.c_prev, cache.h_prev, cache.m)",
        "ValueError",
        ["cache.act", "C-contiguous"],
    ),
    "by_hand_act_list": (
        "cache = lstm_c.LSTMCache(cache.args, cache.reverse, cache.act.tolist(), cache.c_prev, "
        "cache.h_prev, cache.m)",
        "ValueError",
        ["cache.act", "list"],
    ),
    "by_hand_args_tuple": (
        "cache = lstm_c.LSTMCache(tuple(cache.args), cache.reverse, cache.act, cache.c_prev, "
        "cache.h_prev, cache.m)",
        "TypeError",
        ["cache.args", "ForwardArgs", "tuple"],
    ),
    "by_hand_reverse_string": (
        "cache = lstm_c.LSTMCache(cache.args, 'yes', cache.act, cache.c_prev, cache.h_prev, cache.m)",
        "TypeError",
        ["cache.reverse", "'yes'"],
    ),
    "act_replaced": ("cache.act = np.zeros((3, 3))", "ValueError", ["cache.act", "(12, 24)", "(3, 3)"]),
    "act_resized_in_place": (
        "cache.act.resize((1, 1), refcheck=False)",
        "ValueError",
        ["cache.act", "(1, 1)"],
    ),
    "c_prev_replaced": (
        "cache.c_prev = np.zeros((12, 5))",
        "ValueError",
        ["cache.c_prev", "(12, 6)", "(12, 5)"],
    ),
    "h_prev_float32": (
        "cache.h_prev = cache.h_prev.astype(np.float32)",
        "ValueError",
        ["cache.h_prev", "float32"],
    ),
    "m_removed": ("cache.m = None", "ValueError", ["cache.m", "(12, 6)", "NoneType"]),
    "lengths_past_T": (
        "cache.args.lengths[:] = 9",
        "ValueError",
        ["lengths", "[0, 4]", "run the forward again"],
    ),
    "lengths_huge": ("cache.args.lengths[0] = 2**40", "ValueError", ["lengths", "[0, 4]"]),
    "lengths_negative": ("cache.args.lengths[1] = -3", "ValueError", ["lengths", "[0, 4]"]),
    "lengths_list": (
        "cache.args = cache.args._replace(lengths=[4, 2, 1])",
        "ValueError",
        ["lengths", "intp"],
    ),
    "lengths_int32": (
        "cache.args = cache.args._replace(lengths=np.array([4, 2, 1], np.int32))",
        "ValueError",
        ["lengths", "intp"],
    ),
    "steps": ("cache.args = cache.args._replace(steps=40)", "ValueError", ["cache no longer matches", "x"]),
    "batch": ("cache.args = cache.args._replace(batch=300)", "ValueError", ["cache no longer matches", "x"]),
    "hidden_size": (
        "cache.args = cache.args._replace(hidden_size=60)",
        "ValueError",
        ["cache no longer matches", "w_ih"],
    ),
    "bias": (
        "cache.args = cache.args._replace(bias=np.zeros(5))",
        "ValueError",
        ["cache no longer matches", "bias", "(24,)"],
    ),
}

_FORGE = """
import json, sys
import numpy as np
import lstm_c
rng = np.random.default_rng(0)
T, B, I, H, P = 4, 3, 5, 6, 4
p = dict(x=rng.standard_normal((T, B, I)), w_ih=rng.standard_normal((4 * H, I)),
         w_hh=rng.standard_normal((4 * H, P)), w_hr=rng.standard_normal((P, H)),
         peephole=rng.standard_normal((3, H)))
for name, forge in json.loads(sys.argv[1]).items():
    y, h, c, cache = lstm_c.lstm_forward(**p, lengths=[4, 2, 1])
    print(json.dumps(dict(case=name, started=True)), flush=True)
    exec(forge)
    try:
        lstm_c.lstm_backward(cache, y, h, c)
        print(json.dumps(dict(case=name, error=None)), flush=True)
    except Exception as error:
        print(json.dumps(dict(case=name, error=type(error).__name__, message=str(error))), flush=True)
print("ok")
"""


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    """Each forgery's outcome from one child process: {case: line}, and the child's result."""
    script = json.dumps({name: statement for name, (statement, _, _) in FORGED.items()})
    result = run_in_child(_FORGE, tmp_path_factory.mktemp("forged"), script)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {line["case"]: line for line in lines}, result


@pytest.mark.parametrize("case", FORGED)
def test_a_forged_cache_is_refused_not_read(case, forged):
    outcomes, result = forged
    assert case in outcomes, f"the child process never reached {case}: {child_failure(result)}"
    outcome = outcomes[case]
    assert "started" not in outcome, f"the child process died in {case}: {child_failure(result)}"
    _, error, words = FORGED[case]
    assert outcome["error"] == error, outcome
    assert_mentions(outcome["message"], words)


def test_the_forgeries_ran_in_a_child_that_finished(forged):
    _, result = forged
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), child_failure(result)
