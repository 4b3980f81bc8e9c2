"""LSTM.freeze: a snapshot of the weights packed once, giving the module's inference bit for bit."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import DTYPES, assert_close, assert_identical, layer_inputs

from lstm_c import _lstm, functional
from lstm_c.frozen import FrozenLSTM
from lstm_c.layer import LSTM

T, B, I, H = 6, 5, 20, 24
CONFIGS = {
    "one_layer": dict(),
    "bidirectional_2": dict(num_layers=2, bidirectional=True),
    "projection_peephole_batch_first": dict(num_layers=2, proj_size=10, peephole=True, batch_first=True),
    "no_bias_dropout": dict(num_layers=2, bias=False, dropout=0.5),
}
# The recurrent product on panels (packed at freezing) or on BLAS; the module packs W_ih
# (as the frozen one always reads it packed: see the test of a W_ih over the limit).
PATHS = {"panels": 1e30, "blas": -1}


def inference(m, x, hx, lengths=None):
    y, (h_n, c_n) = m(x, hx, lengths=lengths)
    return y, h_n, c_n


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_a_frozen_lstm_gives_the_modules_inference_bit_for_bit(config, dtype, path, threads, monkeypatch):
    monkeypatch.setattr(functional, "_PANEL_MAX_STEP_FLOPS", PATHS[path])
    monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", 1e30)
    m = LSTM(I, H, dtype=dtype, seed=1, **CONFIGS[config])
    m.num_threads = threads
    frozen = m.freeze()
    m.eval()
    x, hx, _, _ = layer_inputs(m, np.random.default_rng(2), T, B)
    for lengths in (None, [6, 0, 3, 6, 1]):
        assert_identical(inference(frozen, x, hx, lengths), inference(m, x, hx, lengths))
    x1, hx1, _, _ = layer_inputs(m, np.random.default_rng(3), T, 1)
    assert_identical(inference(frozen, x1, hx1), inference(m, x1, hx1))  # a single row
    xu, hxu, _, _ = layer_inputs(m, np.random.default_rng(4), T, 1, unbatched=True)
    assert_identical(inference(frozen, xu, hxu), inference(m, xu, hxu))


def test_the_frozen_weights_are_packed_once_and_read_as_they_are(monkeypatch):
    m = LSTM(I, H, num_layers=2, seed=5)
    frozen = m.freeze()
    packed = []
    forward = _lstm.forward

    def record(**kwargs):
        packed.append(kwargs["packed"])
        given = [kwargs[name] for name in ("panels", "ih_panels") if kwargs[name] is not None]
        assert len(given) == 2  # both weights in panels at these sizes
        for panels in given if kwargs["packed"] else []:
            panels.flags.writeable = False  # the kernel must only read them
        forward(**kwargs)
        for panels in given if kwargs["packed"] else []:
            panels.flags.writeable = True

    monkeypatch.setattr(_lstm, "forward", record)
    x = np.random.default_rng(6).standard_normal((T, B, I)).astype(np.float32)
    frozen(x)
    assert packed == [True, True]  # one call per layer
    m.eval()
    m(x)
    assert packed[2:] == [False, False]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_frozen_lstm_reads_a_w_ih_over_the_limit_packed_and_agrees_to_rounding(dtype, threads, monkeypatch):
    # A W_ih the module leaves to BLAS (over _INPUT_PANELS_MAX_BYTES): the frozen module
    # reads its own packed copy, as the module does with W_ih under the limit.
    m = LSTM(I, H, num_layers=2, proj_size=10, dtype=dtype, seed=13)
    m.num_threads = threads
    monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", -1)
    frozen = m.freeze()
    m.eval()
    x, hx, _, _ = layer_inputs(m, np.random.default_rng(14), T, B)
    read = []
    forward = _lstm.forward

    def record(**kwargs):
        read.append((kwargs["packed"], kwargs["ih_panels"] is not None))
        forward(**kwargs)

    monkeypatch.setattr(_lstm, "forward", record)
    for lengths in (None, [6, 0, 3, 6, 1]):
        got = inference(frozen, x, hx, lengths)
        assert read[-2:] == [(True, True)] * 2  # both layers read W_ih packed
        with_blas = inference(m, x, hx, lengths)
        assert read[-2:] == [(False, False)] * 2  # the module's W_ih goes to BLAS
        assert_close(got, with_blas, dtype)
        monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", 1e30)
        assert_identical(got, inference(m, x, hx, lengths))  # the module's W_ih in panels
        monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", -1)


def test_a_frozen_lstm_keeps_the_weights_it_was_frozen_with():
    m = LSTM(I, H, seed=7, dtype=np.float64)
    m.eval()
    x, hx, _, _ = layer_inputs(m, np.random.default_rng(8), T, B)
    frozen = m.freeze()
    before = inference(m, x, hx)
    for p in m.params.values():  # an optimizer's update, in place
        p *= 0.5
    assert_identical(inference(frozen, x, hx), before)
    assert not np.array_equal(inference(m, x, hx)[0], before[0])
    assert_identical(inference(m.freeze(), x, hx), inference(m, x, hx))  # frozen again: the new weights


def test_a_frozen_lstm_shows_its_sizes_but_not_its_arrays():
    m = LSTM(I, H, num_layers=2, proj_size=8, batch_first=True, seed=9)
    m.num_threads = 1
    frozen = m.freeze()
    assert isinstance(frozen, FrozenLSTM)
    sizes = (
        "input_size",
        "hidden_size",
        "num_layers",
        "num_directions",
        "output_size",
        "batch_first",
        "dtype",
    )
    assert [getattr(frozen, name) for name in sizes] == [getattr(m, name) for name in sizes]
    assert frozen.num_threads == 1
    frozen.num_threads = 2
    assert frozen.num_threads == 2 and m.num_threads == 1
    for hidden in ("params", "backward", "step", "train"):
        with pytest.raises(AttributeError):
            getattr(frozen, hidden)
    state = frozen.state_dict()
    assert_identical(list(state.values()), list(m.state_dict().values()))
    next(iter(state.values()))[...] = 0  # a copy: the frozen weights do not change
    assert_identical(list(frozen.state_dict().values()), list(m.state_dict().values()))
    assert repr(frozen) == f"FrozenLSTM({m!r})"


def test_a_frozen_lstm_pickles_and_packs_anew():
    m = LSTM(I, H, bidirectional=True, seed=10)
    frozen = m.freeze()
    x, hx, _, _ = layer_inputs(m, np.random.default_rng(11), T, B)
    copy = pickle.loads(pickle.dumps(frozen))
    assert isinstance(copy, FrozenLSTM)
    assert_identical(inference(copy, x, hx), inference(frozen, x, hx))
    module = pickle.loads(pickle.dumps(m))  # a module that was frozen pickles as before
    module.eval()
    assert_identical(inference(module, x, hx), inference(frozen, x, hx))


def test_a_frozen_lstm_refuses_bad_input_as_the_module_does():
    frozen = LSTM(I, H, seed=12).freeze()
    with pytest.raises(ValueError, match="x has 3 features"):
        frozen(np.zeros((T, B, 3), np.float32))
    with pytest.raises(TypeError, match="x"):
        frozen(np.zeros((T, B, I), np.float64))


@pytest.mark.skipif(_lstm.panel_width(4) == 0, reason="this build has no packed-panel products")
def test_packing_refuses_a_wrong_size():
    w = np.zeros((4 * H, I), np.float32)
    with pytest.raises(ValueError, match="out must hold"):
        _lstm.pack_weights(w, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="4\\*hidden_size"):
        _lstm.pack_weights(np.zeros((6, I), np.float32), np.zeros(10, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [{}, {"proj_size": 10, "peephole": True, "batch_first": True}, {"bias": False}],
    ids=["plain", "projection_peephole_batch_first", "no_bias"],
)
def test_repeated_calls_of_one_layer_take_the_prepared_call_and_give_the_same_bits(
    dtype, options, monkeypatch
):
    # After a call with no state and no lengths, the next ones with an input of the same
    # shape skip the checks (the module's forward is not called) and give its results.
    m = LSTM(I, H, dtype=dtype, seed=6, **options)
    frozen = m.freeze()
    m.eval()
    rng = np.random.default_rng(7)
    shape = (B, T, I) if m.batch_first else (T, B, I)
    x0 = rng.standard_normal(shape).astype(dtype)
    assert_identical(inference(frozen, x0, None), inference(m, x0, None))
    general = frozen._module.forward
    monkeypatch.setattr(frozen._module, "forward", None)  # the prepared call must not need it
    for threads in (1, 2, None):
        m.num_threads = frozen.num_threads = threads
        monkeypatch.setattr(frozen._module, "forward", general)
        frozen(x0)  # the thread count changed: prepared anew
        monkeypatch.setattr(frozen._module, "forward", None)
        for _ in range(3):
            x = rng.standard_normal(shape).astype(dtype)
            assert_identical(inference(frozen, x, None), inference(m, x, None))


def test_other_calls_of_a_prepared_frozen_lstm_take_the_checked_way():
    m = LSTM(I, H, seed=8)
    m.num_threads = 1
    frozen = m.freeze()
    m.eval()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    frozen(x)
    assert frozen._ready is not None
    others = {
        "state": (x, tuple(rng.standard_normal((1, B, n)).astype(np.float32) for n in (H, H)), None),
        "lengths": (x, None, [6, 0, 3, 6, 1]),
        "other_shape": (x[:, :3], None, None),
        "strided": (np.asfortranarray(x), None, None),
        "float64": (x.astype(np.float64), None, None),
        "list": (x.tolist(), None, None),
    }
    for name, (x_other, hx, lengths) in others.items():
        frozen(x)  # prepared again
        if name == "float64":
            with pytest.raises(TypeError):
                frozen(x_other, hx, lengths=lengths)
            continue
        assert_identical(
            inference(frozen, x_other, hx, lengths), inference(m, x_other, hx, lengths), [name] * 3
        )
    frozen(x)
    frozen.num_threads = 0
    with pytest.raises(ValueError, match="num_threads"):
        frozen(x)


def test_a_frozen_stack_of_layers_is_not_prepared():
    frozen = LSTM(I, H, num_layers=2, seed=10).freeze()
    frozen(np.ones((T, B, I), np.float32))
    assert frozen._ready is None


def test_a_prepared_call_busy_in_another_thread_takes_the_general_way(monkeypatch):
    # The prepared kernel call serves one call at a time: while another thread's call runs
    # on it, a call goes the general way (its own scratch) with the same results.
    m = LSTM(I, H, seed=14)
    frozen = m.freeze()
    m.eval()
    rng = np.random.default_rng(15)
    frozen(rng.standard_normal((T, B, I)).astype(np.float32))
    ready = frozen._ready

    class Busy:
        tried = 0

        def run(self, x, h, c, y):
            Busy.tried += 1
            return False

    monkeypatch.setattr(ready.call, "plan", Busy())
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    assert_identical(inference(frozen, x, None), inference(m, x, None))
    assert Busy.tried == 1


def test_threads_calling_one_frozen_lstm_at_once_get_the_serial_results():
    m = LSTM(I, 64, seed=16)
    frozen = m.freeze()
    rng = np.random.default_rng(17)
    xs = [rng.standard_normal((200, B, I)).astype(np.float32) for _ in range(24)]
    serial = [inference(frozen, x, None) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda x: inference(frozen, x, None), xs))
    for got, expected in zip(concurrent, serial):
        assert_identical(got, expected)
