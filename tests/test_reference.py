"""Tests of the plain-NumPy reference LSTM (`lstm_c.reference`), the oracle for everything else."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_identical, make_problem
from numpy.testing import assert_allclose, assert_array_equal

from lstm_c import reference

INPUT_NAMES = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")


def forward(inputs, **kwargs):
    return reference.lstm_forward(**inputs, **kwargs)


# --------------------------------------------------------------------------------------
# 1. gradients against central finite differences
# --------------------------------------------------------------------------------------

GRAD_CASES = {
    "plain": dict(T=4, B=3, I=3, H=4),
    "lengths": dict(T=5, B=5, I=3, H=4, lengths=[3, 0, 5, 5, 1]),
    "reverse_lengths": dict(T=5, B=5, I=3, H=4, lengths=[3, 0, 5, 5, 1], reverse=True),
    "batch_first_lengths": dict(T=5, B=5, I=3, H=4, lengths=[3, 0, 5, 5, 1], batch_first=True),
    "batch_first_reverse_lengths": dict(
        T=4, B=3, I=2, H=2, lengths=[4, 2, 0], batch_first=True, reverse=True
    ),
    "all_ones": dict(T=1, B=1, I=1, H=1),
    "odd_hidden": dict(T=3, B=2, I=2, H=3),
    "projection_lengths": dict(T=4, B=3, I=2, H=4, P=2, lengths=[4, 0, 2]),
    "peephole_reverse_lengths": dict(T=4, B=3, I=2, H=3, peephole=True, lengths=[4, 0, 2], reverse=True),
    "projection_peephole_batch_first": dict(
        T=3, B=2, I=2, H=3, P=2, peephole=True, lengths=[3, 1], batch_first=True
    ),
}


@pytest.mark.parametrize("case", list(GRAD_CASES), ids=list(GRAD_CASES))
def test_gradients_match_finite_differences(case):
    cfg = dict(GRAD_CASES[case])
    T, B, I, H = cfg.pop("T"), cfg.pop("B"), cfg.pop("I"), cfg.pop("H")
    lengths = cfg.pop("lengths", None)
    reverse = cfg.pop("reverse", False)
    batch_first = cfg.pop("batch_first", False)
    extras = dict(P=cfg.pop("P", 0), peephole=cfg.pop("peephole", False))
    assert not cfg

    rng = np.random.default_rng(1234)
    inputs = make_problem(rng, T, B, I, H, batch_first=batch_first, **extras)
    kwargs = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    y, h_n, c_n, cache = forward(inputs, **kwargs)
    # Random weights on every output, including y past each row's length
    # (where y is constant 0, so the backward pass must ignore dy there).
    r_y = rng.normal(size=y.shape)
    r_h = rng.normal(size=h_n.shape)
    r_c = rng.normal(size=c_n.shape)

    def loss(values):
        y, h_n, c_n, _ = forward(values, training=False, **kwargs)
        return np.sum(y * r_y) + np.sum(h_n * r_h) + np.sum(c_n * r_c)

    grads = reference.lstm_backward(cache, r_y, r_h, r_c)
    analytic = {
        "x": grads.dx,
        "w_ih": grads.dw_ih,
        "w_hh": grads.dw_hh,
        "b_ih": grads.db,
        "b_hh": grads.db,
        "h0": grads.dh0,
        "c0": grads.dc0,
        "w_hr": grads.dw_hr,
        "peephole": grads.dpeephole,
    }
    assert (grads.dw_hr is None) == ("w_hr" not in inputs)
    assert (grads.dpeephole is None) == ("peephole" not in inputs)

    eps = 1e-6
    for name in inputs:
        numeric = np.zeros_like(inputs[name])
        for idx in np.ndindex(inputs[name].shape):
            plus = {k: v.copy() for k, v in inputs.items()}
            minus = {k: v.copy() for k, v in inputs.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        assert analytic[name].shape == inputs[name].shape, name
        assert_allclose(analytic[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)

    # dx is exactly zero past each row's length.
    if lengths is not None:
        dx_tm = grads.dx.swapaxes(0, 1) if batch_first else grads.dx
        for b, n in enumerate(lengths):
            assert np.all(dx_tm[n:, b] == 0)


def test_backward_none_means_zeros():
    rng = np.random.default_rng(7)
    inputs = make_problem(rng, 3, 2, 2, 3)
    y, h_n, c_n, cache = forward(inputs, lengths=[3, 1])
    zeros = reference.lstm_backward(cache, np.zeros_like(y), np.zeros_like(h_n), np.zeros_like(c_n))
    nones = reference.lstm_backward(cache)
    for a, b in zip(zeros, nones):
        assert_array_equal(a, b)
        assert not np.any(a)
    only_h = reference.lstm_backward(cache, dh_n=np.ones_like(h_n))
    explicit = reference.lstm_backward(cache, np.zeros_like(y), np.ones_like(h_n), np.zeros_like(c_n))
    for a, b in zip(only_h, explicit):
        assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# 2. semantics
# --------------------------------------------------------------------------------------

LENGTHS = [3, 0, 5, 5, 1, 4]
T_LEN, B_LEN, I_LEN, H_LEN = 5, len(LENGTHS), 3, 4


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rows_match_running_alone(reverse):
    rng = np.random.default_rng(11)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    y, h_n, c_n, _ = forward(inputs, lengths=LENGTHS, reverse=reverse)
    assert y.shape == (T_LEN, B_LEN, H_LEN)
    for b, n in enumerate(LENGTHS):
        # y exactly 0 past the row's length.
        assert np.all(y[n:, b] == 0)
        alone = dict(inputs)
        x_row = inputs["x"][:n, b : b + 1]
        # reverse equals the time-flipped truncated row run forward, flipped back.
        alone["x"] = x_row[::-1] if reverse else x_row
        alone["h0"] = inputs["h0"][b : b + 1]
        alone["c0"] = inputs["c0"][b : b + 1]
        y_a, h_a, c_a, _ = forward(alone)
        if reverse:
            y_a = y_a[::-1]
        assert_allclose(y[:n, b], y_a[:, 0], rtol=1e-12, atol=1e-15)
        assert_allclose(h_n[b], h_a[0], rtol=1e-12, atol=1e-15)
        assert_allclose(c_n[b], c_a[0], rtol=1e-12, atol=1e-15)
        if n == 0:
            assert_array_equal(h_n[b], inputs["h0"][b])
            assert_array_equal(c_n[b], inputs["c0"][b])


def test_reverse_gradients_match_flipped_forward():
    rng = np.random.default_rng(12)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    y, h_n, c_n, cache = forward(inputs, lengths=LENGTHS, reverse=True)
    dy, dh, dc = rng.normal(size=y.shape), rng.normal(size=h_n.shape), rng.normal(size=c_n.shape)
    grads = reference.lstm_backward(cache, dy, dh, dc)
    dw_ih = np.zeros_like(grads.dw_ih)
    for b, n in enumerate(LENGTHS):
        alone = dict(
            inputs, x=inputs["x"][:n, b : b + 1][::-1], h0=inputs["h0"][b : b + 1], c0=inputs["c0"][b : b + 1]
        )
        _, _, _, cache_a = forward(alone)
        g_a = reference.lstm_backward(cache_a, dy[:n, b : b + 1][::-1], dh[b : b + 1], dc[b : b + 1])
        assert_allclose(grads.dx[:n, b], g_a.dx[::-1, 0], rtol=1e-10, atol=1e-13)
        assert_allclose(grads.dh0[b], g_a.dh0[0], rtol=1e-10, atol=1e-13)
        assert_allclose(grads.dc0[b], g_a.dc0[0], rtol=1e-10, atol=1e-13)
        dw_ih += g_a.dw_ih
    assert_allclose(grads.dw_ih, dw_ih, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_batch_first_is_transposed_time_major(reverse):
    rng = np.random.default_rng(13)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    y, h_n, c_n, cache = forward(inputs, lengths=LENGTHS, reverse=reverse)
    bf = dict(inputs, x=np.ascontiguousarray(inputs["x"].transpose(1, 0, 2)))
    y_bf, h_bf, c_bf, cache_bf = forward(bf, lengths=LENGTHS, reverse=reverse, batch_first=True)
    assert y_bf.shape == (B_LEN, T_LEN, H_LEN)
    assert y_bf.flags.c_contiguous
    assert_identical((y_bf, h_bf, c_bf), (y.transpose(1, 0, 2), h_n, c_n))
    dy = rng.normal(size=y.shape)
    g = reference.lstm_backward(cache, dy, h_n, c_n)
    g_bf = reference.lstm_backward(cache_bf, dy.transpose(1, 0, 2), h_n, c_n)
    assert g_bf.dx.shape == bf["x"].shape
    assert g_bf.dx.flags.c_contiguous
    assert_array_equal(g_bf.dx, g.dx.transpose(1, 0, 2))
    for name in ("dh0", "dc0", "dw_ih", "dw_hh", "db"):
        assert_array_equal(getattr(g_bf, name), getattr(g, name), err_msg=name)


def test_non_contiguous_x_gives_same_result():
    rng = np.random.default_rng(14)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    y, h_n, _, _ = forward(inputs, lengths=LENGTHS)
    strided = np.zeros((T_LEN, B_LEN, 2 * I_LEN))
    strided[:, :, ::2] = inputs["x"]
    y_s, h_s, _, _ = forward(dict(inputs, x=strided[:, :, ::2]), lengths=LENGTHS)
    assert_array_equal(y_s, y)
    assert_array_equal(h_s, h_n)


def test_inference_mode_returns_no_cache_and_same_outputs():
    rng = np.random.default_rng(15)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    y, h_n, c_n, cache = forward(inputs, lengths=LENGTHS)
    assert isinstance(cache, reference.ReferenceCache)
    y2, h2, c2, cache2 = forward(inputs, lengths=LENGTHS, training=False)
    assert cache2 is None
    assert_identical((y2, h2, c2), (y, h_n, c_n))


def test_inputs_are_not_modified():
    rng = np.random.default_rng(16)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    lengths = np.array(LENGTHS)
    copies = {k: v.copy() for k, v in inputs.items()}
    y, h_n, c_n, cache = forward(inputs, lengths=lengths, reverse=True)
    dy, dh, dc = rng.normal(size=y.shape), rng.normal(size=h_n.shape), rng.normal(size=c_n.shape)
    dy_c, dh_c, dc_c = dy.copy(), dh.copy(), dc.copy()
    reference.lstm_backward(cache, dy, dh, dc)
    # Outputs do not alias the inputs (writing to them leaves the inputs intact).
    h_n[...] = 7.0
    c_n[...] = 7.0
    for k in INPUT_NAMES:
        assert_array_equal(inputs[k], copies[k], err_msg=k)
    assert_array_equal(lengths, LENGTHS)
    assert_identical((dy, dh, dc), (dy_c, dh_c, dc_c))


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_zero_steps(batch_first):
    rng = np.random.default_rng(17)
    B, I, H = 3, 2, 4
    inputs = make_problem(rng, 0, B, I, H, batch_first=batch_first)
    y, h_n, c_n, cache = forward(inputs, batch_first=batch_first)
    assert y.shape == ((B, 0, H) if batch_first else (0, B, H))
    assert_array_equal(h_n, inputs["h0"])
    assert_array_equal(c_n, inputs["c0"])
    assert not np.shares_memory(h_n, inputs["h0"])
    assert not np.shares_memory(c_n, inputs["c0"])
    dh, dc = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    g = reference.lstm_backward(cache, np.zeros(y.shape), dh, dc)
    assert g.dx.shape == inputs["x"].shape
    assert_array_equal(g.dh0, dh)
    assert_array_equal(g.dc0, dc)
    assert not np.shares_memory(g.dh0, dh)
    assert not np.shares_memory(g.dc0, dc)
    for name, shape in (("dw_ih", (4 * H, I)), ("dw_hh", (4 * H, H)), ("db", (4 * H,))):
        value = getattr(g, name)
        assert value.shape == shape, name
        assert not np.any(value), name


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_all_lengths_zero(reverse):
    rng = np.random.default_rng(18)
    T, B, I, H = 4, 3, 2, 3
    inputs = make_problem(rng, T, B, I, H)
    y, h_n, c_n, cache = forward(inputs, lengths=np.zeros(B, dtype=np.int32), reverse=reverse)
    assert y.shape == (T, B, H)
    assert not np.any(y)
    assert_array_equal(h_n, inputs["h0"])
    assert_array_equal(c_n, inputs["c0"])
    dy, dh, dc = rng.normal(size=y.shape), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    g = reference.lstm_backward(cache, dy, dh, dc)
    assert_array_equal(g.dh0, dh)
    assert_array_equal(g.dc0, dc)
    for name in ("dx", "dw_ih", "dw_hh", "db"):
        assert not np.any(getattr(g, name)), name


def test_empty_batch():
    rng = np.random.default_rng(19)
    inputs = make_problem(rng, 3, 0, 2, 3)
    y, h_n, c_n, cache = forward(inputs, lengths=np.zeros(0, dtype=np.intp))
    assert y.shape == (3, 0, 3) and h_n.shape == (0, 3) and c_n.shape == (0, 3)
    g = reference.lstm_backward(cache, np.zeros(y.shape))
    assert g.dx.shape == (3, 0, 2) and g.dh0.shape == (0, 3)
    assert not np.any(g.dw_ih) and not np.any(g.dw_hh) and not np.any(g.db)


def test_defaults_are_zeros():
    rng = np.random.default_rng(20)
    inputs = make_problem(rng, 3, 2, 2, 3)
    explicit = dict(inputs, b_ih=np.zeros(12), b_hh=np.zeros(12), h0=np.zeros((2, 3)), c0=np.zeros((2, 3)))
    y, h_n, c_n, _ = forward(explicit)
    y2, h2, c2, _ = reference.lstm_forward(inputs["x"], inputs["w_ih"], inputs["w_hh"])
    assert_identical((y2, h2, c2), (y, h_n, c_n))


def test_float32_in_float32_out():
    rng = np.random.default_rng(21)
    inputs64 = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    inputs32 = {k: v.astype(np.float32) for k, v in inputs64.items()}
    y, h_n, c_n, cache = forward(inputs32, lengths=LENGTHS)
    for out in (y, h_n, c_n):
        assert out.dtype == np.float32
    dy = rng.normal(size=y.shape).astype(np.float32)
    g = reference.lstm_backward(cache, dy, None, np.ones_like(c_n))
    assert g.dw_hr is None and g.dpeephole is None  # no projection, no peepholes
    for name, value in g._asdict().items():
        assert value is None or value.dtype == np.float32, name
    y64, h64, _, cache64 = forward(inputs64, lengths=LENGTHS)
    assert_allclose(y, y64, rtol=1e-4, atol=1e-5)
    g64 = reference.lstm_backward(cache64, dy.astype(np.float64), None, np.ones_like(h64))
    for a, b in zip(g[:6], g64[:6]):
        assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturation_is_exact_and_silent(dtype):
    rng = np.random.default_rng(22)
    T, B, I, H = 3, 4, 2, 3
    x = np.sign(rng.normal(size=(T, B, I))).astype(dtype) * 1000
    w_ih = np.sign(rng.normal(size=(4 * H, I))).astype(dtype) * 2.5  # |pre-activation| ~ 5000
    w_hh = rng.normal(size=(4 * H, H)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, h_n, c_n, cache = reference.lstm_forward(x, w_ih, w_hh, lengths=[3, 2, 1, 0])
        g = reference.lstm_backward(cache, np.ones_like(y), np.ones_like(h_n), np.ones_like(c_n))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(c_n))
    assert np.all(np.abs(y) <= 1)
    for name, value in g._asdict().items():
        assert value is None or np.all(np.isfinite(value)), name


def test_nan_propagates_to_its_row_only():
    rng = np.random.default_rng(23)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    y, h_n, c_n, _ = forward(inputs, lengths=LENGTHS)
    poisoned = dict(inputs, x=inputs["x"].copy())
    poisoned["x"][1, 0, 0] = np.nan  # row 0 has length 3: time 1 is valid
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y_p, h_p, c_p, _ = forward(poisoned, lengths=LENGTHS)
    assert np.all(y_p[0, 0] == y[0, 0])
    assert np.all(np.isnan(y_p[1:3, 0]))
    assert np.all(y_p[3:, 0] == 0)
    assert np.all(np.isnan(h_p[0])) and np.all(np.isnan(c_p[0]))
    assert_identical((y_p[:, 1:], h_p[1:], c_p[1:]), (y[:, 1:], h_n[1:], c_n[1:]))


def test_padding_past_lengths_is_never_read():
    rng = np.random.default_rng(24)
    inputs = make_problem(rng, T_LEN, B_LEN, I_LEN, H_LEN)
    for reverse in (False, True):
        y, h_n, c_n, cache = forward(inputs, lengths=LENGTHS, reverse=reverse)
        padded = dict(inputs, x=inputs["x"].copy())
        for b, n in enumerate(LENGTHS):
            padded["x"][n:, b] = np.nan
        y_p, h_p, c_p, cache_p = forward(padded, lengths=LENGTHS, reverse=reverse)
        assert_identical((y_p, h_p, c_p), (y, h_n, c_n))
        g = reference.lstm_backward(cache, np.ones_like(y))
        g_p = reference.lstm_backward(cache_p, np.ones_like(y))
        for a, b in zip(g, g_p):
            assert_array_equal(a, b)
