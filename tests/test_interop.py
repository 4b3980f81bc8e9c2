"""lstm_c.interop: exact conversions to and from Keras/TensorFlow and ONNX layouts.

- Round trips are exact (array equality, dtype preserved).
- Semantics without frameworks: hand-written NumPy forwards in Keras's and in
  ONNX's conventions equal lstm_c (reference and kernels) on converted weights.
- Against ONNX Runtime where installed (skipped where not).
- Refusals name the attribute or argument.

Tests that pass ``peephole=`` to lstm_forward need the peephole kernel.
"""

import subprocess
import sys

import numpy as np
import pytest
from helpers import DTYPES, assert_mentions, tol
from scipy.special import expit

import lstm_c
from lstm_c import reference
from lstm_c._params import KINDS, layer_param_names, param_name, parse_param_name
from lstm_c.interop import (
    from_keras,
    from_onnx,
    from_onnx_node,
    onnx_attributes,
    to_keras,
    to_onnx,
)

W_IH, W_HH, B_IH, B_HH, W_HR, PEEPHOLE = (param_name(kind, 0) for kind in KINDS)  # of layer 0
FORWARDS = {"reference": reference.lstm_forward, "kernel": lstm_c.lstm_forward}


def rand(rng, shape, dtype, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def state_dict(rng, I, H, dtype, *, bias=True, peephole=False, bidirectional=False, proj=0, layers=1):
    """A random lstm_c/PyTorch state_dict."""
    sd = {}
    D = 2 if bidirectional else 1
    for names in layer_param_names(layers, D, bias=bias, projection=proj > 0, peephole=peephole):
        sd[names.w_ih] = rand(rng, (4 * H, I), dtype)
        sd[names.w_hh] = rand(rng, (4 * H, proj or H), dtype)
        if bias:
            sd[names.b_ih] = rand(rng, 4 * H, dtype)
            sd[names.b_hh] = rand(rng, 4 * H, dtype)
        if proj:
            sd[names.w_hr] = rand(rng, (proj, H), dtype)
        if peephole:
            sd[names.peephole] = rand(rng, (3, H), dtype)
    return sd


def assert_same_dict(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def run_direction(forward, sd, x, *, reverse=False, **kw):
    """lstm_forward for one direction of a one-layer state_dict (peephole only if present)."""
    n = {kind: param_name(kind, 0, reverse) for kind in KINDS}
    extra = {"peephole": sd[n["peephole"]]} if n["peephole"] in sd else {}
    y, h, c, _ = forward(
        x,
        sd[n["weight_ih"]],
        sd[n["weight_hh"]],
        sd.get(n["bias_ih"]),
        sd.get(n["bias_hh"]),
        reverse=reverse,
        training=False,
        **kw,
        **extra,
    )
    return y, h, c


# ----------------------------------------------------------------------------
# Hand-written forwards in the foreign conventions (the semantic oracles)


def keras_forward(x, kernel, recurrent_kernel, bias, h0, c0):
    """Keras's LSTM (time-major x (T, B, I)): z = x k + h r + b, gate blocks i, f, c, o."""
    H = recurrent_kernel.shape[0]
    h, c, ys = h0, c0, []
    for x_t in x:
        z = x_t @ kernel + h @ recurrent_kernel + (0 if bias is None else bias)
        i, f, cc, o = (z[:, k * H : (k + 1) * H] for k in range(4))
        c = expit(f) * c + expit(i) * np.tanh(cc)
        h = expit(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


def onnx_forward(X, W, R, B, P, h0, c0, seq_lens, direction):
    """The ONNX LSTM operator (layout 0) as its spec writes it, one direction index d of D.

    Gate blocks i, o, f, c; peepholes i, o, f. Returns Y[:, d] (T, B, H), Y_h[d], Y_c[d],
    with Y 0 past each row's length; the reverse direction (d = 1 of a bidirectional
    node, or a "reverse" node) runs t = seq_lens[b]-1 ... 0 per row.
    """
    T, Bsz, _ = X.shape
    D, fourH, _ = W.shape
    H = fourH // 4
    out = []
    for d in range(D):
        reverse = direction == "reverse" or d == 1
        Wi, Wo, Wf, Wc = np.split(W[d], 4)
        Ri, Ro, Rf, Rc = np.split(R[d], 4)
        bias = np.zeros(8 * H, X.dtype) if B is None else B[d]
        Wbi, Wbo, Wbf, Wbc, Rbi, Rbo, Rbf, Rbc = np.split(bias, 8)
        Pi, Po, Pf = np.split(np.zeros(3 * H, X.dtype) if P is None else P[d], 3)
        Y = np.zeros((T, Bsz, H), X.dtype)
        Yh, Yc = h0[d].copy(), c0[d].copy()
        for b in range(Bsz):
            h, c = h0[d, b], c0[d, b]
            steps = range(seq_lens[b] - 1, -1, -1) if reverse else range(seq_lens[b])
            for t in steps:
                xt = X[t, b]
                it = expit(xt @ Wi.T + h @ Ri.T + Pi * c + Wbi + Rbi)
                ft = expit(xt @ Wf.T + h @ Rf.T + Pf * c + Wbf + Rbf)
                ct = np.tanh(xt @ Wc.T + h @ Rc.T + Wbc + Rbc)
                c = ft * c + it * ct
                ot = expit(xt @ Wo.T + h @ Ro.T + Po * c + Wbo + Rbo)
                h = ot * np.tanh(c)
                Y[t, b] = h
            Yh[b], Yc[b] = h, c
        out.append((Y, Yh, Yc))
    return out


# ----------------------------------------------------------------------------
# Keras: round trips and semantics


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_keras_round_trip_from_keras_side(dtype, bias):
    rng = np.random.default_rng(0)
    I, H = 5, 3
    k, r = rand(rng, (I, 4 * H), dtype), rand(rng, (H, 4 * H), dtype)
    b = rand(rng, 4 * H, dtype) if bias else None
    sd = from_keras(k, r, b)
    expected_keys = {W_IH, W_HH} | ({B_IH, B_HH} if bias else set())
    assert set(sd) == expected_keys
    assert sd[W_IH].shape == (4 * H, I) and sd[W_HH].shape == (4 * H, H)
    for value in sd.values():
        assert value.dtype == dtype and value.flags.c_contiguous
    if bias:
        np.testing.assert_array_equal(sd[B_IH], b)
        np.testing.assert_array_equal(sd[B_HH], 0)
    k2, r2, b2 = to_keras(sd)
    for got, want in ((k2, k), (r2, r)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    if bias:
        assert b2.dtype == dtype
        np.testing.assert_array_equal(b2, b)
    else:
        assert b2 is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_round_trip_state_dict_side(dtype):
    rng = np.random.default_rng(1)
    sd = state_dict(rng, 4, 3, dtype)
    # With bias_hh = 0 (what from_keras produces) the round trip is exact key by key.
    sd[B_HH][:] = 0
    assert_same_dict(from_keras(*to_keras(sd)), sd)
    # Otherwise the biases are summed: equal in function, bias_ih carries the sum.
    sd = state_dict(rng, 4, 3, dtype)
    back = from_keras(*to_keras(sd))
    np.testing.assert_array_equal(back[B_IH], sd[B_IH] + sd[B_HH])
    np.testing.assert_array_equal(back[B_HH], 0)
    # Only one of the biases present.
    del sd[B_HH]
    np.testing.assert_array_equal(to_keras(sd)[2], sd[B_IH])


def test_keras_layer_and_reverse_keys():
    rng = np.random.default_rng(2)
    sd = state_dict(rng, 4, 3, np.float64, bidirectional=True, layers=2)
    for layer in (0, 1):
        for reverse in (False, True):
            part = from_keras(*to_keras(sd, layer=layer, reverse=reverse), layer=layer, reverse=reverse)
            n = {kind: param_name(kind, layer, reverse) for kind in KINDS}
            assert set(part) == {n[kind] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            np.testing.assert_array_equal(part[n["weight_hh"]], sd[n["weight_hh"]])
            np.testing.assert_array_equal(part[n["bias_ih"]], sd[n["bias_ih"]] + sd[n["bias_hh"]])


def test_outputs_are_new_arrays():
    rng = np.random.default_rng(3)
    k, r, b = rand(rng, (2, 8), np.float32), rand(rng, (2, 8), np.float32), rand(rng, 8, np.float32)
    sd = from_keras(k, r, b)
    sd[B_IH][:] = 7
    sd[W_IH][:] = 7
    assert not (b == 7).any() and not (k == 7).any()
    k2, _, b2 = to_keras(sd)
    k2[:] = 0
    b2[:] = 0
    assert (sd[W_IH] == 7).all() and (sd[B_IH] == 7).all()


@pytest.mark.parametrize("impl", FORWARDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_keras_semantics(impl, dtype, bias):
    """A NumPy LSTM in Keras's convention equals lstm_c on from_keras weights."""
    rng = np.random.default_rng(4)
    T, B, I, H = 6, 3, 4, 5
    k, r = rand(rng, (I, 4 * H), dtype), rand(rng, (H, 4 * H), dtype)
    b = rand(rng, 4 * H, dtype) if bias else None
    x, h0, c0 = rand(rng, (T, B, I), dtype, 1.0), rand(rng, (B, H), dtype), rand(rng, (B, H), dtype)
    want = keras_forward(x, k, r, b, h0, c0)
    sd = from_keras(k, r, b)
    got = run_direction(FORWARDS[impl], sd, x, h0=h0, c0=c0)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **tol(dtype))
    # go_backwards: same weights, run with reverse=True; Keras's sequence output is in
    # processing order, i.e. lstm_c's y flipped in time.
    want = keras_forward(x[::-1], k, r, b, h0, c0)
    sd = from_keras(k, r, b, reverse=True)
    got = run_direction(FORWARDS[impl], sd, x, reverse=True, h0=h0, c0=c0)
    np.testing.assert_allclose(got[0][::-1], want[0], **tol(dtype))
    np.testing.assert_allclose(got[1], want[1], **tol(dtype))


# ----------------------------------------------------------------------------
# ONNX: round trips, layout and semantics


def onnx_arrays(rng, D, I, H, dtype, *, bias=True, peephole=False):
    return dict(
        W=rand(rng, (D, 4 * H, I), dtype),
        R=rand(rng, (D, 4 * H, H), dtype),
        B=rand(rng, (D, 8 * H), dtype) if bias else None,
        P=rand(rng, (D, 3 * H), dtype) if peephole else None,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("peephole", [True, False])
def test_onnx_round_trips(dtype, D, bias, peephole):
    rng = np.random.default_rng(5)
    I, H = 4, 3
    arrays = onnx_arrays(rng, D, I, H, dtype, bias=bias, peephole=peephole)
    sd = from_onnx(**arrays)
    directions = [False, True][:D]
    kinds = ["weight_ih", "weight_hh"] + ["bias_ih", "bias_hh"] * bias + ["peephole"] * peephole
    assert set(sd) == {param_name(k, 0, reverse) for k in kinds for reverse in directions}
    for reverse in directions:
        assert sd[param_name("weight_ih", 0, reverse)].shape == (4 * H, I)
        assert sd[param_name("weight_hh", 0, reverse)].shape == (4 * H, H)
        if peephole:
            assert sd[param_name("peephole", 0, reverse)].shape == (3, H)
    for value in sd.values():
        assert value.dtype == dtype and value.flags.c_contiguous
    back = to_onnx(sd)
    assert_same_dict(back, {k: v for k, v in arrays.items() if v is not None})
    assert onnx_attributes(sd) == {"hidden_size": H, "direction": ["forward", "bidirectional"][D - 1]}
    # And from the state_dict side.
    sd2 = state_dict(rng, I, H, dtype, bias=bias, peephole=peephole, bidirectional=D == 2)
    assert_same_dict(from_onnx(**{**dict(B=None, P=None), **to_onnx(sd2)}), sd2)


def test_onnx_reverse_only_uses_reverse_keys():
    rng = np.random.default_rng(6)
    arrays = onnx_arrays(rng, 1, 4, 3, np.float32, peephole=True)
    sd = from_onnx(**arrays, direction="reverse")
    assert all(parse_param_name(key)[1:] == (0, True) for key in sd)
    assert onnx_attributes(sd) == {"hidden_size": 3, "direction": "reverse"}
    assert_same_dict(to_onnx(sd), arrays)


def test_onnx_gate_and_peephole_order():
    """Label every ONNX block with its name and check where it lands."""
    H, I = 2, 3
    onnx_gates, ours_gates = "iofg", "ifgo"  # ONNX's order i, o, f, c, writing its c as our g
    block = {g: np.full((H, I), 10.0 * (n + 1)) for n, g in enumerate("ifgo")}
    W = np.concatenate([block[g] for g in onnx_gates])[None]
    R = np.concatenate([block[g][:, :H] + 1 for g in onnx_gates])[None]
    B = np.concatenate([block[g][:, 0] + off for off in (2, 3) for g in onnx_gates])[None]
    P = np.concatenate([np.full(H, {"i": 1.0, "f": 2.0, "o": 3.0}[g]) for g in "iof"])[None]
    sd = from_onnx(W, R, B, P)
    for n, g in enumerate(ours_gates):
        rows = slice(n * H, (n + 1) * H)
        np.testing.assert_array_equal(sd[W_IH][rows], block[g])
        np.testing.assert_array_equal(sd[W_HH][rows], block[g][:, :H] + 1)
        np.testing.assert_array_equal(sd[B_IH][rows], block[g][:, 0] + 2)
        np.testing.assert_array_equal(sd[B_HH][rows], block[g][:, 0] + 3)
    np.testing.assert_array_equal(sd[PEEPHOLE], [[1.0] * H, [2.0] * H, [3.0] * H])  # i, f, o


def test_onnx_layout_1_accepted_weights_unchanged():
    rng = np.random.default_rng(7)
    arrays = onnx_arrays(rng, 2, 4, 3, np.float64)
    assert_same_dict(from_onnx(**arrays, layout=1), from_onnx(**arrays))
    assert_same_dict(
        from_onnx(
            **arrays, activations=["sigmoid", "TANH", "Tanh"] * 2, input_forget=0, direction="bidirectional"
        ),
        from_onnx(**arrays),
    )


@pytest.mark.parametrize("impl", FORWARDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("peephole", [False, True])
def test_onnx_semantics(impl, dtype, peephole):
    """The ONNX spec's equations in NumPy equal lstm_c per direction on from_onnx weights."""
    rng = np.random.default_rng(8)
    T, Bsz, I, H, D = 6, 4, 3, 5, 2
    arrays = onnx_arrays(rng, D, I, H, dtype, peephole=peephole)
    X = rand(rng, (T, Bsz, I), dtype, 1.0)
    h0, c0 = rand(rng, (D, Bsz, H), dtype), rand(rng, (D, Bsz, H), dtype)
    lens = np.array([6, 2, 5, 1])
    want = onnx_forward(X, **arrays, h0=h0, c0=c0, seq_lens=lens, direction="bidirectional")
    sd = from_onnx(**arrays)
    for d in range(2):
        got = run_direction(FORWARDS[impl], sd, X, reverse=d == 1, h0=h0[d], c0=c0[d], lengths=lens)
        for g, w in zip(got, want[d]):
            assert g.dtype == dtype
            np.testing.assert_allclose(g, w, **tol(dtype))


# ----------------------------------------------------------------------------
# Against ONNX Runtime


def onnx_model(arrays, *, hidden_size, direction, dtype=np.float32, attrs=None, opset=14):
    """An ONNX model with one LSTM node; weights as initializers, X/lengths/states as inputs."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    inputs = [n if n not in "BP" or arrays.get(n) is not None else "" for n in names]
    node = helper.make_node(
        "LSTM",
        inputs,
        ["Y", "Y_h", "Y_c"],
        name="lstm",
        hidden_size=hidden_size,
        direction=direction,
        **(attrs or {}),
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, elem, [None] * 3) for n in ("X", "initial_h", "initial_c")]
        + [helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [None])],
        [helper.make_tensor_value_info("Y", elem, [None] * 4)]
        + [helper.make_tensor_value_info(n, elem, [None] * 3) for n in ("Y_h", "Y_c")],
        initializer=[numpy_helper.from_array(v, n) for n, v in arrays.items() if v is not None],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_ort(model, X, lens, h0, c0):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = dict(X=X, sequence_lens=np.asarray(lens, np.int32), initial_h=h0, initial_c=c0)
    return session.run(["Y", "Y_h", "Y_c"], feeds)


ORT_TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("peephole", [False, True])
def test_onnxruntime_bidirectional(peephole):
    """ORT's bidirectional LSTM (peepholes, sequence_lens, initial states) equals lstm_c."""
    rng = np.random.default_rng(9)
    T, Bsz, I, H, D = 7, 5, 4, 6, 2
    arrays = onnx_arrays(rng, D, I, H, np.float32, peephole=peephole)
    model = onnx_model(arrays, hidden_size=H, direction="bidirectional")
    X = rand(rng, (T, Bsz, I), np.float32, 1.0)
    h0, c0 = rand(rng, (D, Bsz, H), np.float32), rand(rng, (D, Bsz, H), np.float32)
    lens = np.array([7, 3, 1, 6, 7])
    Y, Y_h, Y_c = run_ort(model, X, lens, h0, c0)
    assert Y.shape == (T, D, Bsz, H) and Y_h.shape == Y_c.shape == (D, Bsz, H)

    # ORT zeroes Y past each row's length, as lstm_c does.
    past = np.arange(T)[:, None] >= lens[None, :]  # (T, B)
    assert (Y.transpose(0, 2, 1, 3)[past] == 0).all()
    # The NumPy oracle of the spec agrees with ORT (so it is a fair oracle elsewhere).
    spec = onnx_forward(X, **arrays, h0=h0, c0=c0, seq_lens=lens, direction="bidirectional")
    for d in range(D):
        np.testing.assert_allclose(Y[:, d], spec[d][0], **ORT_TOL)

    for sd in (from_onnx(**arrays), from_onnx_node(model.graph.node[0], model.graph.initializer)):
        for d in range(2):
            y, h, c = run_direction(
                lstm_c.lstm_forward, sd, X, reverse=d == 1, h0=h0[d], c0=c0[d], lengths=lens
            )
            assert y.dtype == np.float32
            np.testing.assert_allclose(y, Y[:, d], **ORT_TOL)
            np.testing.assert_allclose(h, Y_h[d], **ORT_TOL)
            np.testing.assert_allclose(c, Y_c[d], **ORT_TOL)


def test_onnxruntime_zero_length_rows_differ_in_final_state():
    """Documented difference: for a row of length 0 ORT returns Y_h = Y_c = 0, lstm_c h0, c0."""
    rng = np.random.default_rng(10)
    T, Bsz, I, H, D = 4, 3, 2, 3, 2
    arrays = onnx_arrays(rng, D, I, H, np.float32)
    model = onnx_model(arrays, hidden_size=H, direction="bidirectional")
    X = rand(rng, (T, Bsz, I), np.float32, 1.0)
    h0, c0 = rand(rng, (D, Bsz, H), np.float32), rand(rng, (D, Bsz, H), np.float32)
    lens = np.array([4, 0, 2])
    Y, Y_h, Y_c = run_ort(model, X, lens, h0, c0)
    sd = from_onnx(**arrays)
    for d in range(2):
        y, h, c = run_direction(lstm_c.lstm_forward, sd, X, reverse=d == 1, h0=h0[d], c0=c0[d], lengths=lens)
        np.testing.assert_allclose(y, Y[:, d], **ORT_TOL)  # Y: zeros for the empty row in both
        rows = lens > 0
        np.testing.assert_allclose(h[rows], Y_h[d][rows], **ORT_TOL)
        np.testing.assert_allclose(c[rows], Y_c[d][rows], **ORT_TOL)
        assert (Y_h[d][~rows] == 0).all() and (Y_c[d][~rows] == 0).all()
        np.testing.assert_array_equal(h[~rows], h0[d][~rows])
        np.testing.assert_array_equal(c[~rows], c0[d][~rows])


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_onnxruntime_one_direction_node(direction):
    rng = np.random.default_rng(11)
    T, Bsz, I, H = 5, 3, 4, 3
    arrays = onnx_arrays(rng, 1, I, H, np.float32, peephole=False)
    model = onnx_model(arrays, hidden_size=H, direction=direction)
    X = rand(rng, (T, Bsz, I), np.float32, 1.0)
    h0, c0 = rand(rng, (1, Bsz, H), np.float32), rand(rng, (1, Bsz, H), np.float32)
    lens = np.array([5, 2, 4])
    Y, Y_h, Y_c = run_ort(model, X, lens, h0, c0)
    sd = from_onnx_node(model.graph.node[0], {t.name: t for t in model.graph.initializer})
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    assert set(sd) == {param_name(k, 0, direction == "reverse") for k in kinds}
    y, h, c = run_direction(
        lstm_c.lstm_forward, sd, X, reverse=direction == "reverse", h0=h0[0], c0=c0[0], lengths=lens
    )
    np.testing.assert_allclose(y, Y[:, 0], **ORT_TOL)
    np.testing.assert_allclose(h, Y_h[0], **ORT_TOL)
    np.testing.assert_allclose(c, Y_c[0], **ORT_TOL)


@pytest.mark.parametrize("peephole", [False, True])
def test_to_onnx_model_runs_in_onnxruntime(peephole):
    """A state_dict exported with to_onnx/onnx_attributes computes in ORT what lstm_c computes."""
    rng = np.random.default_rng(12)
    T, Bsz, I, H = 5, 3, 4, 3
    sd = state_dict(rng, I, H, np.float32, peephole=peephole, bidirectional=True)
    model = onnx_model(to_onnx(sd), **onnx_attributes(sd))
    X = rand(rng, (T, Bsz, I), np.float32, 1.0)
    h0, c0 = rand(rng, (2, Bsz, H), np.float32), rand(rng, (2, Bsz, H), np.float32)
    lens = np.array([5, 1, 3])
    Y, Y_h, Y_c = run_ort(model, X, lens, h0, c0)
    for d in range(2):
        y, h, c = run_direction(lstm_c.lstm_forward, sd, X, reverse=d == 1, h0=h0[d], c0=c0[d], lengths=lens)
        np.testing.assert_allclose(y, Y[:, d], **ORT_TOL)
        np.testing.assert_allclose(h, Y_h[d], **ORT_TOL)
        np.testing.assert_allclose(c, Y_c[d], **ORT_TOL)


def test_from_onnx_node_matches_from_onnx():
    pytest.importorskip("onnx")
    rng = np.random.default_rng(13)
    arrays = onnx_arrays(rng, 2, 4, 3, np.float64, peephole=True)
    attrs = dict(activations=["Sigmoid", "Tanh", "Tanh"] * 2, input_forget=0, layout=0)
    attrs["activation_alpha"] = [1.0]  # unused by Sigmoid/Tanh, so ignored
    model = onnx_model(arrays, hidden_size=3, direction="bidirectional", dtype=np.float64, attrs=attrs)
    want = from_onnx(**arrays)
    assert_same_dict(from_onnx_node(model.graph.node[0], model.graph.initializer), want)
    assert_same_dict(from_onnx_node(model.graph.node[0], {k: v for k, v in arrays.items()}), want)


def test_interop_imports_neither_onnx_nor_torch(tmp_path):
    code = (
        "import sys, lstm_c.interop; "
        "sys.exit(any(m in sys.modules for m in ('onnx', 'torch', 'onnxruntime')))"
    )
    # Outside the source tree: `python -c` puts the working directory on sys.path.
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0


def test_torch_state_dict_accepted():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.LSTM(3, 4, bidirectional=True)
    sd = layer.state_dict()
    arrays = to_onnx(sd)
    assert arrays["W"].dtype == np.float32 and arrays["W"].shape == (2, 16, 3)
    back = from_onnx(**arrays)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value.numpy())
    k, r, b = to_keras(dict(layer.named_parameters()))  # requires_grad tensors too
    np.testing.assert_array_equal(k, sd[W_IH].numpy().T)


# ----------------------------------------------------------------------------
# Refusals


def _arrays(D=1, I=4, H=3, dtype=np.float32, **changes):
    a = onnx_arrays(np.random.default_rng(14), D, I, H, dtype, peephole=True)
    a.update(changes)
    return a


def _sd(**kw):
    return state_dict(np.random.default_rng(15), 4, 3, np.float32, **kw)


def _keras(H=3, I=4, **changes):
    rng = np.random.default_rng(16)
    a = dict(
        kernel=rand(rng, (I, 4 * H), np.float32),
        recurrent_kernel=rand(rng, (H, 4 * H), np.float32),
        bias=rand(rng, 4 * H, np.float32),
    )
    a.update(changes)
    return a


def z(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def onnx_with(D=1, W=None, R=None, B=None, P=None, **attributes):
    """from_onnx on valid arrays (D directions, I=4, H=3) with some replaced."""
    arrays = _arrays(D=D)
    arrays.update({k: v for k, v in dict(W=W, R=R, B=B, P=P).items() if v is not None})
    return from_onnx(**arrays, **attributes)


def keras_with(activation="tanh", recurrent_activation="sigmoid", **arrays):
    return from_keras(**_keras(**arrays), activation=activation, recurrent_activation=recurrent_activation)


SIG_TANH_TANH = ["Sigmoid", "Tanh", "Tanh"]

# (call, exception, words the message must contain)
REFUSALS = {
    # ONNX attributes that lstm_c does not compute
    "onnx_clip": (lambda: onnx_with(clip=3.0), ValueError, ["clip", "3.0"]),
    "onnx_input_forget": (lambda: onnx_with(input_forget=1), ValueError, ["input_forget"]),
    "onnx_input_forget_bad": (lambda: onnx_with(input_forget=2), ValueError, ["input_forget", "2"]),
    "onnx_activations": (
        lambda: onnx_with(activations=["Sigmoid", "Tanh", "Relu"]),
        ValueError,
        ["activations", "Relu"],
    ),
    "onnx_activations_hard_sigmoid": (
        lambda: onnx_with(activations=["HardSigmoid", "Tanh", "Tanh"]),
        ValueError,
        ["activations"],
    ),
    "onnx_activations_count": (
        lambda: onnx_with(D=2, activations=SIG_TANH_TANH),
        ValueError,
        ["activations"],
    ),
    "onnx_layout": (lambda: onnx_with(layout=2), ValueError, ["layout", "2"]),
    "onnx_direction_mismatch": (
        lambda: onnx_with(direction="bidirectional"),
        ValueError,
        ["direction", "bidirectional", "1"],
    ),
    "onnx_direction_reverse_d2": (
        lambda: onnx_with(D=2, direction="reverse"),
        ValueError,
        ["direction", "reverse", "2"],
    ),
    "onnx_direction_unknown": (lambda: onnx_with(direction="both"), ValueError, ["direction", "both"]),
    # ONNX shapes and dtypes
    "onnx_W_2d": (lambda: onnx_with(W=z(12, 4)), ValueError, ["W", "3-D", "(12, 4)"]),
    "onnx_W_D3": (lambda: onnx_with(W=z(3, 12, 4)), ValueError, ["W", "num_directions", "(3, 12, 4)"]),
    "onnx_W_not_4H": (lambda: onnx_with(W=z(1, 13, 4)), ValueError, ["W", "4*hidden_size", "13"]),
    "onnx_R_shape": (lambda: onnx_with(R=z(1, 12, 4)), ValueError, ["R", "(1, 12, 3)", "(1, 12, 4)"]),
    "onnx_B_shape": (lambda: onnx_with(B=z(1, 12)), ValueError, ["B", "(1, 24)", "(1, 12)"]),
    "onnx_P_shape": (lambda: onnx_with(P=z(1, 3, 3)), ValueError, ["P", "(1, 9)", "(1, 3, 3)"]),
    "onnx_int_dtype": (lambda: onnx_with(W=z(1, 12, 4, dtype=np.int64)), TypeError, ["W", "int64"]),
    "onnx_mixed_dtype": (
        lambda: onnx_with(R=z(1, 12, 3, dtype=np.float64)),
        TypeError,
        ["mixed", "W is float32", "R is float64"],
    ),
    # Keras
    "keras_projection": (lambda: to_keras(_sd(proj=2)), ValueError, [W_HR, "projection"]),
    "keras_peephole": (lambda: to_keras(_sd(peephole=True)), ValueError, [PEEPHOLE, "peepholes"]),
    "keras_missing_layer": (
        lambda: to_keras(_sd(), layer=1),
        ValueError,
        [param_name("weight_ih", 1), "layer 0"],
    ),
    "keras_missing_reverse": (
        lambda: to_keras(_sd(), reverse=True),
        ValueError,
        [param_name("weight_ih", 0, reverse=True)],
    ),
    "keras_bad_layer": (lambda: to_keras(_sd(), layer=-1), ValueError, ["layer", "-1"]),
    "keras_kernel_1d": (lambda: keras_with(kernel=z(12)), ValueError, ["kernel", "2-D"]),
    "keras_kernel_not_4H": (
        lambda: keras_with(kernel=z(4, 13)),
        ValueError,
        ["kernel", "4*hidden_size", "13"],
    ),
    "keras_recurrent_kernel": (
        lambda: keras_with(recurrent_kernel=z(4, 12)),
        ValueError,
        ["recurrent_kernel", "(3, 12)", "(4, 12)"],
    ),
    "keras_bias": (lambda: keras_with(bias=z(13)), ValueError, ["bias", "(12,)", "(13,)"]),
    "keras_cudnn_bias": (lambda: keras_with(bias=z(24)), ValueError, ["bias", "CuDNNLSTM"]),
    "keras_recurrent_activation": (
        lambda: keras_with(recurrent_activation="hard_sigmoid"),
        ValueError,
        ["recurrent_activation", "hard_sigmoid"],
    ),
    "keras_activation": (lambda: keras_with(activation="relu"), ValueError, ["activation", "relu"]),
    "keras_mixed_dtype": (
        lambda: keras_with(bias=z(12, dtype=np.float64)),
        TypeError,
        ["mixed", "bias is float64"],
    ),
    # to_onnx
    "onnx_projection": (lambda: to_onnx(_sd(proj=2)), ValueError, [W_HR, "projection"]),
    "onnx_multilayer": (lambda: to_onnx(_sd(layers=2)), ValueError, ["layers", "[0, 1]", "one layer"]),
    "onnx_directions_disagree": (
        lambda: to_onnx(
            {
                **_sd(),
                param_name("weight_ih", 0, reverse=True): z(12, 5),
                param_name("weight_hh", 0, reverse=True): z(12, 3),
            }
        ),
        ValueError,
        ["disagree", "(4, 3)", "(5, 3)"],
    ),
    # state_dicts
    "sd_unknown_key": (lambda: to_onnx({**_sd(), "lstm." + W_IH: 0}), ValueError, ["lstm." + W_IH, "prefix"]),
    "sd_missing_weight_hh": (lambda: to_onnx({W_IH: z(12, 4)}), ValueError, [W_HH]),
    "sd_weight_hh_shape": (
        lambda: to_keras({**_sd(), W_HH: z(12, 4)}),
        ValueError,
        [W_HH, "(12, 3)", "(12, 4)"],
    ),
    "sd_peephole_shape": (
        lambda: to_onnx({**_sd(), PEEPHOLE: z(3, 4)}),
        ValueError,
        [PEEPHOLE, "(3, 3)", "(3, 4)"],
    ),
    "sd_bias_shape": (lambda: to_keras({**_sd(), B_HH: z(3)}), ValueError, [B_HH, "(12,)", "(3,)"]),
    "sd_not_mapping": (lambda: to_onnx([1, 2]), TypeError, ["state_dict", "mapping", "list"]),
    "sd_mixed_dtype": (
        lambda: to_keras({**_sd(), B_HH: z(12, dtype=np.float64)}),
        TypeError,
        ["mixed", "float64"],
    ),
    "sd_int_key": (lambda: to_onnx({**_sd(), 0: np.zeros(3)}), ValueError, ["key 0"]),
    "sd_empty": (lambda: onnx_attributes({}), ValueError, ["empty"]),
    "sd_value_none": (lambda: to_keras({**_sd(), B_IH: None}), TypeError, [B_IH, "object"]),
    # Arguments that are not arrays, or not of the right kind
    "onnx_direction_list": (
        lambda: from_onnx(**to_onnx(_sd()), direction=["forward"]),
        ValueError,
        ["direction", "['forward']"],
    ),
    "onnx_activations_number": (
        lambda: from_onnx(**to_onnx(_sd()), activations=5),
        ValueError,
        ["activations", "5", "list"],
    ),
    "onnx_activations_string": (
        lambda: from_onnx(**to_onnx(_sd()), activations="Sigmoid"),
        ValueError,
        ["activations", "'Sigmoid'", "list"],
    ),
    "onnx_W_complex": (
        lambda: from_onnx(**{**to_onnx(_sd()), "W": np.zeros((1, 12, 4), complex)}),
        TypeError,
        ["W", "complex128"],
    ),
    "onnx_W_none": (lambda: from_onnx(None, to_onnx(_sd())["R"]), TypeError, ["W", "object"]),
    "onnx_R_ragged": (
        lambda: from_onnx(to_onnx(_sd())["W"], [[[0.0] * 3] * 12, [[0.0]]]),
        ValueError,
        ["R", "could not be converted"],
    ),
    "keras_kernel_none": (lambda: from_keras(None, z(3, 12)), TypeError, ["kernel", "object"]),
    "keras_kernel_ragged": (
        lambda: from_keras([[0.0] * 12, [0.0]], z(3, 12)),
        ValueError,
        ["kernel", "could not be converted"],
    ),
    "keras_reverse_string": (
        lambda: from_keras(z(4, 12), z(3, 12), reverse="yes"),
        TypeError,
        ["reverse", "True or False", "'yes'"],
    ),
    "to_keras_reverse_string": (lambda: to_keras(_sd(), reverse="no"), TypeError, ["reverse", "'no'"]),
    # A wrong type is a TypeError everywhere in the package (a wrong value a ValueError).
    "to_keras_layer_float": (lambda: to_keras(_sd(), layer=1.5), TypeError, ["layer", "1.5"]),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals(case):
    call, error, words = REFUSALS[case]
    with pytest.raises(error) as info:
        call()
    assert_mentions(info, words)


def _node(**attrs):
    from onnx import helper

    base = dict(hidden_size=3, direction="forward")
    base.update(attrs)
    inputs = base.pop("inputs", ["X", "W", "R", "B", "", "", "", "P"])
    op_type = base.pop("op_type", "LSTM")
    return helper.make_node(op_type, inputs, ["Y"], **{k: v for k, v in base.items() if v is not None})


NODE_REFUSALS = {
    "clip": (dict(clip=5.0), ["clip", "5.0"]),
    "input_forget": (dict(input_forget=1), ["input_forget"]),
    "activations": (dict(activations=["Sigmoid", "Tanh", "Softsign"]), ["activations", "Softsign"]),
    "hidden_size": (dict(hidden_size=4), ["hidden_size", "4", "(1, 12, 3)"]),
    "direction": (dict(direction="bidirectional"), ["direction", "bidirectional"]),
    "op_type": (dict(op_type="GRU"), ["op_type", "GRU"]),
    "unknown_attribute": (dict(linear_before_reset=1), ["linear_before_reset"]),
    "W_not_initializer": (dict(inputs=["X", "W_runtime", "R"]), ["W", "W_runtime", "initializers"]),
    "B_not_initializer": (dict(inputs=["X", "W", "R", "B_runtime"]), ["B", "B_runtime", "initializers"]),
    "no_R": (dict(inputs=["X", "W"]), ["R", "input 2"]),
}


@pytest.mark.parametrize("case", NODE_REFUSALS)
def test_from_onnx_node_refusals(case):
    pytest.importorskip("onnx")
    attrs, words = NODE_REFUSALS[case]
    with pytest.raises(ValueError) as info:
        from_onnx_node(_node(**attrs), _arrays())
    assert_mentions(info, words)


def test_from_onnx_node_refuses_initializers_that_are_not_a_table():
    pytest.importorskip("onnx")
    from onnx import helper

    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=3)
    with pytest.raises(TypeError, match="initializers must be a dict.*got int"):
        from_onnx_node(node, 42)
