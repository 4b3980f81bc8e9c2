"""Property tests: hypothesis draws shapes, lengths, options and dtypes, and the compiled
kernels must agree with the NumPy reference on the outputs and on every gradient.

Bounded and reproducible: each test has a fixed max_examples, no deadline (a shared CI
machine may be slow) and derandomize=True (the same examples on every run), and writes
no example database.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import lstm_c  # noqa: E402
from lstm_c import LSTM, reference  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Relative to the largest magnitude of each compared array (sums of many terms in float32).
RTOL = {np.float64: 1e-9, np.float32: 2e-4}


def assert_close(ours, theirs, dtype, what):
    assert ours.dtype == dtype, what
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    scale = max(1.0, float(np.abs(theirs).max(initial=0)))
    np.testing.assert_allclose(ours, theirs, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=what)


@st.composite
def problems(draw, max_T=6, max_B=5, max_I=9, max_H=9):
    T = draw(st.integers(0, max_T))
    B = draw(st.integers(0, max_B))
    I = draw(st.integers(1, max_I))
    H = draw(st.integers(1, max_H))
    P = draw(st.one_of(st.just(0), st.integers(1, H - 1))) if H > 1 else 0
    lengths = draw(st.one_of(
        st.none(),
        st.lists(st.one_of(st.sampled_from([0, T]), st.integers(0, T)), min_size=B, max_size=B),
    ))
    return dict(
        T=T, B=B, I=I, H=H, P=P, lengths=lengths,
        peephole=draw(st.booleans()), bias=draw(st.booleans()), state=draw(st.booleans()),
        reverse=draw(st.booleans()), batch_first=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        output_grads=draw(st.sampled_from(["all", "dy_only", "state_only", "none"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def arrays(spec):
    """The drawn problem as arrays (values from a seeded NumPy generator)."""
    rng = np.random.default_rng(spec["seed"])
    T, B, I, H, P, dtype = spec["T"], spec["B"], spec["I"], spec["H"], spec["P"], spec["dtype"]
    out = P or H
    shape = (B, T) if spec["batch_first"] else (T, B)
    p = dict(
        x=rng.standard_normal((*shape, I)),
        w_ih=rng.standard_normal((4 * H, I)) / np.sqrt(I),
        w_hh=rng.standard_normal((4 * H, out)) / np.sqrt(out),
        b_ih=rng.standard_normal(4 * H) * 0.5 if spec["bias"] else None,
        b_hh=rng.standard_normal(4 * H) * 0.5 if spec["bias"] else None,
        h0=rng.standard_normal((B, out)) * 0.5 if spec["state"] else None,
        c0=rng.standard_normal((B, H)) if spec["state"] else None,
        w_hr=rng.standard_normal((P, H)) / np.sqrt(H) if P else None,
        peephole=rng.standard_normal((3, H)) * 0.5 if spec["peephole"] else None,
    )
    p = {k: None if v is None else v.astype(dtype) for k, v in p.items()}
    which = spec["output_grads"]
    grads = (
        rng.standard_normal((*shape, out)).astype(dtype) if which in ("all", "dy_only") else None,
        rng.standard_normal((B, out)).astype(dtype) if which in ("all", "state_only") else None,
        rng.standard_normal((B, H)).astype(dtype) if which in ("all", "state_only") else None,
    )
    options = dict(lengths=spec["lengths"], reverse=spec["reverse"], batch_first=spec["batch_first"])
    return p, grads, options


def compare(spec, num_threads=None):
    p, grads, options = arrays(spec)
    dtype = spec["dtype"]
    y, h, c, cache = lstm_c.lstm_forward(**p, **options, num_threads=num_threads)
    ry, rh, rc, rcache = reference.lstm_forward(**p, **options)
    for what, a, b in (("y", y, ry), ("h_n", h, rh), ("c_n", c, rc)):
        assert_close(a, b, dtype, what)
    # Inference keeps nothing for a backward pass and computes the same outputs, bitwise.
    inference = lstm_c.lstm_forward(**p, **options, num_threads=num_threads, training=False)
    assert inference[3] is None
    for what, a, b in zip(("y", "h_n", "c_n"), inference[:3], (y, h, c)):
        np.testing.assert_array_equal(a, b, err_msg=what)
    g = lstm_c.lstm_backward(cache, *grads, num_threads=num_threads)
    rg = reference.lstm_backward(rcache, *grads)
    for field in g._fields:
        a, b = getattr(g, field), getattr(rg, field)
        if b is None:
            assert a is None, field
        else:
            assert_close(a, b, dtype, field)


@settings(max_examples=100, **SETTINGS)
@given(problems())
def test_kernels_match_the_reference(spec):
    compare(spec)


@settings(max_examples=20, **SETTINGS)
@given(problems(max_T=4, max_B=40, max_I=12, max_H=70), st.sampled_from([1, 2]))
def test_kernels_match_the_reference_on_several_threads(spec, num_threads):
    """Wider layers, so that a call with num_threads=2 splits the hidden units between threads
    (slices cut at multiples of 16 units, so odd sizes leave uneven and empty slices)."""
    compare(spec, num_threads)


@st.composite
def layers(draw):
    H = draw(st.integers(1, 6))
    return dict(
        T=draw(st.integers(0, 4)), B=draw(st.integers(0, 4)), I=draw(st.integers(1, 5)), H=H,
        num_layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, H - 1)), peephole=draw(st.booleans()), bias=draw(st.booleans()),
        batch_first=draw(st.booleans()), with_lengths=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=40, **SETTINGS)
@given(layers())
def test_the_layer_matches_the_reference_composed_by_hand(spec):
    T, B, I, H, dtype = spec["T"], spec["B"], spec["I"], spec["H"], spec["dtype"]
    m = LSTM(I, H, spec["num_layers"], bias=spec["bias"], batch_first=spec["batch_first"],
             bidirectional=spec["bidirectional"], proj_size=spec["proj_size"], peephole=spec["peephole"],
             dtype=dtype, seed=spec["seed"] % 1000)
    rng = np.random.default_rng(spec["seed"])
    L, D, P = m.num_layers, m.num_directions, m.output_size
    shape = (B, T) if m.batch_first else (T, B)
    x = rng.standard_normal((*shape, I)).astype(dtype)
    hx = (rng.standard_normal((L * D, B, P)).astype(dtype), rng.standard_normal((L * D, B, H)).astype(dtype))
    lengths = rng.integers(0, T + 1, B) if spec["with_lengths"] else None
    dy = rng.standard_normal((*shape, D * P)).astype(dtype)
    dhx = (rng.standard_normal(hx[0].shape).astype(dtype), rng.standard_normal(hx[1].shape).astype(dtype))

    y, (h_n, c_n) = m(x, hx, lengths=lengths)
    dx, (dh0, dc0) = m.backward(dy, dhx)

    sd = m.state_dict()
    inp, hs, cs, caches = x, [], [], []
    for layer in range(L):
        outs = []
        for d in range(D):
            s, k = f"_l{layer}" + ("_reverse" if d else ""), layer * D + d
            out = reference.lstm_forward(
                inp, sd[f"weight_ih{s}"], sd[f"weight_hh{s}"], sd.get(f"bias_ih{s}"), sd.get(f"bias_hh{s}"),
                hx[0][k], hx[1][k], w_hr=sd.get(f"weight_hr{s}"), peephole=sd.get(f"peephole{s}"),
                lengths=lengths, reverse=bool(d), batch_first=m.batch_first,
            )
            outs.append(out[0])
            hs.append(out[1])
            cs.append(out[2])
            caches.append(out[3])
        inp = np.concatenate(outs, axis=-1)
    for what, a, b in (("y", y, inp), ("h_n", h_n, np.stack(hs)), ("c_n", c_n, np.stack(cs))):
        assert_close(a, b, dtype, what)

    d_out, ref_dh0, ref_dc0 = dy, [None] * (L * D), [None] * (L * D)
    for layer in reversed(range(L)):
        d_in = 0
        for d in range(D):
            s, k = f"_l{layer}" + ("_reverse" if d else ""), layer * D + d
            g = reference.lstm_backward(caches[k], d_out[..., d * P:(d + 1) * P], dhx[0][k], dhx[1][k])
            d_in = d_in + g.dx
            ref_dh0[k], ref_dc0[k] = g.dh0, g.dc0
            expected = {f"weight_ih{s}": g.dw_ih, f"weight_hh{s}": g.dw_hh, f"bias_ih{s}": g.db,
                        f"bias_hh{s}": g.db, f"weight_hr{s}": g.dw_hr, f"peephole{s}": g.dpeephole}
            for name, value in expected.items():
                if name in sd:
                    assert_close(m.grads[name], value, dtype, name)
        d_out = d_in
    for what, a, b in (("dx", dx, d_out), ("dh0", dh0, np.stack(ref_dh0)), ("dc0", dc0, np.stack(ref_dc0))):
        assert_close(a, b, dtype, what)
