"""lstm_c.LSTM without any framework: against the NumPy reference composed by hand,
finite differences, stepping, modes, seeds, state dicts and errors."""

import copy
import math
import warnings

import numpy as np
import pytest

from lstm_c import reference
from lstm_c.layer import LSTM

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
T, B, I, H = 5, 3, 4, 6
LENGTHS = [5, 0, 2]


def suffix(layer, direction):
    return f"_l{layer}" + ("_reverse" if direction else "")


def composed(m, x, hx=None, lengths=None, masks=None, dy=None, dhx=None):
    """The layer by hand: lstm_c.reference per layer and direction, batched input.

    `masks[k - 1]` multiplies the input of layer k (dropout). Returns
    (y, h_n, c_n) and, when `dy` or `dhx` is given, (dx, dh0, dc0, grads).
    """
    sd = m.state_dict()
    L, D, P = m.num_layers, m.num_directions, m.output_size
    batch_first = m.batch_first
    inp = x
    h_n, c_n, caches = [], [], []
    for layer in range(L):
        if layer and masks is not None and masks[layer - 1] is not None:
            inp = inp * masks[layer - 1]
        outs = []
        for d in range(D):
            s, k = suffix(layer, d), layer * D + d
            y, h, c, cache = reference.lstm_forward(
                inp, sd[f"weight_ih{s}"], sd[f"weight_hh{s}"], sd.get(f"bias_ih{s}"), sd.get(f"bias_hh{s}"),
                None if hx is None else hx[0][k], None if hx is None else hx[1][k],
                w_hr=sd.get(f"weight_hr{s}"), peephole=sd.get(f"peephole{s}"),
                lengths=lengths, reverse=bool(d), batch_first=batch_first,
            )
            outs.append(y)
            h_n.append(h)
            c_n.append(c)
            caches.append(cache)
        inp = np.concatenate(outs, axis=2)
    forward = inp, np.stack(h_n), np.stack(c_n)
    if dy is None and dhx is None:
        return forward, None

    grads, dh0, dc0 = {}, [None] * (L * D), [None] * (L * D)
    d_out = dy
    for layer in reversed(range(L)):
        d_in = 0
        for d in range(D):
            s, k = suffix(layer, d), layer * D + d
            g = reference.lstm_backward(
                caches[k], d_out[..., d * P : (d + 1) * P], dhx[0][k], dhx[1][k]
            )
            d_in = d_in + g.dx
            dh0[k], dc0[k] = g.dh0, g.dc0
            grads[f"weight_ih{s}"], grads[f"weight_hh{s}"] = g.dw_ih, g.dw_hh
            if m.bias:
                grads[f"bias_ih{s}"] = grads[f"bias_hh{s}"] = g.db
            if m.proj_size:
                grads[f"weight_hr{s}"] = g.dw_hr
            if m.peephole:
                grads[f"peephole{s}"] = g.dpeephole
        if layer and masks is not None and masks[layer - 1] is not None:
            d_in = d_in * masks[layer - 1]
        d_out = d_in
    return forward, (d_out, np.stack(dh0), np.stack(dc0), grads)


def random_inputs(m, rng, *, unbatched=False, hx=True, dtype=None):
    dtype = dtype or m.dtype
    L, D = m.num_layers, m.num_directions
    batch = () if unbatched else (B,)
    if unbatched:
        x_shape = (T, I)
    else:
        x_shape = (B, T, I) if m.batch_first else (T, B, I)
    x = rng.standard_normal(x_shape).astype(dtype)
    h_shape, c_shape = (L * D, *batch, m.output_size), (L * D, *batch, m.hidden_size)
    state = None
    if hx:
        state = (rng.standard_normal(h_shape).astype(dtype) * 0.5, rng.standard_normal(c_shape).astype(dtype))
    out_grads = (rng.standard_normal(h_shape).astype(dtype), rng.standard_normal(c_shape).astype(dtype))
    return x, state, out_grads


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
def test_layer_matches_reference_composed_by_hand(config, lengths, dtype):
    m = LSTM(I, H, dtype=dtype, seed=1, **CONFIGS[config])
    rng = np.random.default_rng(2)
    x, hx, dhx = random_inputs(m, rng)
    y, (h_n, c_n) = m(x, hx, lengths=lengths)
    masks = m._trace.masks
    assert (m.dropout > 0) == any(mask is not None for mask in masks)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, (dh0, dc0) = m.backward(dy, dhx)
    expected, (e_dx, e_dh0, e_dc0, e_grads) = composed(m, x, hx, lengths, masks, dy, dhx)
    for what, a, b in zip(["y", "h_n", "c_n", "dx", "dh0", "dc0"], (y, h_n, c_n, dx, dh0, dc0),
                          (*expected, e_dx, e_dh0, e_dc0)):
        assert a.dtype == dtype and a.shape == b.shape, what
        np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=what)
    assert list(m.grads) == list(m.state_dict())
    for name, g in m.grads.items():
        assert g.dtype == dtype and g.shape == m.state_dict()[name].shape, name
        np.testing.assert_allclose(g, e_grads[name], **TOL[dtype], err_msg=name)


@pytest.mark.parametrize("config", ["one_layer", "bidirectional_2", "everything"])
def test_unbatched_is_a_batch_of_one(config):
    m = LSTM(I, H, dtype=np.float64, seed=3, **CONFIGS[config])
    rng = np.random.default_rng(4)
    x, hx, dhx = random_inputs(m, rng, unbatched=True)
    y, (h_n, c_n) = m(x, hx)
    assert y.shape == (T, m.num_directions * m.output_size)
    assert h_n.shape == (m.num_layers * m.num_directions, m.output_size)
    assert c_n.shape == (m.num_layers * m.num_directions, H)
    dy = rng.standard_normal(y.shape)
    dx, (dh0, dc0) = m.backward(dy, dhx)
    assert dx.shape == x.shape and dh0.shape == h_n.shape and dc0.shape == c_n.shape

    # The same as a batch of one (in batch_first layout when the module is batch_first).
    xb = x[None] if m.batch_first else x[:, None]
    yb, (hb, cb) = m(xb, (hx[0][:, None], hx[1][:, None]))
    dxb, (dhb, dcb) = m.backward(dy[None] if m.batch_first else dy[:, None],
                                 (dhx[0][:, None], dhx[1][:, None]))
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
    rng = np.random.default_rng(6)
    x, hx, dhx = random_inputs(a, rng)
    ya, sa = a(x, hx, lengths=LENGTHS)
    yb, sb = b(x.transpose(1, 0, 2), hx, lengths=LENGTHS)
    np.testing.assert_allclose(yb, ya.transpose(1, 0, 2), rtol=1e-13)
    dy = rng.standard_normal(ya.shape)
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
    x, hx, dhx = random_inputs(m, rng, unbatched=run.get("unbatched", False))
    lengths = run.get("lengths")
    masks_from = copy.deepcopy(m.dropout_rng)

    def run_forward(x, hx):
        m.dropout_rng = copy.deepcopy(masks_from)  # the same dropout masks every time
        return m(x, hx, lengths=lengths)

    y, _ = run_forward(x, hx)
    dy = rng.standard_normal(y.shape)

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
    "options", [dict(), dict(num_layers=3), dict(num_layers=2, proj_size=3, peephole=True)],
    ids=["one_layer", "stacked", "proj_peephole"],
)
def test_stepping_equals_one_forward(options, unbatched):
    m = LSTM(I, H, dtype=np.float64, seed=9, dropout=0.0, **options)
    rng = np.random.default_rng(10)
    x, hx, _ = random_inputs(m, rng, unbatched=unbatched)
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
    for name, value in LSTM(I, H, seed=42, dtype=np.float64, **options).state_dict().items():
        np.testing.assert_array_equal(value, rng.uniform(-bound, bound, value.shape))
    assert not np.array_equal(LSTM(I, H).state_dict()["weight_ih_l0"], LSTM(I, H).state_dict()["weight_ih_l0"])


def test_dropout_masks_are_inverted_dropout():
    m = LSTM(I, 50, num_layers=2, dropout=0.25, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((20, 8, I))
    m(x)
    (mask,) = m._trace.masks
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    assert abs((mask == 0).mean() - 0.25) < 0.03


# ----------------------------------------------------------------------------- state dicts and grads


def test_state_dict_names_shapes_and_copies():
    m = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, peephole=True)
    sd = m.state_dict()
    expected = {}
    for layer, inputs in ((0, I), (1, 4)):
        for d in (0, 1):
            s = suffix(layer, d)
            expected.update({
                f"weight_ih{s}": (4 * H, inputs), f"weight_hh{s}": (4 * H, 2),
                f"bias_ih{s}": (4 * H,), f"bias_hh{s}": (4 * H,),
                f"weight_hr{s}": (2, H), f"peephole{s}": (3, H),
            })
    assert {k: v.shape for k, v in sd.items()} == expected
    assert list(sd) == list(expected)
    assert all(v.dtype == np.float32 for v in sd.values())
    sd["weight_ih_l0"][:] = 7
    assert not (m.state_dict()["weight_ih_l0"] == 7).any()
    assert list(LSTM(I, H, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]


def test_load_state_dict_converts_copies_and_is_atomic():
    m = LSTM(I, H, dtype=np.float32)
    source = LSTM(I, H, dtype=np.float64, seed=1).state_dict()
    as_lists = {k: v.tolist() for k, v in source.items()}
    m.load_state_dict(as_lists)
    for name, value in m.state_dict().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, source[name].astype(np.float32))
    mine = m.state_dict()
    source["weight_hh_l0"][:] = 0  # the loaded values are copies
    m.load_state_dict(as_lists)
    bad = {**m.state_dict(), "weight_ih_l0": np.ones((4 * H, I)), "bias_hh_l0": np.zeros(3)}
    with pytest.raises(ValueError, match=r"bias_hh_l0.*\(24,\).*\(3,\)"):
        m.load_state_dict(bad)
    for name, value in m.state_dict().items():  # nothing changed
        np.testing.assert_array_equal(value, mine[name])


def test_load_state_dict_names_missing_and_unexpected_keys():
    m = LSTM(I, H, peephole=True)
    sd = LSTM(I, H, proj_size=2).state_dict()  # what torch would give with proj_size=2
    with pytest.raises(ValueError) as info:
        m.load_state_dict(sd)
    message = str(info.value)
    assert "missing keys ['peephole_l0']" in message
    assert "unexpected keys ['weight_hr_l0']" in message
    assert "strict=False" in message
    # weight_hh_l0 has the wrong shape for this module (P=2 columns, not H).
    with pytest.raises(ValueError, match=r"weight_hh_l0.*\(24, 6\).*\(24, 2\)"):
        m.load_state_dict(sd, strict=False)
    peep = m.state_dict()["peephole_l0"]
    m.load_state_dict({"weight_ih_l0": np.zeros((4 * H, I)), "extra": 1}, strict=False)
    assert not m.state_dict()["weight_ih_l0"].any()
    np.testing.assert_array_equal(m.state_dict()["peephole_l0"], peep)
    with pytest.raises(TypeError, match="mapping"):
        m.load_state_dict([("weight_ih_l0", np.zeros((4 * H, I)))])
    with pytest.raises(TypeError, match="real numbers"):
        m.load_state_dict({**m.state_dict(), "peephole_l0": np.full((3, H), "a")})


def test_grads_replace_rather_than_accumulate():
    m = LSTM(I, H, num_layers=2, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    y, _ = m(x)
    m.backward(np.ones_like(y))
    first = {k: v.copy() for k, v in m.grads.items()}
    m.backward(np.ones_like(y))  # a second backward of the same forward
    for name, value in m.grads.items():
        np.testing.assert_array_equal(value, first[name])
    assert m.grads["bias_ih_l0"] is not m.grads["bias_hh_l0"]
    np.testing.assert_array_equal(m.grads["bias_ih_l0"], m.grads["bias_hh_l0"])
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
    for a, b in zip((y1, h1, c1), kept):
        np.testing.assert_array_equal(a, b)  # earlier outputs untouched
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
    twin.params["weight_ih_l0"][:] = 0
    assert m.state_dict()["weight_ih_l0"].any()


def test_integer_input_and_default_dtype():
    m = LSTM(2, 3, seed=0)
    assert m.dtype == np.float32
    y, (h, c) = m([[[1, 0]], [[0, 1]]])
    assert y.dtype == h.dtype == c.dtype == np.float32 and y.shape == (2, 1, 3)


def test_repr():
    assert repr(LSTM(I, H)) == "LSTM(4, 6)"
    r = repr(LSTM(I, H, 2, batch_first=True, dropout=0.5, bidirectional=True, proj_size=3,
                  peephole=True, dtype=np.float64))
    assert r == ("LSTM(4, 6, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True, "
                 "proj_size=3, peephole=True, dtype=float64)")


# ----------------------------------------------------------------------------- errors


CONSTRUCTOR_ERRORS = {
    "input_size_zero": (dict(input_size=0), ValueError, ["input_size", ">= 1", "0"]),
    "hidden_size_negative": (dict(hidden_size=-2), ValueError, ["hidden_size", "-2"]),
    "hidden_size_float": (dict(hidden_size=6.0), TypeError, ["hidden_size", "int", "6.0"]),
    "num_layers_zero": (dict(num_layers=0), ValueError, ["num_layers", ">= 1"]),
    "num_layers_bool": (dict(num_layers=True), TypeError, ["num_layers"]),
    "proj_negative": (dict(proj_size=-1), ValueError, ["proj_size", ">= 0"]),
    "proj_too_big": (dict(proj_size=H), ValueError, ["proj_size", "smaller than hidden_size", "6"]),
    "dropout_high": (dict(dropout=1.5), ValueError, ["dropout", "[0, 1]", "1.5"]),
    "dropout_negative": (dict(dropout=-0.1), ValueError, ["dropout", "-0.1"]),
    "dropout_nan": (dict(dropout=float("nan")), ValueError, ["dropout", "nan"]),
    "dropout_string": (dict(dropout="0.5"), TypeError, ["dropout", "'0.5'"]),
    "dtype_float16": (dict(dtype=np.float16), TypeError, ["dtype", "float16", "float32 or numpy.float64"]),
    "dtype_nonsense": (dict(dtype="banana"), TypeError, ["dtype", "banana"]),
    "seed_negative": (dict(seed=-1), ValueError, ["seed", "-1"]),
    "seed_float": (dict(seed=1.5), TypeError, ["seed", "1.5"]),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_ERRORS)
def test_constructor_rejects_bad_arguments(case):
    change, error, words = CONSTRUCTOR_ERRORS[case]
    args = {**dict(input_size=I, hidden_size=H, num_layers=2), **change}
    with pytest.raises(error) as info:
        LSTM(**args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match="num_layers=1"):
        LSTM(I, H, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LSTM(I, H, num_layers=2, dropout=0.5)


L2D = 4  # num_layers=2, bidirectional
CALL_ERRORS = {
    "x_1d": (dict(x=np.zeros(I)), ValueError, ["x", "3-D", "2-D", "(4,)"]),
    "x_4d": (dict(x=np.zeros((T, B, I, 1))), ValueError, ["x", "(5, 3, 4, 1)"]),
    "x_features": (dict(x=np.zeros((T, B, I + 1))), ValueError, ["x", "5 features", "input_size=4"]),
    "x_float32": (dict(x=np.zeros((T, B, I), np.float32)), TypeError, ["x", "float32", "float64", "astype"]),
    "x_complex": (dict(x=np.zeros((T, B, I), complex)), TypeError, ["x", "real"]),
    "hx_not_pair": (dict(hx=np.zeros((L2D, B, H))), TypeError, ["hx", "tuple (h, c)", "ndarray"]),
    "hx_three": (dict(hx=(None, None, None)), TypeError, ["hx", "length 3"]),
    "h0_layers": (dict(hx=(np.zeros((2, B, H)), None)), ValueError, ["hx[0]", "(4, 3, 6)", "(2, 3, 6)"]),
    "c0_batch": (dict(hx=(None, np.zeros((L2D, B + 1, H)))), ValueError, ["hx[1]", "(4, 3, 6)", "(4, 4, 6)"]),
    "h0_2d_for_batched": (dict(hx=(np.zeros((L2D, H)), None)), ValueError, ["hx[0]", "(4, 3, 6)", "(4, 6)"]),
    "h0_dtype": (dict(hx=(np.zeros((L2D, B, H), np.float32), None)), TypeError, ["hx[0]", "float32"]),
    "h0_3d_for_unbatched": (
        dict(x=np.zeros((T, I)), hx=(np.zeros((L2D, 1, H)), None)), ValueError,
        ["hx[0]", "(4, 6)", "(4, 1, 6)", "unbatched 2-D input takes 2-D states"],
    ),
    "lengths_unbatched": (dict(x=np.zeros((T, I)), lengths=[T]), ValueError, ["lengths", "batched"]),
    "lengths_too_long": (dict(lengths=[1, 2, T + 1]), ValueError, ["lengths", "[0, 5]"]),
    "lengths_count": (dict(lengths=[1, 2]), ValueError, ["lengths", "(3,)", "(2,)"]),
    "lengths_float": (dict(lengths=[1.0, 2.0, 3.0]), TypeError, ["lengths", "integers"]),
}


@pytest.mark.parametrize("case", CALL_ERRORS)
def test_forward_rejects_bad_arguments(case):
    change, error, words = CALL_ERRORS[case]
    m = LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64)
    args = dict(x=np.zeros((T, B, I)), hx=None, lengths=None)
    args.update(change)
    with pytest.raises(error) as info:
        m(args["x"], args["hx"], lengths=args["lengths"])
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_backward_rejects_bad_arguments():
    m = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64)
    y, (h, c) = m(np.zeros((T, B, I)))
    with pytest.raises(ValueError, match=r"dy.*\(5, 3, 4\).*\(5, 3, 2\)"):
        m.backward(np.zeros((T, B, 2)))
    with pytest.raises(TypeError, match="dy.*float32"):
        m.backward(np.zeros(y.shape, np.float32))
    with pytest.raises(ValueError, match=r"dhx\[0\].*\(4, 3, 2\).*\(4, 3, 6\)"):
        m.backward(None, (np.zeros((4, B, H)), None))
    with pytest.raises(ValueError, match=r"dhx\[1\].*\(4, 3, 6\).*\(4, 3, 2\)"):
        m.backward(None, (h, h))
    with pytest.raises(TypeError, match="dhx"):
        m.backward(None, h)
    dx, (dh0, dc0) = m.backward(None, (h, c))
    assert dx.shape == (T, B, I) and dh0.shape == h.shape and dc0.shape == c.shape


def test_step_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unidirectional"):
        LSTM(I, H, bidirectional=True).step(np.zeros((B, I), np.float32))
    m = LSTM(I, H, num_layers=2, dtype=np.float64)
    with pytest.raises(ValueError, match=r"x_t.*input_size=4.*\(3, 5\)"):
        m.step(np.zeros((B, I + 1)))
    with pytest.raises(ValueError, match=r"x_t.*\(1, 3, 4\)"):
        m.step(np.zeros((1, B, I)))
    with pytest.raises(TypeError, match="x_t.*float32"):
        m.step(np.zeros((B, I), np.float32))
    with pytest.raises(ValueError, match=r"hx\[0\].*\(2, 3, 6\).*\(1, 3, 6\)"):
        m.step(np.zeros((B, I)), (np.zeros((1, B, H)), np.zeros((2, B, H))))
