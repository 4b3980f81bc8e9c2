"""lstm_c.LSTM against torch.nn.LSTM: outputs and every gradient (skipped without PyTorch)."""

import zlib

import numpy as np
import pytest
from helpers import assert_close, tol

torch = pytest.importorskip("torch")

# torch falls back from oneDNN for projections and says so; that is torch's business.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")

import lstm_c  # noqa: E402
from lstm_c.layer import LSTM  # noqa: E402

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}

T, B, I, H = 6, 4, 5, 7
LENGTHS = [6, 2, 5, 1]  # torch's packed sequences refuse length 0

# (constructor options, run options)
CASES = {
    "one_layer": (dict(), dict()),
    "stacked_2": (dict(num_layers=2), dict(hx=True)),
    "stacked_3": (dict(num_layers=3), dict()),
    "bidirectional": (dict(bidirectional=True), dict()),
    "stacked_3_bidirectional_hx": (dict(num_layers=3, bidirectional=True), dict(hx=True)),
    "no_bias": (dict(num_layers=2, bias=False), dict(hx=True)),
    "batch_first": (dict(num_layers=2, batch_first=True), dict(hx=True)),
    "lengths": (dict(num_layers=2), dict(lengths=LENGTHS)),
    "lengths_bidirectional_hx": (dict(num_layers=2, bidirectional=True), dict(lengths=LENGTHS, hx=True)),
    "lengths_batch_first_bidirectional": (
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(lengths=LENGTHS, hx=True),
    ),
    "unbatched": (dict(num_layers=2), dict(unbatched=True)),
    "unbatched_bidirectional_hx": (dict(num_layers=2, bidirectional=True), dict(unbatched=True, hx=True)),
    "unbatched_batch_first": (dict(batch_first=True), dict(unbatched=True, hx=True)),
    # Projection (LSTMP): needs the kernels' w_hr.
    "proj": (dict(proj_size=3), dict(hx=True)),
    "proj_stacked_bidirectional": (dict(num_layers=2, bidirectional=True, proj_size=4), dict(hx=True)),
    "proj_lengths_batch_first_bidirectional": (
        dict(num_layers=2, bidirectional=True, proj_size=2, batch_first=True),
        dict(lengths=LENGTHS, hx=True),
    ),
    "proj_unbatched": (dict(num_layers=2, proj_size=3), dict(unbatched=True, hx=True)),
}


def make_pair(options, dtype, seed=0):
    """A torch.nn.LSTM and an lstm_c.LSTM with the same parameters (loaded from torch)."""
    torch.manual_seed(seed)
    theirs = torch.nn.LSTM(I, H, dtype=TORCH_DTYPE[dtype], **options)
    ours = LSTM(I, H, dtype=dtype, **options)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return theirs, ours


def run_torch(model, x, hx, lengths, dy, dh_n, dc_n):
    """Forward and backward through torch; returns outputs and gradients as NumPy arrays."""
    xt = torch.tensor(x, requires_grad=True)
    hxt = None if hx is None else tuple(torch.tensor(a, requires_grad=True) for a in hx)
    model.zero_grad()
    if lengths is None:
        y, (h, c) = model(xt, hxt)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=model.batch_first, enforce_sorted=False
        )
        out, (h, c) = model(packed, hxt)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=model.batch_first, total_length=T)
    loss = (y * torch.tensor(dy)).sum() + (h * torch.tensor(dh_n)).sum() + (c * torch.tensor(dc_n)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    dhx = (None, None) if hxt is None else (hxt[0].grad.numpy(), hxt[1].grad.numpy())
    return (y.detach().numpy(), h.detach().numpy(), c.detach().numpy()), (xt.grad.numpy(), *dhx), grads


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_outputs_and_all_gradients_match_torch(case, dtype):
    options, run = CASES[case]
    theirs, ours = make_pair(options, dtype)
    rng = np.random.default_rng(zlib.crc32(case.encode()))  # stable across runs
    L, D = ours.num_layers, ours.num_directions
    unbatched = run.get("unbatched", False)
    batch = () if unbatched else (B,)
    if unbatched:
        x_shape = (T, I)
    else:
        x_shape = (B, T, I) if ours.batch_first else (T, B, I)
    x = rng.standard_normal(x_shape).astype(dtype)
    h_shape = (L * D, *batch, ours.output_size)
    c_shape = (L * D, *batch, H)
    hx = None
    if run.get("hx"):
        hx = (rng.standard_normal(h_shape).astype(dtype) * 0.5, rng.standard_normal(c_shape).astype(dtype))
    lengths = run.get("lengths")
    y, (h_n, c_n) = ours(x, hx, lengths=lengths)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n = rng.standard_normal(h_shape).astype(dtype)
    dc_n = rng.standard_normal(c_shape).astype(dtype)
    dx, (dh0, dc0) = ours.backward(dy, (dh_n, dc_n))

    outputs, input_grads, grads = run_torch(theirs, x, hx, lengths, dy, dh_n, dc_n)
    for what, a, b in zip(["y", "h_n", "c_n"], (y, h_n, c_n), outputs):
        assert_close(a, b, dtype, what=what)
    assert_close(dx, input_grads[0], dtype, what="dx")
    if hx is not None:
        assert_close(dh0, input_grads[1], dtype, what="dh0")
        assert_close(dc0, input_grads[2], dtype, what="dc0")
    assert list(ours.grads) == list(grads), "every parameter gets a gradient, in torch's order"
    for name, g in grads.items():
        assert_close(ours.grads[name], g, dtype, what=name)
    if lengths is not None:
        # torch pads with zeros past each row's length; ours leaves zeros there too.
        time = np.arange(T)[:, None] < np.asarray(lengths)[None, :]  # (T, B)
        valid = time.T if ours.batch_first else time
        assert not y[~valid].any() and not dx[~valid].any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_in_eval_mode_matches_torch(dtype):
    options = dict(num_layers=3, dropout=0.5, bidirectional=True)
    theirs, ours = make_pair(options, dtype, seed=3)
    theirs.eval()
    ours.eval()
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(dtype)
    y, (h_n, c_n) = ours(x, lengths=LENGTHS)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x), torch.tensor(LENGTHS), enforce_sorted=False
    )
    with torch.no_grad():
        out, (h, c) = theirs(packed)
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    for what, a, b in zip(["y", "h_n", "c_n"], (y, h_n, c_n), (yt, h, c)):
        assert_close(a, b.numpy(), dtype, what=what)


@pytest.mark.parametrize("proj_size", [0, 3])
def test_state_dict_round_trip_with_torch(proj_size):
    theirs, ours = make_pair(dict(num_layers=2, bidirectional=True, proj_size=proj_size), np.float32)
    # Ours has exactly torch's names, shapes and order, and loads back into torch.
    sd = ours.state_dict()
    assert list(sd) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        assert sd[name].shape == tuple(value.shape)
    fresh = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj_size)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    for name, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), sd[name])


def test_float32_torch_weights_load_into_a_float64_layer():
    theirs, _ = make_pair(dict(num_layers=2), np.float32)
    ours = LSTM(I, H, num_layers=2, dtype=np.float64)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert all(v.dtype == np.float64 for v in ours.state_dict().values())
    x = np.random.default_rng(2).standard_normal((T, B, I))
    y, _ = ours(x)
    with torch.no_grad():
        yt, _ = theirs(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(y, yt.numpy(), **tol(np.float32))


def test_default_initialisation_has_torchs_bounds():
    ours = LSTM(I, 16, num_layers=2, bidirectional=True, proj_size=4, seed=0)
    values = np.concatenate([v.ravel() for v in ours.state_dict().values()])
    bound = 1 / np.sqrt(16)
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.9 * bound  # uniform over the whole range, as torch's


@pytest.mark.parametrize("proj_size", [0, 3])
def test_stepping_matches_torch(proj_size):
    theirs, ours = make_pair(dict(num_layers=2, proj_size=proj_size), np.float64)
    x = np.random.default_rng(4).standard_normal((T, B, I))
    state = None
    outputs = []
    for t in range(T):
        y_t, state = ours.step(x[t], state)
        outputs.append(y_t)
    with torch.no_grad():
        yt, (h, c) = theirs(torch.tensor(x))
    np.testing.assert_allclose(np.stack(outputs), yt.numpy(), **tol(np.float64))
    np.testing.assert_allclose(state[0], h.numpy(), **tol(np.float64))
    np.testing.assert_allclose(state[1], c.numpy(), **tol(np.float64))


def test_lstm_is_exported():
    assert getattr(lstm_c, "LSTM", LSTM) is LSTM
