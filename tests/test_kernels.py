"""The compiled kernels (lstm_c.lstm_forward / lstm_backward) against the NumPy reference."""

import os
import zlib
import warnings

import numpy as np
import pytest

import lstm_c
from lstm_c import reference

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


def make_problem(rng, T, B, I, H, dtype, *, batch_first=False, bias=True, state=True, P=0,
                 peephole=False):
    """Random inputs for one layer, scaled so activations are not saturated.

    P > 0 adds a projection w_hr (P, H); peephole adds peephole weights (3, H).
    """
    x_shape = (B, T, I) if batch_first else (T, B, I)
    out = P or H
    p = dict(
        x=rng.standard_normal(x_shape),
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
    return {k: (None if v is None else v.astype(dtype)) for k, v in p.items()}


def run_both(problem, rng, **options):
    """Forward and backward through both implementations with the same output gradients."""
    ours = lstm_c.lstm_forward(**problem, **options)
    theirs = reference.lstm_forward(**problem, **options)
    y, h_n, c_n = ours[:3]
    dy = rng.standard_normal(y.shape).astype(y.dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(y.dtype)
    dc_n = rng.standard_normal(c_n.shape).astype(y.dtype)
    grads = lstm_c.lstm_backward(ours[3], dy, dh_n, dc_n)
    ref_grads = reference.lstm_backward(theirs[3], dy, dh_n, dc_n)
    return ours[:3], theirs[:3], grads, ref_grads


def assert_all_close(ours, theirs, dtype):
    for name, a, b in zip(getattr(ours, "_fields", range(len(ours))), ours, theirs):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        assert a.dtype == dtype, name
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=str(name))


CASES = {
    "plain": dict(T=6, B=3, I=5, H=8),
    "no_bias_no_state": dict(T=4, B=2, I=3, H=5, bias=False, state=False),
    "lengths": dict(T=7, B=5, I=4, H=9, lengths=[7, 0, 3, 7, 1]),
    "reverse": dict(T=6, B=3, I=4, H=7, reverse=True),
    "reverse_lengths": dict(T=7, B=5, I=4, H=9, reverse=True, lengths=[7, 0, 3, 7, 1]),
    "batch_first": dict(T=5, B=4, I=3, H=6, batch_first=True),
    "batch_first_reverse_lengths": dict(
        T=6, B=4, I=3, H=6, batch_first=True, reverse=True, lengths=[2, 6, 0, 5]
    ),
    "one_of_each": dict(T=1, B=1, I=1, H=1),
    "h_not_multiple_of_8": dict(T=3, B=2, I=3, H=13),
    "several_chunks": dict(T=4, B=3, I=10, H=130, lengths=[4, 2, 3]),
    "parallel_sized": dict(T=3, B=40, I=16, H=64, lengths=np.arange(40) % 4),
    "projection": dict(T=5, B=3, I=4, H=9, P=4),
    "projection_reverse_lengths": dict(T=6, B=4, I=3, H=7, P=3, reverse=True, lengths=[6, 0, 2, 5]),
    "projection_batch_first_wide": dict(T=4, B=3, I=3, H=70, P=66, batch_first=True, lengths=[4, 1, 3]),
    "peephole": dict(T=5, B=3, I=4, H=6, peephole=True),
    "peephole_reverse_lengths": dict(T=6, B=4, I=3, H=7, peephole=True, reverse=True, lengths=[6, 0, 2, 5]),
    "projection_and_peephole": dict(T=5, B=40, I=8, H=65, P=20, peephole=True, lengths=np.arange(40) % 6),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_kernels_match_reference(case, dtype):
    spec = dict(CASES[case])
    sizes = {k: spec.pop(k) for k in ("T", "B", "I", "H")}
    make = {k: spec.pop(k) for k in ("bias", "state", "P", "peephole") if k in spec}
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    problem = make_problem(rng, **sizes, dtype=dtype, batch_first=spec.get("batch_first", False), **make)
    ours, theirs, grads, ref_grads = run_both(problem, rng, **spec)
    assert_all_close(ours, theirs, dtype)
    assert_all_close(grads, ref_grads, dtype)


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
            p["x"][:2, 1:2], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], p["h0"][1:2], p["c0"][1:2],
            reverse=reverse,
        )
        np.testing.assert_allclose(h_n[1], alone[1][0], rtol=1e-12)
        np.testing.assert_allclose(y[:2, 1], alone[0][:, 0], rtol=1e-12)


def test_gradients_ignore_what_lies_past_lengths():
    rng = np.random.default_rng(2)
    p = make_problem(rng, 5, 2, 3, 4, np.float64)
    lengths = [3, 5]
    _, _, _, cache = lstm_c.lstm_forward(**p, lengths=lengths)
    dy = rng.standard_normal((5, 2, 4))
    base = lstm_c.lstm_backward(cache, dy)
    dy_changed = dy.copy()
    dy_changed[3:, 0] = 1e6
    changed = lstm_c.lstm_backward(cache, dy_changed)
    for a, b in zip(base, changed):
        np.testing.assert_array_equal(a, b)
    assert np.all(base.dx[3:, 0] == 0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_nan_in_padding_does_not_reach_any_result(batch_first):
    rng = np.random.default_rng(12)
    p = make_problem(rng, 5, 3, 2, 4, np.float64, batch_first=batch_first)
    lengths = [5, 2, 0]
    dy = rng.standard_normal((3, 5, 4) if batch_first else (5, 3, 4))
    y, h, c, cache = lstm_c.lstm_forward(**p, lengths=lengths, batch_first=batch_first)
    clean = (y, h, c) + tuple(lstm_c.lstm_backward(cache, dy))
    x = p["x"].copy()
    padded = (x[1, 2:], x[2, :]) if batch_first else (x[2:, 1], x[:, 2])
    for part in padded:
        part[...] = np.nan
    y, h, c, cache = lstm_c.lstm_forward(**{**p, "x": x}, lengths=lengths, batch_first=batch_first)
    for a, b in zip((y, h, c) + tuple(lstm_c.lstm_backward(cache, dy)), clean):
        np.testing.assert_array_equal(a, b)


def test_inference_returns_no_cache_and_same_outputs():
    rng = np.random.default_rng(3)
    p = make_problem(rng, 4, 3, 2, 5, np.float32)
    y, h_n, c_n, cache = lstm_c.lstm_forward(**p, training=False)
    assert cache is None
    y2, h2, c2, cache2 = lstm_c.lstm_forward(**p, training=True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(h_n, h2)
    np.testing.assert_array_equal(c_n, c2)
    assert isinstance(cache2, lstm_c.LSTMCache)


def test_backward_defaults_to_zero_output_gradients():
    rng = np.random.default_rng(4)
    p = make_problem(rng, 4, 3, 2, 5, np.float64)
    _, _, _, cache = lstm_c.lstm_forward(**p)
    none = lstm_c.lstm_backward(cache)
    assert none.dw_hr is None and none.dpeephole is None
    for g in none[:6]:
        assert not np.any(g)
    zeros = np.zeros((3, 5))
    only_dh = lstm_c.lstm_backward(cache, dh_n=np.ones((3, 5)))
    explicit = lstm_c.lstm_backward(cache, np.zeros((4, 3, 5)), np.ones((3, 5)), zeros)
    for a, b in zip(only_dh, explicit):
        np.testing.assert_array_equal(a, b)


def test_cache_can_be_used_twice_and_keeps_references_not_copies():
    rng = np.random.default_rng(5)
    p = make_problem(rng, 4, 3, 2, 5, np.float64)
    _, _, _, cache = lstm_c.lstm_forward(**p)
    assert cache.args.x is p["x"] and cache.args.w_ih is p["w_ih"]
    dy = rng.standard_normal((4, 3, 5))
    first = lstm_c.lstm_backward(cache, dy)
    second = lstm_c.lstm_backward(cache, dy)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # Activations (4H), c_prev and h_prev (H each) per position: T*B*6H numbers.
    kept = cache.act.size + cache.c_prev.size + cache.h_prev.size
    assert kept == 4 * 3 * 6 * 5


def as_layouts(a):
    """The same values as Fortran-ordered, strided, negatively strided and read-only arrays."""
    fortran = np.asfortranarray(a)
    strided = np.repeat(a, 2, axis=-1)[..., ::2]
    flipped = np.flip(np.flip(a, axis=-1).copy(), axis=-1)
    read_only = a.copy()
    read_only.flags.writeable = False
    return {"fortran": fortran, "strided": strided, "negative": flipped, "read_only": read_only}


@pytest.mark.parametrize("layout", ["fortran", "strided", "negative", "read_only", "list"])
def test_any_layout_gives_the_same_answer_and_inputs_are_not_written(layout):
    rng = np.random.default_rng(6)
    p = make_problem(rng, 4, 3, 5, 6, np.float64)
    _, _, _, cache = lstm_c.lstm_forward(**p)
    dy = rng.standard_normal((4, 3, 6))
    expected = lstm_c.lstm_forward(**p)[:3] + tuple(lstm_c.lstm_backward(cache, dy))

    if layout == "list":
        q = {k: v.tolist() for k, v in p.items()}
        dy_q = dy.tolist()
    else:
        q = {k: as_layouts(v)[layout] for k, v in p.items()}
        dy_q = as_layouts(dy)[layout]
    before = {k: np.array(v, copy=True) for k, v in q.items()}
    y, h, c, cache_q = lstm_c.lstm_forward(**q)
    got = (y, h, c) + tuple(lstm_c.lstm_backward(cache_q, dy_q))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    for k, v in q.items():
        np.testing.assert_array_equal(np.asarray(v), before[k])


def test_saturation_is_exact_without_warnings_and_nan_propagates():
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        p = make_problem(rng, 3, 3, 2, 4, dtype)
        p["x"] = (p["x"] * 5000).astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(all="raise"):
                y, h, c, cache = lstm_c.lstm_forward(**p)
                grads = lstm_c.lstm_backward(cache, np.ones_like(y))
        assert np.all(np.isfinite(y)) and all(np.all(np.isfinite(g)) for g in grads[:6])
        ref_y = reference.lstm_forward(**p)[0]
        np.testing.assert_allclose(y, ref_y, **TOL[dtype])

        p["x"][1, 1, 0] = np.nan
        y, h, c, _ = lstm_c.lstm_forward(**p)
        assert np.all(np.isnan(y[1:, 1])) and np.all(np.isnan(h[1]))
        assert np.all(np.isfinite(y[:, [0, 2]])) and np.all(np.isfinite(y[0]))


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


def test_num_threads_gives_identical_results_run_to_run():
    rng = np.random.default_rng(9)
    p = make_problem(rng, 5, 48, 16, 64, np.float32)
    for threads in (1, 2):
        runs = []
        for _ in range(2):
            y, h, c, cache = lstm_c.lstm_forward(**p, num_threads=threads)
            runs.append((y, h, c) + tuple(lstm_c.lstm_backward(cache, np.ones_like(y), num_threads=threads)))
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)


def test_openmp_is_on_unless_built_without_it():
    expected = os.environ.get("LSTM_C_NO_OPENMP", "0") in ("", "0")
    assert lstm_c.openmp_enabled() is expected


def test_the_compiled_module_comes_from_the_installed_package():
    from lstm_c import _lstm

    # The tests must exercise what `pip install` produced, not this source tree.
    source_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lstm_c")
    assert os.path.dirname(os.path.abspath(lstm_c.__file__)) != source_tree
    assert os.path.dirname(_lstm.__file__) == os.path.dirname(lstm_c.__file__)
