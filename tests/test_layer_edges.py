"""lstm_c.LSTM at the edges: inputs, states and state dicts in any memory layout, and
degenerate sizes (T = 0, B = 0, one unit, rows of length 0) against the reference stack and
finite differences."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from helpers import (
    LAYOUTS,
    as_layout,
    assert_close,
    assert_identical,
    layer_call,
    layer_call_names,
    layer_inputs,
    numerical_gradient,
    reference_layer_call,
)

from lstm_c import LSTM

T, B, I, H = 4, 3, 5, 6


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_any_layout_gives_the_same_answer_and_inputs_are_not_written(layout, batch_first):
    m = LSTM(
        I,
        H,
        num_layers=2,
        bidirectional=True,
        proj_size=2,
        peephole=True,
        batch_first=batch_first,
        dtype=np.float64,
        seed=4,
    )
    x, hx, dy, dhx = layer_inputs(m, np.random.default_rng(4), T, B)
    lengths = np.array([T, 0, 2])
    expected = layer_call(m, x, hx, lengths, dy, dhx)

    inputs = dict(x=x, h0=hx[0], c0=hx[1], lengths=lengths, dy=dy, dh=dhx[0], dc=dhx[1])
    q = {k: as_layout(v, layout) for k, v in inputs.items()}
    before = {k: np.array(v, copy=True) for k, v in q.items()}
    got = layer_call(m, q["x"], (q["h0"], q["c0"]), q["lengths"], q["dy"], (q["dh"], q["dc"]))
    assert_identical(got, expected, names=layer_call_names(m))
    for k, v in q.items():
        np.testing.assert_array_equal(np.asarray(v), before[k], err_msg=k)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_step_any_layout(layout):
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


def test_loads_state_dicts_in_any_layout():
    source = LSTM(I, H, num_layers=2, dtype=np.float64, seed=6)
    x = np.random.default_rng(6).standard_normal((T, B, I))
    expected = source(x)[0]
    for layout in LAYOUTS:
        m = LSTM(I, H, num_layers=2, dtype=np.float64, seed=7)
        m.load_state_dict({k: as_layout(v, layout) for k, v in source.state_dict().items()})
        np.testing.assert_array_equal(m(x)[0], expected, err_msg=layout)


# ----------------------------------------------------------------------------- degenerate sizes


DEGENERATE = {
    "T0": dict(T=0, B=3, I=2, H=4),
    "B0": dict(T=3, B=0, I=2, H=4),
    "H1_I1": dict(T=4, B=2, I=1, H=1),
    "all_lengths_0": dict(T=3, B=3, I=2, H=3, lengths=[0, 0, 0]),
    "lengths_0_and_T": dict(T=4, B=4, I=2, H=3, lengths=[0, 4, 4, 0]),
}
CONFIGS = {
    "stacked_bidirectional": dict(num_layers=2, bidirectional=True),
    "stacked_bidirectional_projection_peephole": dict(
        num_layers=3, bidirectional=True, proj_size=1, peephole=True
    ),
}


def degenerate_problem(case, config, batch_first):
    """A module and (x, hx, lengths, dy, dhx) of a degenerate size."""
    spec = dict(DEGENERATE[case])
    lengths = spec.pop("lengths", None)
    options = dict(CONFIGS[config])
    if options.get("proj_size", 0) >= spec["H"]:
        options["proj_size"] = 0
    m = LSTM(spec["I"], spec["H"], batch_first=batch_first, dtype=np.float64, seed=9, **options)
    rng = np.random.default_rng(zlib.crc32(f"{case}{config}{batch_first}".encode()))
    x, hx, dy, dhx = layer_inputs(m, rng, spec["T"], spec["B"])
    return m, x, hx, lengths, dy, dhx


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_sizes_match_the_reference_stack(case, config, batch_first):
    m, x, hx, lengths, dy, dhx = degenerate_problem(case, config, batch_first)
    got = layer_call(m, x, hx, lengths, dy, dhx)
    expected = reference_layer_call(m, x, hx, lengths, dy, dhx)
    assert_close(got, expected, names=layer_call_names(m))
    if case == "T0":
        assert got[0].shape == ((3, 0) if batch_first else (0, 3)) + (m.num_directions * m.output_size,)
        assert_identical(got[1:3], hx)  # T = 0: the initial state comes back...
        assert_identical(got[4:6], dhx)  # ...and the state gradients pass straight through
        assert got[3].shape == x.shape


@pytest.mark.parametrize("case", ["H1_I1", "lengths_0_and_T"])
def test_degenerate_sizes_gradients_match_finite_differences(case):
    m, x, hx, lengths, dy, dhx = degenerate_problem(case, "stacked_bidirectional_projection_peephole", False)
    got = layer_call(m, x, hx, lengths, dy, dhx)

    def loss():
        y, (h, c) = m.eval()(x, hx, lengths=lengths)
        return float((y * dy).sum() + (h * dhx[0]).sum() + (c * dhx[1]).sum())

    numeric = [numerical_gradient(loss, a) for a in (x, hx[0], hx[1])]
    numeric += [numerical_gradient(loss, p) for p in m.params.values()]
    for name, a, b in zip(["dx", "dh0", "dc0", *m.params], got[3:], numeric):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)
