"""lstm_c.torch.LSTM, the torch.nn.Module: against torch.nn.LSTM with the same weights.

Outputs, final states and every gradient over every combination of layers,
directions, projection, batch_first, bias, given state and input form
(batched, unbatched, PackedSequence sorted and unsorted), in float64 and
float32; an Adam trajectory; gradcheck; what a torch user relies on
(optimizers, clip_grad_norm_, save/load, deepcopy, train/eval, no_grad,
torch.compile); the errors; and DistributedDataParallel over two processes.
No test here measures time.
"""

from __future__ import annotations

import copy
import io
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_close, assert_mentions, child_failure, run_in_child

torch = pytest.importorskip("torch")

import lstm_c  # noqa: E402
from lstm_c import functional  # noqa: E402
from lstm_c.torch import LSTM  # noqa: E402

# torch falls back from oneDNN for projections and says so; that is torch's business.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
T, B, I, H = 5, 4, 3, 6
LENGTHS_UNSORTED = [3, 5, 1, 4]
LENGTHS_SORTED = [5, 4, 3, 1]
INPUTS = ["batched", "unbatched", "packed_sorted", "packed_unsorted"]


def make_pair(dtype, seed=0, **options):
    """A torch.nn.LSTM and an lstm_c.torch.LSTM, the second loaded with the first's state_dict."""
    torch.manual_seed(seed)
    theirs = torch.nn.LSTM(I, H, dtype=dtype, **options)
    ours = LSTM(I, H, dtype=dtype, **options)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def make_input(kind, batch_first, dtype, generator):
    """(the leaf tensor whose gradient is compared, a function making the modules' input of it)."""
    if kind == "unbatched":
        return torch.randn(T, I, dtype=dtype, generator=generator, requires_grad=True), lambda x: x
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(shape, dtype=dtype, generator=generator, requires_grad=True)
    if kind == "batched":
        return x, lambda x: x
    lengths = torch.tensor(LENGTHS_SORTED if kind == "packed_sorted" else LENGTHS_UNSORTED)
    return x, lambda x: torch.nn.utils.rnn.pack_padded_sequence(
        x, lengths, batch_first=batch_first, enforce_sorted=kind == "packed_sorted"
    )


def make_state(m, kind, dtype, generator):
    LD = m.num_layers * (2 if m.bidirectional else 1)
    batch = () if kind == "unbatched" else (B,)
    h0 = torch.randn(LD, *batch, m.proj_size or H, dtype=dtype, generator=generator) * 0.5
    c0 = torch.randn(LD, *batch, H, dtype=dtype, generator=generator)
    return h0.requires_grad_(), c0.requires_grad_()


def forward_backward(m, leaf, to_input, hx, seed):
    """Outputs, final states and every gradient (input, state, parameters) of a random linear loss."""
    m.zero_grad()
    leaf.grad = None
    for s in hx or ():
        s.grad = None
    out, (h, c) = m(to_input(leaf), hx)
    y = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=g)).sum() for t in (y, h, c))
    loss.backward()
    result = {"output": y, "h_n": h, "c_n": c, "d_input": leaf.grad}
    if hx is not None:
        result.update(d_h0=hx[0].grad, d_c0=hx[1].grad)
    result.update({f"d_{name}": p.grad for name, p in m.named_parameters()})
    return {k: v.detach().numpy().copy() for k, v in result.items()}, out


# Every combination of (layers, bidirectional, proj_size, batch_first, bias, hx) and input form
# (batch_first does not apply to unbatched input).
CASES = [
    (kind, *c)
    for kind in INPUTS
    for c in itertools.product([1, 2], [False, True], [0, 2], [False, True], [True, False], [False, True])
    if not (kind == "unbatched" and c[3])
]


def case_id(case):
    kind, layers, bidirectional, proj_size, batch_first, bias, hx = case
    return (
        f"{kind}-L{layers}-{'bi' if bidirectional else 'uni'}-P{proj_size}-{'bf' if batch_first else 'tf'}-"
        f"{'bias' if bias else 'nobias'}-{'hx' if hx else 'nohx'}"
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "kind, layers, bidirectional, proj_size, batch_first, bias, hx", CASES, ids=map(case_id, CASES)
)
def test_matches_torch(dtype, kind, layers, bidirectional, proj_size, batch_first, bias, hx):
    tdtype = TORCH_DTYPES[dtype]
    options = dict(
        num_layers=layers,
        bidirectional=bidirectional,
        proj_size=proj_size,
        batch_first=batch_first,
        bias=bias,
    )
    theirs, ours = make_pair(tdtype, **options)
    g = torch.Generator().manual_seed(1)
    leaf, to_input = make_input(kind, batch_first, tdtype, g)
    state = make_state(ours, kind, tdtype, g) if hx else None
    expected, out_t = forward_backward(theirs, leaf, to_input, state, seed=2)
    actual, out_o = forward_backward(ours, leaf, to_input, state, seed=2)
    assert actual.keys() == expected.keys()
    if dtype == "float64":
        for name in expected:
            np.testing.assert_allclose(actual[name], expected[name], rtol=1e-12, atol=1e-12, err_msg=name)
    else:
        for name in expected:
            assert_close(actual[name], expected[name], np.float32, what=name)
    if kind.startswith("packed"):
        assert type(out_o) is torch.nn.utils.rnn.PackedSequence
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            a, b = getattr(out_o, field), getattr(out_t, field)
            assert (a is None and b is None) or torch.equal(a, b), field


# ----------------------------------------------------------------------------- parameters


def test_parameters_are_torch_nn_lstm_s():
    torch.manual_seed(3)
    theirs = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    torch.manual_seed(3)
    ours = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    # Same names, shapes, order and Parameter type; same initialisation after the same seed.
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert isinstance(p, torch.nn.Parameter) and p.requires_grad
        assert torch.equal(p, q), name
    # state_dicts load either way, unchanged and strict.
    torch.manual_seed(4)
    other = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    theirs.load_state_dict(other.state_dict())
    for p, q in zip(theirs.parameters(), other.parameters()):
        assert torch.equal(p, q)


def test_peephole_matches_the_numpy_layer():
    torch.manual_seed(0)
    ours = LSTM(I, H, num_layers=2, bidirectional=True, peephole=True, dtype=torch.float64)
    assert "peephole_l1_reverse" in ours.state_dict()
    layer = lstm_c.LSTM(I, H, num_layers=2, bidirectional=True, peephole=True, dtype=np.float64)
    layer.load_state_dict({k: v.numpy() for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, 2 * H))
    y, _ = layer(x, lengths=LENGTHS_UNSORTED)
    dx, _ = layer.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt, _ = ours(xt)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(LENGTHS_UNSORTED), enforce_sorted=False)
    out, _ = ours(packed)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    (padded * torch.tensor(dy)).sum().backward()
    assert_close(padded.detach().numpy(), y, np.float64)
    assert_close(xt.grad.numpy(), dx, np.float64)
    for name, p in ours.named_parameters():
        assert_close(p.grad.numpy(), layer.grads[name], np.float64, what=name)


# ----------------------------------------------------------------------------- training


def test_adam_trajectory_equals_torch_in_float64():
    theirs, ours = make_pair(torch.float64, num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, I, dtype=torch.float64, generator=g)
    target = torch.randn(B, T, 4, dtype=torch.float64, generator=g)
    lengths = torch.tensor(LENGTHS_UNSORTED)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_target = torch.nn.utils.rnn.pack_padded_sequence(
        target, lengths, batch_first=True, enforce_sorted=False
    ).data
    losses = {}
    for name, m in (("torch", theirs), ("lstm_c", ours)):
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        losses[name] = []
        for _ in range(6):
            opt.zero_grad()
            out, _ = m(packed)
            loss = torch.nn.functional.mse_loss(out.data, packed_target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            opt.step()
            losses[name].append(loss.item())
    np.testing.assert_allclose(losses["lstm_c"], losses["torch"], rtol=1e-12)
    assert losses["lstm_c"][-1] < losses["lstm_c"][0]
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(
            p.detach().numpy(), q.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name
        )


@pytest.mark.parametrize("packed", [False, True], ids=["tensor", "packed"])
def test_gradcheck_float64(packed):
    torch.manual_seed(0)
    m = LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2, peephole=True, dtype=torch.float64)
    names = [n for n, _ in m.named_parameters()]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    c0 = torch.randn(4, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def f(x, h0, c0, *params):
        inp = x
        if packed:
            inp = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([2, 3]), enforce_sorted=False)
        out, (h, c) = torch.func.functional_call(m, dict(zip(names, params)), (inp, (h0, c0)))
        return (out.data if packed else out), h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


def test_dropout_draws_from_torch_s_generator():
    theirs, ours = make_pair(torch.float64, num_layers=3, dropout=0.5)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    results = []
    for m in (theirs, ours, ours):
        torch.manual_seed(7)
        y, _ = m(x)
        y.sum().backward()
        results.append((y.detach().clone(), x.grad.clone()))
        x.grad = None
    # torch.manual_seed repeats the masks; they are even torch.nn.LSTM's own on time-major input.
    assert torch.equal(results[1][0], results[2][0]) and torch.equal(results[1][1], results[2][1])
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)
    torch.manual_seed(8)
    assert not torch.equal(ours(x)[0], results[1][0])
    # Eval mode: no dropout, with or without gradients.
    ours.eval()
    with torch.no_grad():
        y_eval, _ = ours(x)
    assert torch.equal(ours(x)[0], y_eval)
    # Training mode under no_grad still drops, from the same stream.
    ours.train()
    with torch.no_grad():
        torch.manual_seed(7)
        assert torch.equal(ours(x)[0], results[1][0])


@pytest.fixture
def forward_calls(monkeypatch):
    """The (args, kwargs) of every lstm_c.functional.lstm_forward call during the test."""
    calls = []
    original = functional.lstm_forward

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(functional, "lstm_forward", spy)
    return calls


def test_no_grad_keeps_no_activations(forward_calls):
    _, m = make_pair(torch.float32, num_layers=2)
    x = torch.randn(T, B, I)

    def modes():
        return [kwargs["training"] for _, kwargs in forward_calls]

    with torch.no_grad():
        y, (h, c) = m(x)
    assert modes() == [False, False] and y.grad_fn is None
    with torch.inference_mode():
        m(x)
    for p in m.parameters():
        p.requires_grad_(False)
    m(x)  # nothing requires a gradient
    assert modes() == [False] * 6
    x.requires_grad_()
    y, _ = m(x)
    assert modes()[-2:] == [True, True] and y.grad_fn is not None


def test_kernels_read_the_tensors_memory(forward_calls):
    _, m = make_pair(torch.float32, batch_first=True)
    x = torch.randn(B, T, I, requires_grad=True)
    y, _ = m(x)
    (((x_, w_ih, w_hh, *_), _),) = forward_calls
    assert np.shares_memory(x_, x.detach().numpy())
    assert np.shares_memory(w_ih, m.weight_ih_l0.detach().numpy())
    assert np.shares_memory(w_hh, m.weight_hh_l0.detach().numpy())


def test_activations_are_freed_by_backward_unless_the_graph_is_retained():
    _, m = make_pair(torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    y, _ = m(x)
    y.sum().backward(retain_graph=True)
    first = x.grad.clone()
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()


def test_changing_an_input_in_place_before_backward_is_refused():
    _, m = make_pair(torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    y, _ = m(x)
    with torch.no_grad():
        m.weight_hh_l0.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_state_gradients_only_where_asked():
    _, m = make_pair(torch.float64, num_layers=2)
    x = torch.randn(T, B, I, dtype=torch.float64)  # needs no gradient
    h0 = torch.zeros(2, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.zeros(2, B, H, dtype=torch.float64)
    y, (h, c) = m(x, (h0, c0))
    c.sum().backward()  # only c_n is used: dy and dh_n are None in the backward
    assert x.grad is None and c0.grad is None and h0.grad is not None
    assert all(p.grad is not None for p in m.parameters())


def test_save_load_deepcopy_and_modes(tmp_path):
    _, m = make_pair(torch.float32, num_layers=2, dropout=0.25, bidirectional=True, proj_size=3)
    x = torch.randn(T, B, I)
    m.eval()
    y, _ = m(x)
    path = tmp_path / "model.pt"
    torch.save(m, path)
    loaded = torch.load(path, weights_only=False)
    assert type(loaded) is LSTM and not loaded.training
    assert torch.equal(loaded(x)[0], y)
    assert torch.equal(copy.deepcopy(m)(x)[0], y)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = LSTM(I, H, num_layers=2, dropout=0.25, bidirectional=True, proj_size=3).eval()
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh(x)[0], y)
    assert m.train() is m and m.training
    assert "proj_size=3" in repr(m) and repr(m).startswith("LSTM(3, 6")


def test_double_and_float_conversions():
    _, m = make_pair(torch.float32)
    m.double()
    y, (h, c) = m(torch.randn(T, B, I, dtype=torch.float64))
    assert y.dtype == h.dtype == c.dtype == torch.float64


def test_num_threads_is_passed_to_the_kernels(forward_calls):
    _, m = make_pair(torch.float32)
    m.num_threads = 1
    m(torch.randn(T, B, I))
    assert [kwargs["num_threads"] for _, kwargs in forward_calls] == [1]


def test_torch_compile_runs_it_eagerly():
    torch.manual_seed(0)
    lstm = LSTM(I, H, dtype=torch.float64)
    head = torch.nn.Linear(H, 2, dtype=torch.float64)

    def model(x):
        return head(lstm(x)[0]).tanh()

    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(model, backend="eager")
    y = compiled(x)
    torch.testing.assert_close(y, model(x))
    y.sum().backward()
    assert x.grad is not None and lstm.weight_hh_l0.grad is not None


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_is_refused_clearly():
    _, m = make_pair(torch.float32)
    with pytest.raises(RuntimeError, match="cannot be traced"):
        torch.jit.trace(m, (torch.randn(T, B, I),))
    with pytest.raises(Exception):  # noqa: B017 - TorchScript's own compilation error
        torch.jit.script(m)


# ----------------------------------------------------------------------------- errors


def test_refuses_other_devices_and_dtypes():
    _, m = make_pair(torch.float32)
    with pytest.raises(TypeError) as error:
        LSTM(I, H, dtype=torch.float16)
    assert_mentions(error, ["torch.float16"])
    with pytest.raises(RuntimeError) as error:
        m(torch.empty(T, B, I, device="meta"))
    assert_mentions(error, ["CPU", "meta"])
    with pytest.raises(TypeError) as error:
        m(torch.randn(T, B, I, dtype=torch.float64))
    assert_mentions(error, ["torch.float64", "torch.float32"])
    meta = LSTM(I, H, device="meta")
    with pytest.raises(RuntimeError) as error:
        meta(torch.randn(T, B, I))
    assert_mentions(error, ["CPU", "meta", ".cpu()"])
    with pytest.raises(TypeError) as error:
        copy.deepcopy(m).to(torch.bfloat16)(torch.randn(T, B, I, dtype=torch.bfloat16))
    assert_mentions(error, ["torch.bfloat16", ".float()"])


def test_refuses_wrong_shapes_and_arguments():
    _, m = make_pair(torch.float32, num_layers=2)
    with pytest.raises(ValueError, match="input_size=3"):
        m(torch.randn(T, B, I + 1))
    with pytest.raises(ValueError, match="unbatched"):
        m(torch.randn(T, B, I, 1))
    with pytest.raises(ValueError, match=r"h_0 must have shape"):
        m(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(2, B, H)))
    with pytest.raises(ValueError, match=r"unbatched input takes 2-D states"):
        m(torch.randn(T, I), (torch.zeros(2, 1, H), torch.zeros(2, 1, H)))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        m(torch.randn(T, B, I), torch.zeros(2, B, H))
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(I, H, proj_size=H)
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        LSTM(I, H, dropout=0.5)


def test_import_lstm_c_does_not_import_torch(tmp_path):
    result = run_in_child("import sys, lstm_c; assert 'torch' not in sys.modules, 'torch imported'", tmp_path)
    assert result.returncode == 0, child_failure(result)


def test_too_old_torch_is_named(tmp_path):
    script = (
        "import torch; torch.__version__ = '1.13.1'\n"
        "try:\n    import lstm_c.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    result = run_in_child(script, tmp_path)
    assert result.returncode == 0, child_failure(result)
    assert_mentions(result.stdout, ["PyTorch >= 2.1", "1.13.1"])


# ----------------------------------------------------------------------------- DistributedDataParallel


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    """Two gloo ranks on this machine, each on half the global batch, end with the parameters of
    one process on the whole batch (DDP averages the ranks' gradients of their mean losses)."""
    worker = Path(__file__).with_name("torch_ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    result = subprocess.run(
        [sys.executable, str(worker), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, child_failure(result)
    initial, single = torch.load(tmp_path / "initial.pt"), torch.load(tmp_path / "single.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert single.keys() == ranks[0].keys() == initial.keys()
    assert any("lstm.weight_hh_l1" in name for name in single)
    for name in single:
        assert not torch.equal(single[name], initial[name]), name  # training moved every parameter
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # DDP keeps the ranks in step
        torch.testing.assert_close(ranks[0][name], single[name], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- the example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "char_lm.py"


@pytest.mark.slow
@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not beside the tests (a copied test tree)")
def test_char_lm_example_learns(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "30", "--batch", "16", "--length", "32", "--sample", "20"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, child_failure(result)
    bits = [float(v) for v in re.findall(r"([0-9.]+) bits/char", result.stdout)]
    assert len(bits) == 2 and bits[-1] < bits[0] - 1, result.stdout


@pytest.mark.parametrize("bidirectional", [False, True])
def test_checkpoint_every_gives_the_full_gradients(bidirectional):
    torch.manual_seed(0)
    m = LSTM(3, 5, num_layers=2, bidirectional=bidirectional, dtype=torch.float64)
    x = torch.randn(11, 4, 3, dtype=torch.float64, requires_grad=True)

    def grads(checkpoint_every):
        m.checkpoint_every = checkpoint_every
        m.zero_grad()
        x.grad = None
        y, (h, c) = m(x)
        (y.square().sum() + h.sum() + c.sum()).backward()
        return [y.detach(), x.grad.clone()] + [p.grad.clone() for p in m.parameters()]

    full, checkpointed = grads(None), grads(3)
    for a, b in zip(full, checkpointed):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
