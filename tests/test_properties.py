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
from helpers import (  # noqa: E402
    assert_close,
    assert_identical,
    grads_for,
    layer_call,
    layer_call_names,
    layer_inputs,
    make_problem,
    reference_layer_call,
)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import lstm_c  # noqa: E402
from lstm_c import LSTM, reference  # noqa: E402

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def problems(draw, max_T=6, max_B=5, max_I=9, max_H=9):
    T = draw(st.integers(0, max_T))
    B = draw(st.integers(0, max_B))
    I = draw(st.integers(1, max_I))
    H = draw(st.integers(1, max_H))
    P = draw(st.one_of(st.just(0), st.integers(1, H - 1))) if H > 1 else 0
    lengths = draw(
        st.one_of(
            st.none(),
            st.lists(st.one_of(st.sampled_from([0, T]), st.integers(0, T)), min_size=B, max_size=B),
        )
    )
    return dict(
        T=T,
        B=B,
        I=I,
        H=H,
        P=P,
        lengths=lengths,
        peephole=draw(st.booleans()),
        bias=draw(st.booleans()),
        state=draw(st.booleans()),
        reverse=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        output_grads=draw(st.sampled_from(["all", "dy_only", "state_only", "none"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def arrays(spec):
    """The drawn problem as arrays (values from a seeded NumPy generator)."""
    rng = np.random.default_rng(spec["seed"])
    p = make_problem(
        rng,
        spec["T"],
        spec["B"],
        spec["I"],
        spec["H"],
        spec["dtype"],
        P=spec["P"],
        peephole=spec["peephole"],
        batch_first=spec["batch_first"],
        bias=spec["bias"],
        state=spec["state"],
    )
    grads = grads_for(rng, p, batch_first=spec["batch_first"], which=spec["output_grads"])
    options = dict(lengths=spec["lengths"], reverse=spec["reverse"], batch_first=spec["batch_first"])
    return p, grads, options


def compare(spec, num_threads=None):
    p, grads, options = arrays(spec)
    dtype = spec["dtype"]
    y, h, c, cache = lstm_c.lstm_forward(**p, **options, num_threads=num_threads)
    ry, rh, rc, rcache = reference.lstm_forward(**p, **options)
    assert_close((y, h, c), (ry, rh, rc), dtype, names=("y", "h_n", "c_n"), scaled=True)
    # Inference keeps nothing for a backward pass and computes the same outputs, bitwise.
    inference = lstm_c.lstm_forward(**p, **options, num_threads=num_threads, training=False)
    assert inference[3] is None
    assert_identical(inference[:3], (y, h, c), names=("y", "h_n", "c_n"))
    g = lstm_c.lstm_backward(cache, *grads, num_threads=num_threads)
    rg = reference.lstm_backward(rcache, *grads)
    assert_close(g, rg, dtype, scaled=True)


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
        T=draw(st.integers(0, 4)),
        B=draw(st.integers(0, 4)),
        I=draw(st.integers(1, 5)),
        H=H,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, H - 1)),
        peephole=draw(st.booleans()),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        with_lengths=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=40, **SETTINGS)
@given(layers())
def test_the_layer_matches_the_reference_stack(spec):
    T, B, I, H, dtype = spec["T"], spec["B"], spec["I"], spec["H"], spec["dtype"]
    m = LSTM(
        I,
        H,
        spec["num_layers"],
        bias=spec["bias"],
        batch_first=spec["batch_first"],
        bidirectional=spec["bidirectional"],
        proj_size=spec["proj_size"],
        peephole=spec["peephole"],
        dtype=dtype,
        seed=spec["seed"] % 1000,
    )
    rng = np.random.default_rng(spec["seed"])
    x, hx, dy, dhx = layer_inputs(m, rng, T, B)
    lengths = rng.integers(0, T + 1, B) if spec["with_lengths"] else None
    got = layer_call(m, x, hx, lengths, dy, dhx)
    expected = reference_layer_call(m, x, hx, lengths, dy, dhx)
    assert_close(got, expected, dtype, names=layer_call_names(m), scaled=True)
