"""The functional API's behaviour (lstm_c.lstm_forward / lstm_backward): lengths and
padding, inference, caches, the conversion rule for dtypes, any memory layout, and
degenerate and empty sizes (against the reference)."""

from __future__ import annotations

import os
import tracemalloc
import zlib

import numpy as np
import pytest
from helpers import (
    APIS,
    GRAD_OF,
    LAYOUTS,
    VARIANTS,
    as_layout,
    assert_close,
    assert_identical,
    check_finite_differences,
    child_failure,
    like,
    make_problem,
    run,
    run_in_child,
    zero_stride,
)

import lstm_c
from lstm_c import LSTM, reference

T, B, I, H = 4, 3, 5, 6


def good_args(dtype=np.float64):
    return make_problem(np.random.default_rng(0), T, B, I, H, dtype)


# ----------------------------------------------------------------------------- lengths and padding


def test_output_is_zero_past_lengths_and_state_freezes():
    rng = np.random.default_rng(1)
    p = make_problem(rng, 5, 3, 2, 4, np.float64)
    lengths = np.array([5, 2, 0])
    for reverse in (False, True):
        y, h_n, c_n, _ = lstm_c.lstm_forward(**p, lengths=lengths, reverse=reverse)
        assert np.all(y[2:, 1] == 0) and np.all(y[:, 2] == 0)
        np.testing.assert_array_equal(h_n[2], p["h0"][2])
        np.testing.assert_array_equal(c_n[2], p["c0"][2])
        # Row 1 alone, truncated to its length, ends in the same state.
        alone = lstm_c.lstm_forward(
            p["x"][:2, 1:2],
            p["w_ih"],
            p["w_hh"],
            p["b_ih"],
            p["b_hh"],
            p["h0"][1:2],
            p["c0"][1:2],
            reverse=reverse,
        )
        np.testing.assert_allclose(h_n[1], alone[1][0], rtol=1e-12)
        np.testing.assert_allclose(y[:2, 1], alone[0][:, 0], rtol=1e-12)


def test_gradients_ignore_what_lies_past_lengths():
    rng = np.random.default_rng(2)
    p = make_problem(rng, 5, 2, 3, 4, np.float64)
    _, _, _, cache = lstm_c.lstm_forward(**p, lengths=[3, 5])
    dy = rng.standard_normal((5, 2, 4))
    base = lstm_c.lstm_backward(cache, dy)
    dy_changed = dy.copy()
    dy_changed[3:, 0] = 1e6
    assert_identical(lstm_c.lstm_backward(cache, dy_changed), base)
    assert np.all(base.dx[3:, 0] == 0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_nan_in_padding_does_not_reach_any_result(batch_first):
    rng = np.random.default_rng(12)
    p = make_problem(rng, 5, 3, 2, 4, np.float64, batch_first=batch_first)
    lengths = [5, 2, 0]
    dy = rng.standard_normal((3, 5, 4) if batch_first else (5, 3, 4))
    clean = run(lstm_c, p, (dy,), lengths=lengths, batch_first=batch_first)
    x = p["x"].copy()
    padded = (x[1, 2:], x[2, :]) if batch_first else (x[2:, 1], x[:, 2])
    for part in padded:
        part[...] = np.nan
    poisoned = run(lstm_c, {**p, "x": x}, (dy,), lengths=lengths, batch_first=batch_first)
    assert_identical(poisoned[0] + tuple(poisoned[1]), clean[0] + tuple(clean[1]))


@pytest.mark.parametrize(
    "lengths",
    [
        np.array([3, 0, 4], np.intp)[::-1][::-1].copy()[::-1],  # negative stride
        np.array([4, 0, 3], np.int32),
        np.array([4, 0, 3], np.uint8),
        np.repeat(np.array([4, 0, 3]), 2)[::2],
        (4, 0, 3),
        [np.int16(4), 0, np.int64(3)],
    ],
    ids=["negative_stride", "int32", "uint8", "strided", "tuple", "numpy_scalars"],
)
def test_lengths_in_any_integer_form(lengths):
    p = good_args()
    expected = run(lstm_c, p, (np.ones((T, B, H)),), lengths=np.array([4, 0, 3]))
    read_only = np.array(lengths)
    read_only.flags.writeable = False
    for form in (lengths, read_only):
        got = run(lstm_c, p, (np.ones((T, B, H)),), lengths=form)
        assert_identical(got[0] + tuple(got[1]), expected[0] + tuple(expected[1]))


# ----------------------------------------------------------------------------- inference and caches


def test_inference_returns_no_cache_and_same_outputs():
    rng = np.random.default_rng(3)
    p = make_problem(rng, 4, 3, 2, 5, np.float32)
    y, h_n, c_n, cache = lstm_c.lstm_forward(**p, training=False)
    assert cache is None
    y2, h2, c2, cache2 = lstm_c.lstm_forward(**p, training=True)
    assert_identical((y, h_n, c_n), (y2, h2, c2))
    assert isinstance(cache2, lstm_c.LSTMCache)


def test_backward_defaults_to_zero_output_gradients():
    rng = np.random.default_rng(4)
    p = make_problem(rng, 4, 3, 2, 5, np.float64)
    _, _, _, cache = lstm_c.lstm_forward(**p)
    none = lstm_c.lstm_backward(cache)
    assert none.dw_hr is None and none.dpeephole is None
    for g in none[:6]:
        assert not np.any(g)
    only_dh = lstm_c.lstm_backward(cache, dh_n=np.ones((3, 5)))
    explicit = lstm_c.lstm_backward(cache, np.zeros((4, 3, 5)), np.ones((3, 5)), np.zeros((3, 5)))
    assert_identical(only_dh, explicit)


def test_cache_can_be_used_twice_and_keeps_references_not_copies():
    rng = np.random.default_rng(5)
    p = make_problem(rng, 4, 3, 2, 5, np.float64)
    _, _, _, cache = lstm_c.lstm_forward(**p)
    assert cache.args.x is p["x"] and cache.args.w_ih is p["w_ih"]
    dy = rng.standard_normal((4, 3, 5))
    assert_identical(lstm_c.lstm_backward(cache, dy), lstm_c.lstm_backward(cache, dy))
    # Activations (4H), c_prev and h_prev (H each) per position: T*B*6H numbers.
    kept = cache.act.size + cache.c_prev.size + cache.h_prev.size
    assert kept == 4 * 3 * 6 * 5


@APIS
def test_the_cache_keeps_its_own_lengths(api):
    p = good_args()
    lengths = np.array([4, 0, 2], np.intp)
    y, _, _, cache = api.lstm_forward(**p, lengths=lengths)
    expected = api.lstm_backward(cache, np.ones_like(y))
    lengths[:] = [10**9, -(10**9), 3]  # the kernels index memory with lengths: they must not see this
    assert_identical(api.lstm_backward(cache, np.ones_like(y)), expected)


# ----------------------------------------------------------------------------- what is accepted


def test_flags_accept_numpy_bools_and_0_1():
    p = good_args()
    expected = lstm_c.lstm_forward(**p, batch_first=False)[0]
    for flag in (np.False_, 0, np.int64(0)):
        np.testing.assert_array_equal(lstm_c.lstm_forward(**p, batch_first=flag)[0], expected)


@APIS
def test_integer_inputs_and_lists_take_the_dtype_of_the_float_weights(api):
    """The rule: float arrays must match the dtype computed in; lists and integers are converted."""
    args = good_args(np.float32)
    expected = api.lstm_forward(**args)
    as_list = api.lstm_forward(**{**args, "x": args["x"].tolist()})
    assert_identical(as_list[:3], expected[:3])
    args["x"] = np.ones((T, B, I), dtype=np.int64)
    y, _, _, _ = api.lstm_forward(**args)
    assert y.dtype == np.float32
    with pytest.raises(TypeError, match="mixed float dtypes.*x is float64"):
        api.lstm_forward(**{**args, "x": np.ones((T, B, I))})


def test_torch_tensors_are_array_likes_too():
    if os.environ.get("LSTM_C_UNDER_SANITIZER", "0") not in ("", "0"):
        pytest.skip("torch's C++ exceptions fail under a preloaded AddressSanitizer runtime")
    torch = pytest.importorskip("torch")
    p = good_args(np.float32)
    expected = lstm_c.lstm_forward(**p)
    got = lstm_c.lstm_forward(**{k: torch.from_numpy(v) for k, v in p.items()})
    assert_identical(got[:3], expected[:3])
    with pytest.raises(TypeError, match="x could not be converted.*grad"):
        lstm_c.lstm_forward(torch.from_numpy(p["x"]).requires_grad_(), p["w_ih"], p["w_hh"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_any_layout_gives_the_same_answer_and_inputs_are_not_written(layout):
    rng = np.random.default_rng(6)
    p = make_problem(rng, 4, 3, 5, 6, np.float64)
    dy = rng.standard_normal((4, 3, 6))
    expected = run(lstm_c, p, (dy,))
    q = {k: as_layout(v, layout) for k, v in p.items()}
    before = {k: np.array(v, copy=True) for k, v in q.items()}
    got = run(lstm_c, q, (as_layout(dy, layout),))
    assert_identical(got[0] + tuple(got[1]), expected[0] + tuple(expected[1]))
    for k, v in q.items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)


def test_batch_first_from_a_swapped_view_of_time_major_data():
    p = good_args()
    dy = np.random.default_rng(8).standard_normal((T, B, H))
    tm = run(lstm_c, p, (dy,), lengths=[4, 1, 0])
    bf = run(
        lstm_c, {**p, "x": p["x"].swapaxes(0, 1)}, (dy.swapaxes(0, 1),), batch_first=True, lengths=[4, 1, 0]
    )
    # Each position is computed alike in both layouts; only the sums over all positions
    # (the weight gradients) add in another order.
    np.testing.assert_array_equal(bf[0][0], tm[0][0].swapaxes(0, 1))
    np.testing.assert_array_equal(bf[1].dx, tm[1].dx.swapaxes(0, 1))
    assert_identical(bf[0][1:] + tuple(bf[1])[1:3], tm[0][1:] + tuple(tm[1])[1:3])
    assert_close(tuple(bf[1])[3:], tuple(tm[1])[3:])


# ----------------------------------------------------------------------------- degenerate sizes


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
    result = run_in_child(_INFERENCE_WITH_PROJECTION, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", child_failure(result)


def test_degenerate_sizes():
    rng = np.random.default_rng(8)
    # T = 0: empty y, the initial state back, and gradients that pass dh_n, dc_n through.
    p = make_problem(rng, 0, 3, 2, 4, np.float64)
    y, h, c, cache = lstm_c.lstm_forward(**p)
    assert y.shape == (0, 3, 4)
    np.testing.assert_array_equal(h, p["h0"])
    np.testing.assert_array_equal(c, p["c0"])
    dh, dc = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    g = lstm_c.lstm_backward(cache, None, dh, dc)
    np.testing.assert_array_equal(g.dh0, dh)
    np.testing.assert_array_equal(g.dc0, dc)
    assert g.dx.shape == (0, 3, 2) and not np.any(g.dw_ih) and not np.any(g.db)
    # B = 0.
    p = make_problem(rng, 3, 0, 2, 4, np.float32)
    y, h, c, cache = lstm_c.lstm_forward(**p)
    assert y.shape == (3, 0, 4) and h.shape == (0, 4)
    g = lstm_c.lstm_backward(cache, np.zeros_like(y))
    assert g.dw_hh.shape == (16, 4) and not np.any(g.dw_hh)
    # All lengths 0: like T = 0 but y has its T rows of zeros.
    p = make_problem(rng, 3, 2, 2, 4, np.float64)
    y, h, c, cache = lstm_c.lstm_forward(**p, lengths=[0, 0])
    assert not np.any(y)
    np.testing.assert_array_equal(h, p["h0"])
    g = lstm_c.lstm_backward(cache, np.ones_like(y), dh[:2], dc[:2])
    np.testing.assert_array_equal(g.dh0, dh[:2])
    np.testing.assert_array_equal(g.dc0, dc[:2])
    assert not np.any(g.dx) and not np.any(g.dw_ih) and not np.any(g.dw_hh) and not np.any(g.db)


DEGENERATE = {
    "T0": dict(T=0, B=3, I=2, H=4),
    "B0": dict(T=3, B=0, I=2, H=4),
    "T0_B0": dict(T=0, B=0, I=2, H=3),
    "H1_I1": dict(T=4, B=2, I=1, H=1),
    "I0": dict(T=3, B=2, I=0, H=3),
    "all_lengths_0": dict(T=3, B=3, I=2, H=3, lengths=[0, 0, 0]),
    "lengths_0_and_T": dict(T=4, B=4, I=2, H=3, lengths=[0, 4, 4, 0]),
}


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
def test_degenerate_sizes_match_the_reference(case, variant, batch_first, reverse, kernels):
    p, lengths, rng = degenerate_problem(case, variant, batch_first)
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    y, h, c, _ = lstm_c.lstm_forward(**p, **options)
    grads = like(rng, y, h, c)
    del kernels[:]
    ours = run(lstm_c, p, grads, **options)
    if y.size == 0:  # no position to run: the call returns at once, without a kernel
        assert kernels == []
    theirs = run(reference, p, grads, **options)
    assert_close(ours[0], theirs[0], names=["y", "h_n", "c_n"])
    assert_close(ours[1], theirs[1])

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
        check_finite_differences(lstm_c, p, dict(lengths=lengths, reverse=reverse), rng)


# ----------------------------------------------------------------------------- empty calls

HUGE_T = 2**40  # seq_len of an empty batch: no memory, and no time, may depend on it


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("make_x", [zero_stride, np.zeros], ids=["zero_stride_view", "zeros"])
def test_an_empty_batch_of_huge_seq_len_returns_zeros_at_once(make_x, batch_first, kernels):
    shape = (0, HUGE_T, 1) if batch_first else (HUGE_T, 0, 1)
    x = make_x(shape, np.float64)
    p = make_problem(np.random.default_rng(21), 1, 0, 1, 3, P=2, peephole=True)
    p["x"] = x
    tracemalloc.start()
    try:
        y, h, c, cache = lstm_c.lstm_forward(**p, batch_first=batch_first, lengths=np.zeros(0, int))
        g = lstm_c.lstm_backward(cache, np.zeros(y.shape), h, c)
        inference = lstm_c.lstm_forward(**p, batch_first=batch_first, training=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes for calls that have nothing to compute"
    assert kernels == []
    assert y.shape == shape[:2] + (2,) and h.shape == (0, 2) and c.shape == (0, 3)
    assert inference[3] is None and inference[0].shape == y.shape
    assert g.dx.shape == x.shape and g.dh0.shape == (0, 2) and g.dc0.shape == (0, 3)
    for field in ("dw_ih", "dw_hh", "db", "dw_hr", "dpeephole"):
        value = getattr(g, field)
        assert value.shape == p[GRAD_OF[field]].shape and not value.any(), field


def test_an_empty_batch_of_huge_seq_len_through_the_layer(kernels):
    m = LSTM(1, 3, num_layers=2, bidirectional=True, proj_size=2, peephole=True, dtype=np.float64)
    y, (h, c) = m(np.zeros((HUGE_T, 0, 1)))
    assert y.shape == (HUGE_T, 0, 4) and h.shape == (4, 0, 2) and c.shape == (4, 0, 3)
    dx, (dh0, dc0) = m.backward(np.zeros(y.shape))
    assert dx.shape == (HUGE_T, 0, 1) and dh0.shape == h.shape and dc0.shape == c.shape
    assert not any(g.any() for g in m.grads.values())
    assert kernels == []
