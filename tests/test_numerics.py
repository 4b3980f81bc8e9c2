"""Numerics of the kernels: saturated gates, NaN and inf confined to their row, and float32
against float64 over long sequences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import APIS, DTYPES, VARIANTS, assert_close, make_problem, run, tol

import lstm_c
from lstm_c import reference


def test_saturation_is_exact_without_warnings_and_nan_propagates():
    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        p = make_problem(rng, 3, 3, 2, 4, dtype)
        p["x"] = (p["x"] * 5000).astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(all="raise"):
                y, h, c, cache = lstm_c.lstm_forward(**p)
                grads = lstm_c.lstm_backward(cache, np.ones_like(y))
        assert np.all(np.isfinite(y)) and all(np.all(np.isfinite(g)) for g in grads[:6])
        assert_close(y, reference.lstm_forward(**p)[0], dtype)

        p["x"][1, 1, 0] = np.nan
        y, h, c, _ = lstm_c.lstm_forward(**p)
        assert np.all(np.isnan(y[1:, 1])) and np.all(np.isnan(h[1]))
        assert np.all(np.isfinite(y[:, [0, 2]])) and np.all(np.isfinite(y[0]))


def added_one(c0, steps):
    """c0 + 1 + 1 + ... (`steps` times), rounded after each addition as the recurrence does."""
    c = c0.copy()
    for _ in range(steps):
        c = c + c.dtype.type(1)
    return c


def saturating_problem(dtype, signs, *, P=0, peephole=False, T=5, B=3):
    """Pre-activations of about ±3000 with the sign of each gate i, f, g, o given by `signs`."""
    rng = np.random.default_rng(10)
    H = 4
    p = make_problem(rng, T, B, 1, H, dtype, P=P, peephole=peephole)
    p["x"] = np.abs(p["x"]).astype(dtype) + dtype(1)  # in [1, ~4]
    p["w_ih"] = np.repeat(np.array(signs, dtype) * dtype(3000), H)[:, None]
    p["b_ih"] = np.repeat(np.array(signs, dtype) * dtype(1000), H)
    return p


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@APIS
def test_saturation_is_exact_silent_and_has_finite_gradients(api, dtype, variant):
    cases = {
        # i, f, g, o all 1: c_t = c_{t-1} + 1 exactly; h_t = tanh(c_t).
        "open": ((1, 1, 1, 1), added_one),
        # i = 1, f = 0, g = -1: c_t = -1 exactly from the first step on.
        "reset": ((1, -1, -1, 1), lambda c0, t: np.full_like(c0, -1)),
        # i = f = o = 0: c_t = 0, h_t = 0 exactly.
        "closed": ((-1, -1, -1, -1), lambda c0, t: np.zeros_like(c0)),
    }
    for name, (signs, expected_c) in cases.items():
        p = saturating_problem(dtype, signs, **VARIANTS[variant])
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
    for dtype in DTYPES:
        p = saturating_problem(dtype, (1, 1, 1, 1))
        ours = lstm_c.lstm_forward(**p)
        theirs = reference.lstm_forward(**p)
        np.testing.assert_array_equal(ours[2], theirs[2])
        np.testing.assert_allclose(ours[0], theirs[0], **tol(dtype))


# ----------------------------------------------------------------------------- the activations


def activations(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's sigmoid and tanh of z, read from a training call's saved activations:
    one hidden unit, a batch row per value, x = z, W_ih = 1 and W_hh = 0, so that every
    gate's pre-activation is exactly z."""
    x = z.reshape(1, -1, 1)
    w = np.ones((4, 1), z.dtype)
    act = lstm_c.lstm_forward(x, w, np.zeros_like(w))[3].act  # (B, 4): i, f, g, o
    return act[:, 0], act[:, 2]  # the input gate's sigmoid, the candidate's tanh


def ulps(actual: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|actual - exact| in units of the last place of exact rounded to actual's dtype."""
    spacing = np.spacing(np.abs(exact.astype(actual.dtype)))
    return np.abs(actual.astype(exact.dtype) - exact) / spacing.astype(exact.dtype)


# The largest error allowed, in ulp: measured 2.5 (float32 sigmoid, over every float32),
# 2.4 (float32 tanh) and 2.5 and 4.5 (float64 sigmoid and tanh, over 80 million values).
ULP_LIMITS = {np.float32: (3, 3), np.float64: (3, 5)}
# (sigmoid 1 from, sigmoid 0 below, tanh +-1 from): where the kernels saturate exactly.
SATURATION = {np.float32: (17.0, -88.5, 9.5), np.float64: (37.0, -709.5, 20.0)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_are_within_a_few_ulp(dtype):
    rng = np.random.default_rng(3)
    tiny = np.exp(rng.uniform(np.log(1e-30), 0.0, 20_000)) * rng.choice([-1, 1], 20_000)
    z = np.concatenate([rng.uniform(-30, 30, 40_000), rng.uniform(-2, 2, 40_000), tiny]).astype(dtype)
    sigmoid, tanh = activations(z)
    wide = np.longdouble if dtype is np.float64 else np.float64  # the exact values
    exact_sigmoid = 1 / (1 + np.exp(-z.astype(wide)))
    exact_tanh = np.tanh(z.astype(wide))
    sigmoid_limit, tanh_limit = ULP_LIMITS[dtype]
    normal = exact_sigmoid > np.finfo(dtype).tiny  # below, results may flush to 0
    assert ulps(sigmoid, exact_sigmoid)[normal].max() <= sigmoid_limit
    assert ulps(tanh, exact_tanh).max() <= tanh_limit


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_saturate_exactly_and_keep_nan(dtype):
    one, zero, tanh_one = SATURATION[dtype]
    with np.errstate(over="ignore"):
        big = np.array([1e4, 1e30, np.finfo(dtype).max, np.inf], dtype)
    ramp = np.linspace(0, 100, 101).astype(dtype)
    sigmoid, tanh = activations(np.concatenate([one + ramp, -big]).astype(dtype))
    assert (sigmoid[: len(ramp)] == 1).all() and (tanh[: len(ramp)] == 1).all()
    assert (tanh[len(ramp) :] == -1).all()
    sigmoid, tanh = activations(np.concatenate([zero - ramp, big]).astype(dtype))
    assert (sigmoid[: len(ramp)] == 0).all() and (sigmoid[len(ramp) :] == 1).all()
    sigmoid, tanh = activations(np.concatenate([tanh_one + ramp, -tanh_one - ramp]).astype(dtype))
    assert (tanh[: len(ramp)] == 1).all() and (tanh[len(ramp) :] == -1).all()
    sigmoid, tanh = activations(np.array([np.nan, 0.0], dtype))
    assert np.isnan(sigmoid[0]) and np.isnan(tanh[0])
    assert sigmoid[1] == 0.5 and tanh[1] == 0


# ----------------------------------------------------------------------------- NaN and inf

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
    T, B, H = 6, 5, 7
    rng = np.random.default_rng(11)
    p = make_problem(rng, T, B, 3, H, **VARIANTS[variant])
    options = dict(lengths=[6, 0, 5, 3, 6], reverse=reverse)
    out = VARIANTS[variant].get("P") or H
    grads = (rng.standard_normal((T, B, out)), rng.standard_normal((B, out)), rng.standard_normal((B, H)))
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
    for name, a, b in [
        ("h_n", h, clean[0][1]),
        ("c_n", c, clean[0][2]),
        ("dh0", g.dh0, clean[1].dh0),
        ("dc0", g.dc0, clean[1].dc0),
    ]:
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
    assert_close((y, h, c), (ry, rh, rc), np.float64, names=["y", "h_n", "c_n"])
    for field in ("dx", "dh0", "dc0", "db", "dw_ih", "dw_hh", "dw_hr", "dpeephole"):
        a, b = getattr(g, field), getattr(rg, field)
        if a is not None:
            assert_close(a, b, np.float64, what=field)


# ----------------------------------------------------------------------------- float32 against float64


def float32_vs_float64(seed, reverse, T=1000, B=8, I=16, H=64, P=0, peephole=False):
    """Worst errors of float32 against float64: outputs absolute, gradients relative to their largest entry."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(H)  # PyTorch's initialisation of weights and biases
    out = P or H
    p = dict(
        x=rng.standard_normal((T, B, I)),
        w_ih=rng.uniform(-bound, bound, (4 * H, I)),
        w_hh=rng.uniform(-bound, bound, (4 * H, out)),
        b_ih=rng.uniform(-bound, bound, 4 * H),
        b_hh=rng.uniform(-bound, bound, 4 * H),
        h0=rng.standard_normal((B, out)) * 0.5,
        c0=rng.standard_normal((B, H)),
    )
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
                limit = FLOAT32_OUTPUT_TOL if name in ("y", "h_n", "c_n") else FLOAT32_GRADIENT_TOL
                assert error <= limit, (name, error, seed, reverse)
