"""Peak extra memory of the functional API, as the user guide's "What is promised" page (Memory) states it.

NumPy reports its allocations to tracemalloc, so the peak traced during a call
is the memory the call needed beyond its inputs. A call's scratch is kept by its
thread for the next call of the same sizes: the first call allocates it, the next
ones only their outputs.
"""

import math
import tracemalloc

import numpy as np
import pytest
from helpers import make_problem

import lstm_c
from lstm_c import _scratch, functional
from lstm_c._validation import check_forward

T, B, I, H = 60, 8, 16, 32
N = T * B
ITEM = 8  # float64
SMALL = 64 * 1024  # per-step buffers and Python objects


@pytest.fixture
def inputs():
    p = make_problem(np.random.default_rng(0), T, B, I, H, bias=False, state=False)
    # The first call binds to SciPy's BLAS once (threadpoolctl): not the call's memory.
    y, _, _, cache = lstm_c.lstm_forward(**p)
    lstm_c.lstm_backward(cache, y)
    return p


def packed_weights(blocked_hh, other_hh, blocked_ih, other_ih):
    """Bytes of the packed copies of W_hh and W_ih a call holds while it runs."""
    dtype = np.dtype(np.float64)
    copies = [
        functional._panels(B, blocked_hh, other_hh, dtype),
        functional._input_panels(blocked_ih, other_ih, dtype),
    ]
    return sum(math.prod(shape) * dtype.itemsize for shape in copies if shape is not None)


def peak_of(call):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_inference_peak_is_output_plus_one_chunk_of_gate_preactivations(inputs):
    _scratch.clear()
    _scratch.clear_outputs()  # no kept memory for the output to take
    first, peak = peak_of(lambda: lstm_c.lstm_forward(**inputs, training=False))
    chunk = lstm_c._lstm.inference_chunk_steps(T, B, H, I, ITEM)
    output = N * H * ITEM
    scratch = chunk * B * 4 * H * ITEM + packed_weights(H, H, H, I)  # one chunk of the input projection
    assert output + scratch <= peak <= output + scratch + SMALL
    # The next call of the same sizes reuses the scratch (its output is new: the first
    # call's is still alive).
    _, peak = peak_of(lambda: lstm_c.lstm_forward(**inputs, training=False))
    assert output <= peak <= output + SMALL
    del first
    # Once the first output is freed, a next call's output takes its memory back.
    _, peak = peak_of(lambda: lstm_c.lstm_forward(**inputs, training=False))
    assert peak <= SMALL


def test_inference_keeps_only_the_outputs(inputs):
    result, _ = peak_of(lambda: lstm_c.lstm_forward(**inputs, training=False))
    tracemalloc.start()
    try:
        kept_before = tracemalloc.get_traced_memory()[0]
        y, h_n, c_n, cache = lstm_c.lstm_forward(**inputs, training=False)
        kept = tracemalloc.get_traced_memory()[0] - kept_before
    finally:
        tracemalloc.stop()
    assert cache is None
    assert kept <= (N * H + 2 * B * H) * ITEM + SMALL


def test_training_cache_is_six_h_per_position(inputs):
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        y, h_n, c_n, cache = lstm_c.lstm_forward(**inputs)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    cached = cache.act.nbytes + cache.c_prev.nbytes + cache.h_prev.nbytes
    assert cached == N * 6 * H * ITEM
    assert cache.args.x is inputs["x"]  # a reference, not a copy
    assert kept <= cached + y.nbytes + SMALL


def test_backward_peak_is_gradients_plus_gate_gradients(inputs):
    y, _, _, cache = lstm_c.lstm_forward(**inputs)
    dy = np.ones_like(y)
    _scratch.clear()
    _, peak = peak_of(lambda: lstm_c.lstm_backward(cache, dy))
    grads = (N * I + 4 * H * (I + H + 1)) * ITEM
    scratch = N * 4 * H * ITEM + packed_weights(H, H, I, H)
    assert grads + scratch <= peak <= grads + scratch + SMALL
    _, peak = peak_of(lambda: lstm_c.lstm_backward(cache, dy))
    assert grads <= peak <= grads + SMALL


def test_the_scratch_kept_between_calls_is_bounded(monkeypatch):
    monkeypatch.setattr(_scratch, "MAX_BYTES", 1 << 20)  # small, so that few calls reach it
    rng = np.random.default_rng(1)
    _scratch.clear()
    for hidden in range(8, 64, 8):  # calls of many sizes, each leaving its scratch
        p = make_problem(rng, 60, 8, 16, hidden, bias=False, state=False)
        y, _, _, cache = lstm_c.lstm_forward(**p)
        lstm_c.lstm_backward(cache, y)
        assert 0 < _scratch.kept_bytes() <= _scratch.MAX_BYTES
        assert len(_scratch._kept.sets) <= _scratch.MAX_SETS
    # Scratch larger than the bound is never kept: the kept sets stay as they were.
    p = make_problem(rng, 100, 16, 8, 64, bias=False, state=False)
    y, _, _, cache = lstm_c.lstm_forward(**p)
    kept = _scratch.kept_bytes()
    lstm_c.lstm_backward(cache, y)  # gate gradients of 100·16 positions: 3.1 MiB
    assert _scratch.kept_bytes() == kept
    _scratch.clear()


def test_a_call_that_starts_while_another_holds_the_scratch_gets_its_own(inputs):
    # As a signal handler's call would, in the same thread, while a call runs.
    y, _, _, _ = lstm_c.lstm_forward(**inputs, training=False)
    args = check_forward(inputs["x"], inputs["w_ih"], inputs["w_hh"], None, None, None, None, None, False)
    shapes = functional._workspace(args, "inference")[1]
    held = _scratch.take("inference", args.dtype, shapes)
    assert held.arrays["gates"] is not None
    y_inner, _, _, _ = lstm_c.lstm_forward(**inputs, training=False)
    again = _scratch.take("inference", args.dtype, shapes)
    assert all(again.arrays[k] is not a for k, a in held.arrays.items() if a is not None)
    _scratch.give(held)
    np.testing.assert_array_equal(y_inner, y)


# --------------------------------------------------------------------------------------
# The memory of large outputs is kept once freed and serves a later output


@pytest.fixture
def no_kept_outputs():
    _scratch.clear_outputs()
    yield
    _scratch.clear_outputs()


def test_a_freed_large_output_lends_its_memory_to_the_next_one(no_kept_outputs):
    f8 = np.dtype(np.float64)
    shape = (_scratch.OUTPUT_MIN_BYTES // 8 // 8, 16)  # twice the size worth keeping
    first = _scratch.output(shape, f8)
    address = first.ctypes.data
    second = _scratch.output(shape, f8)  # the first is alive: memory of its own
    assert not np.shares_memory(first, second)
    view = first[1:]
    del first
    third = _scratch.output(shape, f8)  # a view of the first is alive
    assert not np.shares_memory(third, view)
    del view
    fourth = _scratch.output((shape[0] - 1, 16), f8)  # a little smaller: fits the first's block
    assert fourth.ctypes.data == address
    assert fourth.shape == (shape[0] - 1, 16) and fourth.dtype == f8 and fourth.flags.c_contiguous
    assert fourth.flags.writeable
    small = _scratch.output((4, 4), f8)  # below the size worth keeping: NumPy's own
    assert small.flags.owndata


def test_the_kept_output_memory_is_bounded(no_kept_outputs, monkeypatch):
    monkeypatch.setattr(_scratch, "OUTPUTS_MAX_BYTES", 4 * _scratch.OUTPUT_MIN_BYTES)
    alive = []
    for k in range(1, 12):  # outputs of many sizes, some kept alive
        out = _scratch.output((k * _scratch.OUTPUT_MIN_BYTES // 4,), np.dtype(np.float32))
        if k % 3 == 0:
            alive.append(out)
        assert _scratch.kept_output_bytes() <= _scratch.OUTPUTS_MAX_BYTES
    assert all(not np.shares_memory(a, b) for i, a in enumerate(alive) for b in alive[i + 1 :])


def test_the_kept_output_blocks_are_bounded_in_number(no_kept_outputs, monkeypatch):
    monkeypatch.setattr(_scratch, "OUTPUTS_MAX_BLOCKS", 3)
    f4 = np.dtype(np.float32)
    alive = [_scratch.output((_scratch.OUTPUT_MIN_BYTES // 4 + k,), f4) for k in range(5)]
    assert len(_scratch._blocks) == 3  # all in use: the last two have memory of their own
    del alive[:]
    fresh = _scratch.output((_scratch.OUTPUT_MIN_BYTES // 2,), f4)  # fits no kept block
    assert len(_scratch._blocks) == 3 and any(b is fresh.base for b in _scratch._blocks)
    reused = _scratch.output((_scratch.OUTPUT_MIN_BYTES // 4,), f4)  # a kept block serves it
    assert any(b is reused.base for b in _scratch._blocks)


def test_a_call_never_writes_into_the_outputs_of_an_earlier_call_still_alive(no_kept_outputs):
    # Training outputs of 2 MiB: large enough to be kept.
    rng = np.random.default_rng(3)
    p = make_problem(rng, 64, 32, 16, 64, bias=False, state=False)
    y, h_n, c_n, cache = lstm_c.lstm_forward(**p)
    assert cache.act.nbytes >= _scratch.OUTPUT_MIN_BYTES
    kept = [a.copy() for a in (y, cache.act, cache.c_prev, cache.h_prev)]
    grads = lstm_c.lstm_backward(cache, np.ones_like(y))
    p2 = dict(p, x=2 * p["x"])
    for _ in range(3):  # calls whose outputs are freed at once reuse memory among themselves
        lstm_c.lstm_backward(lstm_c.lstm_forward(**p2)[3], np.ones_like(y))
    for a, b in zip(kept, (y, cache.act, cache.c_prev, cache.h_prev)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lstm_c.lstm_backward(cache, np.ones_like(y)).dx, grads.dx)
    assert _scratch.kept_output_bytes() > 0


# --------------------------------------------------------------------------------------
# The arrays the kernels stream start on a cache line, wherever NumPy's allocator puts
# an array of its own (16-byte aligned)


def on_a_line(a):
    return a.ctypes.data % _scratch.ALIGNMENT == 0


def off_a_line(a, offset=16):
    """A copy of `a` whose data starts `offset` bytes into a cache line."""
    raw = np.empty(a.nbytes + 2 * _scratch.ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _scratch.ALIGNMENT + offset
    out = raw[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not on_a_line(out)
    return out


def test_scratch_packed_weights_and_large_outputs_start_on_a_cache_line(no_kept_outputs):
    f4, f8 = np.dtype(np.float32), np.dtype(np.float64)
    for shape in [(1,), (3, 5), (7, 1000)]:
        a = _scratch.empty(shape, f4)
        assert on_a_line(a) and a.shape == shape and a.dtype == f4 and a.flags.c_contiguous
    arrays = _scratch.allocate(f8, {"gates": (40, 33), "rec": (3, 12), "unused": None})
    assert arrays["unused"] is None and all(on_a_line(arrays[k]) for k in ("gates", "rec"))
    rng = np.random.default_rng(4)
    w_ih, w_hh = off_a_line(rng.standard_normal((4 * H, I))), off_a_line(rng.standard_normal((4 * H, H)))
    packed = functional.pack_weights(w_ih, w_hh)
    assert on_a_line(packed.panels) and on_a_line(packed.ih_panels)
    shape = (_scratch.OUTPUT_MIN_BYTES // 8 + 3, 1)  # large enough to be kept
    first = _scratch.output(shape, f8)
    del first
    again = _scratch.output((shape[0] - 1, 1), f8)  # on the first's block
    assert on_a_line(again) and again.base is _scratch._blocks[-1]


def test_a_modules_parameters_start_on_a_cache_line():
    m = lstm_c.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=8)
    assert all(on_a_line(p) for p in m.params.values())
    loaded = {name: off_a_line(p.astype(np.float64) + 1) for name, p in m.params.items()}
    m.load_state_dict(loaded)  # converted to the module's float32
    for name, p in m.params.items():
        assert on_a_line(p) and p.dtype == m.dtype and p.flags.c_contiguous and p.flags.writeable
        np.testing.assert_array_equal(p, loaded[name].astype(m.dtype))
    frozen = m.freeze()
    assert all(on_a_line(p) for p in frozen._module._params.values())
