"""lstm_c.LSTM without any framework: against the reference stack (the package's layer stack
over lstm_c.reference), finite differences, stepping, threads, dtypes, modes, seeds and
state dicts. Layouts and degenerate sizes are in test_layer_edges.py."""

import copy
import math
import warnings

import numpy as np
import pytest
from helpers import (
    DTYPES,
    assert_close,
    assert_identical,
    layer_call_names,
    layer_inputs,
    reference_layer_call,
)

from lstm_c import _threads
from lstm_c._params import param_name, param_shapes
from lstm_c.layer import LSTM

T, B, I, H = 5, 3, 4, 6
LENGTHS = [5, 0, 2]

CONFIGS = {
    "one_layer": dict(),
    "stacked_3": dict(num_layers=3),
    "bidirectional_2": dict(num_layers=2, bidirectional=True),
    "no_bias_batch_first": dict(num_layers=2, bias=False, batch_first=True),
    "proj": dict(num_layers=2, proj_size=2),
    "peephole": dict(num_layers=2, peephole=True),
    "everything": dict(num_layers=3, bidirectional=True, proj_size=4, peephole=True, batch_first=True),
    "dropout": dict(num_layers=3, bidirectional=True, dropout=0.4),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("config", CONFIGS)
def test_layer_matches_the_reference_stack(config, lengths, dtype):
    m = LSTM(I, H, dtype=dtype, seed=1, **CONFIGS[config])
    x, hx, dy, dhx = layer_inputs(m, np.random.default_rng(2), T, B)
    y, (h_n, c_n) = m(x, hx, lengths=lengths)
    masks = m._trace.masks
    assert (m.dropout > 0) == any(mask is not None for mask in masks)
    dx, (dh0, dc0) = m.backward(dy, dhx)
    got = (y, h_n, c_n, dx, dh0, dc0, *m.grads.values())
    assert list(m.grads) == list(m.state_dict())
    expected = reference_layer_call(m, x, hx, lengths, dy, dhx, masks)
    assert_close(got, expected, dtype, names=layer_call_names(m))


@pytest.mark.parametrize("config", ["one_layer", "bidirectional_2", "everything"])
def test_unbatched_is_a_batch_of_one(config):
    m = LSTM(I, H, dtype=np.float64, seed=3, **CONFIGS[config])
    x, hx, dy, dhx = layer_inputs(m, np.random.default_rng(4), T, B, unbatched=True)
    y, (h_n, c_n) = m(x, hx)
    assert y.shape == (T, m.num_directions * m.output_size)
    assert h_n.shape == (m.num_layers * m.num_directions, m.output_size)
    assert c_n.shape == (m.num_layers * m.num_directions, H)
    dx, (dh0, dc0) = m.backward(dy, dhx)
    assert dx.shape == x.shape and dh0.shape == h_n.shape and dc0.shape == c_n.shape

    # The same as a batch of one (in batch_first layout when the module is batch_first).
    xb = x[None] if m.batch_first else x[:, None]
    yb, (hb, cb) = m(xb, (hx[0][:, None], hx[1][:, None]))
    dxb, (dhb, dcb) = m.backward(
        dy[None] if m.batch_first else dy[:, None], (dhx[0][:, None], dhx[1][:, None])
    )
    np.testing.assert_allclose(y, yb[0] if m.batch_first else yb[:, 0], rtol=1e-14)
    np.testing.assert_allclose(h_n, hb[:, 0], rtol=1e-14)
    np.testing.assert_allclose(c_n, cb[:, 0], rtol=1e-14)
    np.testing.assert_allclose(dx, dxb[0] if m.batch_first else dxb[:, 0], rtol=1e-14)
    np.testing.assert_allclose(dh0, dhb[:, 0], rtol=1e-14)
    np.testing.assert_allclose(dc0, dcb[:, 0], rtol=1e-14)


def test_batch_first_is_the_transposed_layout():
    a = LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=5)
    b = LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64)
    b.load_state_dict(a.state_dict())
    x, hx, dy, dhx = layer_inputs(a, np.random.default_rng(6), T, B)
    ya, sa = a(x, hx, lengths=LENGTHS)
    yb, sb = b(x.transpose(1, 0, 2), hx, lengths=LENGTHS)
    np.testing.assert_allclose(yb, ya.transpose(1, 0, 2), rtol=1e-13)
    ga = a.backward(dy, dhx)
    gb = b.backward(dy.transpose(1, 0, 2), dhx)
    np.testing.assert_allclose(gb[0], ga[0].transpose(1, 0, 2), rtol=1e-12, atol=1e-14)
    for name in a.grads:
        np.testing.assert_allclose(a.grads[name], b.grads[name], rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- finite differences


FD_CONFIGS = {
    "stacked_bidirectional_lengths": (dict(num_layers=2, bidirectional=True), dict(lengths=LENGTHS)),
    "proj_peephole_lengths": (dict(num_layers=2, proj_size=3, peephole=True), dict(lengths=LENGTHS)),
    "everything_dropout": (
        dict(num_layers=3, bidirectional=True, proj_size=2, peephole=True, dropout=0.3, batch_first=True),
        dict(lengths=[2, 5, 1]),
    ),
    "unbatched_bidirectional_peephole": (dict(bidirectional=True, peephole=True), dict(unbatched=True)),
}


@pytest.mark.parametrize("config", FD_CONFIGS)
def test_gradients_match_finite_differences(config):
    options, run = FD_CONFIGS[config]
    m = LSTM(I, H, dtype=np.float64, seed=7, **options)
    m.load_state_dict({k: v * 2 for k, v in m.state_dict().items()})  # livelier than ±1/sqrt(H)
    rng = np.random.default_rng(8)
    x, hx, dy, dhx = layer_inputs(m, rng, T, B, unbatched=run.get("unbatched", False))
    lengths = run.get("lengths")
    masks_from = copy.deepcopy(m.dropout_rng)

    def run_forward(x, hx):
        m.dropout_rng = copy.deepcopy(masks_from)  # the same dropout masks every time
        return m(x, hx, lengths=lengths)

    def loss(x, hx):
        y, (h, c) = run_forward(x, hx)
        return np.sum(y * dy) + np.sum(h * dhx[0]) + np.sum(c * dhx[1])

    run_forward(x, hx)
    dx, (dh0, dc0) = m.backward(dy, dhx)
    grads = m.grads
    if m.dropout:
        assert any(mask is not None and (mask == 0).any() for mask in m._trace.masks)

    def check(name, value, grad, perturb):
        # Directional derivative along a random direction, central differences.
        direction = rng.standard_normal(value.shape)
        eps = 1e-6
        numeric = (perturb(value + eps * direction) - perturb(value - eps * direction)) / (2 * eps)
        analytic = np.sum(grad * direction)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8), name

    check("x", x, dx, lambda v: loss(v, hx))
    check("h0", hx[0], dh0, lambda v: loss(x, (v, hx[1])))
    check("c0", hx[1], dc0, lambda v: loss(x, (hx[0], v)))
    params = m.state_dict()
    for name, value in params.items():

        def perturb(v, name=name):
            m.load_state_dict({**params, name: v})
            return loss(x, hx)

        check(name, value, grads[name], perturb)
        m.load_state_dict(params)


def test_full_dropout_cuts_the_input_off():
    m = LSTM(I, H, num_layers=2, dropout=1.0, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    y, _ = m(x)
    y2, _ = m(x * 3)
    np.testing.assert_array_equal(y, y2)
    dx, _ = m.backward(np.ones_like(y))
    assert not dx.any()


# ----------------------------------------------------------------------------- step


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize(
    "options",
    [dict(), dict(num_layers=3), dict(num_layers=2, proj_size=3, peephole=True)],
    ids=["one_layer", "stacked", "proj_peephole"],
)
def test_stepping_equals_one_forward(options, unbatched):
    m = LSTM(I, H, dtype=np.float64, seed=9, dropout=0.0, **options)
    x, hx, _, _ = layer_inputs(m, np.random.default_rng(10), T, B, unbatched=unbatched)
    y, (h_n, c_n) = m(x, hx)
    state = hx
    for t in range(T):
        y_t, state = m.step(x[t], state)
        np.testing.assert_allclose(y_t, y[t], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(state[0], h_n, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(state[1], c_n, rtol=1e-13, atol=1e-15)
    # From zeros too.
    y0, _ = m(x)
    y_t, state = m.step(x[0])
    np.testing.assert_allclose(y_t, y0[0], rtol=1e-13, atol=1e-15)


def test_step_is_inference_and_leaves_the_trace_alone():
    m = LSTM(I, H, num_layers=3, dropout=0.5, dtype=np.float64, seed=11)
    x = np.random.default_rng(12).standard_normal((T, B, I))
    y, _ = m(x)  # training mode, with dropout
    dy = np.ones_like(y)
    expected = m.backward(dy)[0]
    y_t, _ = m.step(x[0])
    m.eval()
    np.testing.assert_allclose(y_t, m(x)[0][0], rtol=1e-13)  # step never drops out
    m.train()
    m.dropout_rng = np.random.default_rng(0)
    y, _ = m(x)
    m.step(x[0])
    m.step(x[0])
    first = m.backward(dy)[0]
    m.dropout_rng = np.random.default_rng(0)
    m(x)
    np.testing.assert_array_equal(m.backward(dy)[0], first)
    assert not np.array_equal(first, expected)  # other masks, other gradient


def test_step_in_float32():
    m = LSTM(I, H, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((B, I)).astype(np.float32)
    y_t, (h, c) = m.step(x)
    assert y_t.dtype == h.dtype == c.dtype == np.float32
    assert y_t.shape == (B, H) and h.shape == (2, B, H)


@pytest.fixture
def planned_threads(monkeypatch):
    """The num_threads of every kernel call's thread plan (lstm_c._threads.plan), in order."""
    asked = []
    plan = _threads.plan

    def record(num_threads, *sizes):
        asked.append(num_threads)
        return plan(num_threads, *sizes)

    monkeypatch.setattr(_threads, "plan", record)
    return asked


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_step_forward_and_backward_use_the_modules_num_threads(threads, planned_threads):
    # Wide enough (B = 64, H = 64) that a step on two threads really splits.
    m = LSTM(I, 64, num_layers=2, dtype=np.float64, seed=13)
    x = np.random.default_rng(13).standard_normal((T, 64, I))
    expected = m.step(x[0])
    m.num_threads = threads
    del planned_threads[:]
    got = m.step(x[0])
    assert planned_threads == [threads] * 2  # one plan per layer
    assert_close((got[0], *got[1]), (expected[0], *expected[1]), np.float64)
    del planned_threads[:]
    y, _ = m(x)
    m.backward(np.ones_like(y))
    assert planned_threads == [threads] * 4  # forward and backward of each layer


def test_a_bad_num_threads_on_the_module_is_refused_by_step():
    m = LSTM(I, H)
    m.num_threads = 0
    with pytest.raises(ValueError, match="num_threads"):
        m.step(np.zeros((B, I), np.float32))


# ----------------------------------------------------------------------------- dtypes


def test_integer_input_and_default_dtype():
    m = LSTM(2, 3, seed=0)
    assert m.dtype == np.float32
    y, (h, c) = m([[[1, 0]], [[0, 1]]])
    assert y.dtype == h.dtype == c.dtype == np.float32 and y.shape == (2, 1, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lists_and_integer_arrays_are_converted_to_the_modules_dtype(dtype):
    m = LSTM(I, H, num_layers=2, dtype=dtype, seed=14)
    x, hx, _, _ = layer_inputs(m, np.random.default_rng(14), T, B)
    expected = m(x, hx)
    got = m(x.tolist(), (hx[0].tolist(), hx[1].tolist()))
    assert_identical((got[0], *got[1]), (expected[0], *expected[1]))
    step = m.step(x[0].tolist())
    assert_identical((step[0], *step[1]), (m.step(x[0])[0], *m.step(x[0])[1]))
    ints = np.arange(T * B * I).reshape(T, B, I) % 3 - 1
    assert_identical(m(ints)[0], m(ints.astype(dtype))[0])


# ----------------------------------------------------------------------------- modes and seeds


def test_train_and_eval():
    m = LSTM(I, H, num_layers=2, dropout=0.5, dtype=np.float64, seed=13)
    assert m.training
    assert m.eval() is m and not m.training
    assert m.train() is m and m.training
    assert m.train(False) is m and not m.training
    x = np.random.default_rng(14).standard_normal((T, B, I))
    y_eval, _ = m(x)
    y_eval2, _ = m(x)
    np.testing.assert_array_equal(y_eval, y_eval2)  # no dropout in eval mode
    plain = LSTM(I, H, num_layers=2, dtype=np.float64)
    plain.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(plain(x)[0], y_eval)
    m.train()
    y1, _ = m(x)
    y2, _ = m(x)
    assert not np.allclose(y1, y_eval) and not np.allclose(y1, y2)  # fresh masks per forward


def test_backward_needs_a_training_forward():
    m = LSTM(I, H, dtype=np.float64)
    x = np.zeros((T, B, I))
    with pytest.raises(ValueError, match=r"training-mode forward.*m\.train\(\)"):
        m.backward(np.zeros((T, B, H)))
    m(x)
    m.backward(np.zeros((T, B, H)))
    m.eval()
    m(x)  # an eval-mode forward drops the trace: backward always means the latest forward
    with pytest.raises(ValueError, match="eval mode"):
        m.backward(np.zeros((T, B, H)))


def test_seed_reproduces_parameters_and_masks():
    options = dict(num_layers=3, bidirectional=True, proj_size=2, peephole=True, dropout=0.5)
    a, b = LSTM(I, H, seed=42, **options), LSTM(I, H, seed=42, **options)
    c = LSTM(I, H, seed=43, **options)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[name])
        assert not np.array_equal(value, c.state_dict()[name])
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(a(x)[0], b(x)[0])
    # Documented: drawn in state_dict order, uniform ±1/sqrt(H), from default_rng(seed).
    rng = np.random.default_rng(42)
    bound = 1 / math.sqrt(H)
    for value in LSTM(I, H, seed=42, dtype=np.float64, **options).state_dict().values():
        np.testing.assert_array_equal(value, rng.uniform(-bound, bound, value.shape))
    w_ih = param_name("weight_ih", 0)
    assert not np.array_equal(LSTM(I, H).state_dict()[w_ih], LSTM(I, H).state_dict()[w_ih])


def test_dropout_masks_are_inverted_dropout():
    m = LSTM(I, 50, num_layers=2, dropout=0.25, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((20, 8, I))
    m(x)
    (mask,) = m._trace.masks
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    assert abs((mask == 0).mean() - 0.25) < 0.03


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match="num_layers=1"):
        LSTM(I, H, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LSTM(I, H, num_layers=2, dropout=0.5)


# ----------------------------------------------------------------------------- state dicts and grads


def test_state_dict_names_shapes_and_copies():
    m = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, peephole=True)
    sd = m.state_dict()
    expected = {}
    for layer, inputs in ((0, I), (1, 4)):
        for reverse in (False, True):
            shapes = dict(
                weight_ih=(4 * H, inputs),
                weight_hh=(4 * H, 2),
                bias_ih=(4 * H,),
                bias_hh=(4 * H,),
                weight_hr=(2, H),
                peephole=(3, H),
            )
            expected.update({param_name(kind, layer, reverse): shape for kind, shape in shapes.items()})
    assert {k: v.shape for k, v in sd.items()} == expected
    assert list(sd) == list(expected) == list(param_shapes(I, H, 2, 2, proj_size=2, peephole=True))
    assert all(v.dtype == np.float32 for v in sd.values())
    w_ih = param_name("weight_ih", 0)
    sd[w_ih][:] = 7
    assert not (m.state_dict()[w_ih] == 7).any()
    assert list(LSTM(I, H, bias=False).state_dict()) == [w_ih, param_name("weight_hh", 0)]


def test_load_state_dict_converts_copies_and_is_atomic():
    m = LSTM(I, H, dtype=np.float32)
    source = LSTM(I, H, dtype=np.float64, seed=1).state_dict()
    as_lists = {k: v.tolist() for k, v in source.items()}
    m.load_state_dict(as_lists)
    for name, value in m.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, source[name].astype(np.float32))
    mine = m.state_dict()
    source[param_name("weight_hh", 0)][:] = 0  # the loaded values are copies
    m.load_state_dict(as_lists)
    b_hh = param_name("bias_hh", 0)
    bad = {**m.state_dict(), param_name("weight_ih", 0): np.ones((4 * H, I)), b_hh: np.zeros(3)}
    with pytest.raises(ValueError, match=rf"{b_hh}.*\(24,\).*\(3,\)"):
        m.load_state_dict(bad)
    for name, value in m.state_dict().items():  # nothing changed
        np.testing.assert_array_equal(value, mine[name])


def test_load_state_dict_names_missing_and_unexpected_keys():
    m = LSTM(I, H, peephole=True)
    sd = LSTM(I, H, proj_size=2).state_dict()  # what torch would give with proj_size=2
    w_ih, w_hh, peephole = (param_name(kind, 0) for kind in ("weight_ih", "weight_hh", "peephole"))
    with pytest.raises(ValueError) as info:
        m.load_state_dict(sd)
    message = str(info.value)
    assert f"missing keys [{peephole!r}]" in message
    assert f"unexpected keys [{param_name('weight_hr', 0)!r}]" in message
    assert "strict=False" in message
    # weight_hh has the wrong shape for this module (P=2 columns, not H).
    with pytest.raises(ValueError, match=rf"{w_hh}.*\(24, 6\).*\(24, 2\)"):
        m.load_state_dict(sd, strict=False)
    peep = m.state_dict()[peephole]
    m.load_state_dict({w_ih: np.zeros((4 * H, I)), "extra": 1}, strict=False)
    assert not m.state_dict()[w_ih].any()
    np.testing.assert_array_equal(m.state_dict()[peephole], peep)
    with pytest.raises(TypeError, match="mapping"):
        m.load_state_dict([(w_ih, np.zeros((4 * H, I)))])
    with pytest.raises(TypeError, match="real numbers"):
        m.load_state_dict({**m.state_dict(), peephole: np.full((3, H), "a")})


def test_grads_replace_rather_than_accumulate():
    m = LSTM(I, H, num_layers=2, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    y, _ = m(x)
    m.backward(np.ones_like(y))
    first = {k: v.copy() for k, v in m.grads.items()}
    m.backward(np.ones_like(y))  # a second backward of the same forward
    for name, value in m.grads.items():
        np.testing.assert_array_equal(value, first[name])
    b_ih, b_hh = param_name("bias_ih", 0), param_name("bias_hh", 0)
    assert m.grads[b_ih] is not m.grads[b_hh]
    np.testing.assert_array_equal(m.grads[b_ih], m.grads[b_hh])
    m.backward(None)  # no gradient at all
    assert not any(v.any() for v in m.grads.values())


def test_params_are_live_for_in_place_updates():
    m = LSTM(I, H, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    y, _ = m(x)
    m.backward(np.ones_like(y))
    before = m.state_dict()
    for name, p in m.params.items():
        p -= 0.1 * m.grads[name]
    for name, value in m.state_dict().items():
        np.testing.assert_array_equal(value, before[name] - 0.1 * m.grads[name])
    assert not np.array_equal(m(x)[0], y)


def test_a_later_forward_and_output_edits_do_not_corrupt_anything():
    m = LSTM(I, H, num_layers=2, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, I))
    y1, (h1, c1) = m(x1)
    kept = y1.copy(), h1.copy(), c1.copy()
    dy = rng.standard_normal(y1.shape)
    expected = m.backward(dy)[0]
    grads = {k: v.copy() for k, v in m.grads.items()}
    m(x2)
    assert_identical((y1, h1, c1), kept)  # earlier outputs untouched
    y1, (h1, c1) = m(x1)
    y1[:] = np.nan  # the caller owns the outputs
    h1[:] = np.nan
    c1[:] = np.nan
    np.testing.assert_array_equal(m.backward(dy)[0], expected)
    for name, value in m.grads.items():
        np.testing.assert_array_equal(value, grads[name])


def test_deepcopy_gives_an_independent_module():
    m = LSTM(I, H, num_layers=2, dropout=0.5, seed=0)
    twin = copy.deepcopy(m)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    np.testing.assert_array_equal(m(x)[0], twin(x)[0])
    w_ih = param_name("weight_ih", 0)
    twin.params[w_ih][:] = 0
    assert m.state_dict()[w_ih].any()


def test_repr():
    assert repr(LSTM(I, H)) == "LSTM(4, 6)"
    r = repr(
        LSTM(
            I,
            H,
            2,
            batch_first=True,
            dropout=0.5,
            bidirectional=True,
            proj_size=3,
            peephole=True,
            dtype=np.float64,
        )
    )
    assert r == (
        "LSTM(4, 6, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True, "
        "proj_size=3, peephole=True, dtype=float64)"
    )


# --------------------------------------------------------------------------------------
# step's compiled plan reads the module's own arrays


@pytest.mark.parametrize("num_threads", [None, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_sees_parameters_updated_in_place_and_replaced(dtype, num_threads):
    import pickle

    m = LSTM(3, 5, num_layers=2, proj_size=2, peephole=True, seed=0, dtype=dtype).eval()
    m.num_threads = num_threads  # an int: steps after the first take a shortcut past the checks
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(dtype)

    def expected():
        y, (h, c) = m(x[None])
        return y[0], h, c

    def stepped():
        y, (h, c) = m.step(x)
        return y, h, c

    assert_close(stepped(), expected(), dtype)
    for p in m.params.values():  # an optimizer's update, in place
        p *= 0.5
    assert_close(stepped(), expected(), dtype)
    sd = m.state_dict()
    sd["bias_hh_l1"] = sd["bias_hh_l1"] + 1
    m.load_state_dict(sd)  # replaces the arrays
    assert_close(stepped(), expected(), dtype)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        (y, (h, c)), (y_c, (h_c, c_c)) = m.step(x), clone.step(x)
        assert_identical([y_c, h_c, c_c], [y, h, c])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_usual_step_call_and_any_other_give_the_same_bits(dtype):
    # The usual call (arrays of the module's dtype, as the last step returned them) runs in
    # one compiled call (Stepper.try_run); anything else goes through the checks first.
    m = LSTM(5, 6, num_layers=2, proj_size=3, peephole=True, seed=1, dtype=dtype).eval()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5)).astype(dtype)
    _, hx = m.step(x)
    plan = m._stepper()
    assert plan.try_run(x, hx) is not None
    assert plan.try_run(x, None) is not None
    usual = m.step(x, hx)
    others = {
        "list": (x.tolist(), hx),
        "strided": (np.asfortranarray(x), hx),
        "state_as_list": (x, list(hx)),
        "state_strided": (x, (np.asfortranarray(hx[0]), hx[1])),
    }
    for name, (x_other, hx_other) in others.items():
        assert plan.try_run(x_other, hx_other) is None, name
        y, (h, c) = m.step(x_other, hx_other)
        assert_identical([y, h, c], [usual[0], *usual[1]], [name] * 3)
    other_dtype = np.float64 if dtype == np.float32 else np.float32
    assert plan.try_run(x.astype(other_dtype), hx) is None  # step refuses it (TypeError)
    assert plan.try_run(x[0], None) is None  # unbatched
    too_many = _threads.lone_step_plan(6, 3)[0] + 1  # a batch beyond the plan
    assert plan.try_run(np.ones((too_many, 5), dtype), None) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [5, 37], ids=["short_rows", "vectors_and_tail"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_a_single_rows_step_reads_the_weights_in_place_and_equals_the_sequence(dtype, hidden, bias):
    # One row: the products read W_ih and W_hh as stored, for the compiled plan and for the
    # checked path (the step kernel) alike; a batch of two goes to BLAS. All three must give
    # the sequence kernel's result, from a given state and from zeros.
    m = LSTM(17, hidden, num_layers=2, bias=bias, seed=3, dtype=dtype).eval()
    rng = np.random.default_rng(4)
    for batch in (1, 2):
        x = rng.standard_normal((batch, 17)).astype(dtype)
        hx = tuple(rng.standard_normal((2, batch, hidden)).astype(dtype) for _ in range(2))
        for state in (hx, None):
            y, (h, c) = m(x[None], state)
            for name, stepped in {
                "plan": m.step(x, state),
                "checked": m.step(np.asfortranarray(x), state),  # declined by the plan
            }.items():
                assert_close([stepped[0], *stepped[1]], [y[0], h, c], dtype, names=[name] * 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [{}, {"proj_size": 90, "peephole": True}, {"num_layers": 2, "bias": False}],
    ids=["plain", "projection_peephole", "two_layers_no_bias"],
)
def test_a_single_rows_step_gives_the_same_bits_on_two_threads_as_on_one(dtype, options):
    # H = 130: enough work that two threads share a single row's step (each its slice of
    # units, 64 and 66: the second ends inside a group of four rows of the weights), and
    # the plan takes both ways, team and calling thread alone, as it measures them.
    m = LSTM(24, 130, seed=7, dtype=dtype, **options).eval()
    x = np.random.default_rng(8).standard_normal((40, 1, 24)).astype(dtype)
    runs = []
    for threads in (1, 2, 3, 2):  # after a team of three, a helper beyond the team of two
        m.num_threads = threads
        hx, outputs = None, []
        for t in range(len(x)):
            y, hx = m.step(x[t], hx)
            outputs += [y, *hx]
        runs.append(outputs)
    plan = m._stepper()
    assert plan.split
    assert plan.team_steps > 0 and plan.alone_steps > 0
    for run in runs[1:]:
        assert_identical(run, runs[0])
    y, (h, c) = m(x)
    assert_close([runs[1][-3], runs[1][-2], runs[1][-1]], [y[-1], h, c], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_step_writes_a_returned_state_again_only_once_nothing_uses_it(dtype):
    # The usual loop drops the state of two steps ago: its arrays are written again.
    m = LSTM(6, 8, num_layers=2, seed=5, dtype=dtype).eval()
    xs = np.random.default_rng(6).standard_normal((12, 3, 6)).astype(dtype)
    y_seq, (h_seq, c_seq) = m(xs)
    hx, seen = None, set()
    for t in range(len(xs)):
        y, hx = m.step(xs[t], hx)
        seen.add(hx[0].ctypes.data)
    assert len(seen) == 2  # two pairs of arrays, in turn
    assert_close([y, *hx], [y_seq[-1], h_seq, c_seq], dtype)
    # Whatever the caller keeps (the states, an output, a view or a buffer of one) is
    # never written again.
    hx = None
    kept, expected = [], []
    for t in range(len(xs)):
        y, hx = m.step(xs[t], hx)
        keep = {0: hx, 1: y, 2: hx[1][1:], 3: memoryview(hx[0])}.get(t % 5)
        if keep is not None:
            kept.append(keep)
            expected.append(np.array(keep[0] if isinstance(keep, tuple) else keep, copy=True))
    for keep, values in zip(kept, expected):
        np.testing.assert_array_equal(np.asarray(keep[0] if isinstance(keep, tuple) else keep), values)
    assert_close([y, *hx], [y_seq[-1], h_seq, c_seq], dtype)


def test_a_module_pickled_without_the_step_shortcut_steps():
    # A module pickled by the first release has no step shortcut in its state.
    m = LSTM(I, H, seed=2)
    m.num_threads = 1
    expected = m.step(np.ones((B, I), np.float32))
    state = m.__getstate__()
    del state["_step_shortcut"]
    old = LSTM.__new__(LSTM)
    old.__setstate__(state)
    got = old.step(np.ones((B, I), np.float32))
    assert_identical([got[0], *got[1]], [expected[0], *expected[1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_step_plan_with_one_bias(dtype):
    from lstm_c import _lstm

    rng = np.random.default_rng(5)
    w_ih, w_hh = (rng.standard_normal((4 * 18, n)).astype(dtype) for n in (3, 18))
    b = rng.standard_normal(4 * 18).astype(dtype)
    x = rng.standard_normal((1, 3)).astype(dtype)
    h = np.empty((1, 1, 18), dtype)
    c = np.empty_like(h)
    expected = LSTM(3, 18, dtype=dtype).eval()
    for b_ih, b_hh in ((b, None), (None, b)):
        plan = _lstm.Stepper([(w_ih, w_hh, b_ih, b_hh, None, None)], 3, 18, 18, np.dtype(dtype).itemsize)
        plan.run(x, None, None, h, c)
        expected.load_state_dict(
            {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b, "bias_hh_l0": 0 * b}
        )
        y, (h_n, c_n) = expected(x[None])
        assert_close([h, c], [h_n, c_n], dtype)


def test_the_step_plan_refuses_arrays_that_do_not_fit():
    from lstm_c import _lstm

    m = LSTM(3, 4, seed=0)
    run = m._stepper().run
    with pytest.raises(ValueError, match="x must be"):
        run(
            np.zeros((1, 5), np.float32),
            None,
            None,
            np.zeros((1, 1, 4), np.float32),
            np.zeros((1, 1, 4), np.float32),
        )
    with pytest.raises(ValueError, match="h0 must be"):
        run(
            np.zeros((2, 3), np.float32),
            np.zeros((1, 1, 4), np.float32),
            None,
            np.zeros((1, 2, 4), np.float32),
            np.zeros((1, 2, 4), np.float32),
        )
    with pytest.raises(ValueError, match="parameter"):
        _lstm.Stepper(
            [(np.zeros((16, 2), np.float32), np.zeros((16, 4), np.float32), None, None, None, None)],
            3,
            4,
            4,
            4,
        )
