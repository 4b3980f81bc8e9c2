"""Bounded-memory training: ``checkpoint_every=k`` (lstm_c/_checkpoint.py), and
truncated backpropagation through time by chunks.

A checkpointed forward keeps the state every k steps; its backward recomputes
each segment of k steps from its checkpoint with the same kernels. Compared
with the full cache's results: y, h_n, c_n, dx, dh0 and dc0 are bitwise equal
(the same kernels compute the same values per position); the weight gradients
are sums over segments, equal up to summation order.
"""

from __future__ import annotations

import math
import signal
import tracemalloc

import numpy as np
import pytest
from helpers import (
    VARIANTS,
    assert_close,
    assert_identical,
    assert_mentions,
    grads_for,
    layer_call,
    layer_call_names,
    layer_inputs,
    make_problem,
)

import lstm_c
from lstm_c import functional, reference
from lstm_c._types import CheckpointCache, LSTMCache

# Exact except for the weight gradients, whose sums run segment by segment:
# measured up to 2e-15 (float64) and 9e-7 (float32) of the largest entry.
SUMMED = ("dw_ih", "dw_hh", "db", "dw_hr", "dpeephole")
SUMMATION = {np.float64: 1e-12, np.float32: 1e-5}

LENGTHS = {
    "full": None,
    "mixed": [23, 0, 7, 14, 1, 23],  # 0, T, a segment boundary (14 = 2·7) and inside segments
}


def assert_like_full_cache(ours, full, dtype, names=None):
    """Bitwise equal, but for the weight gradients: within summation order of the largest entry."""
    names = list(names or full._fields)
    for name, a, b in zip(names, ours, full):
        if a is None or b is None:
            assert a is None and b is None, name
        elif name in SUMMED or name.startswith(("weight", "bias", "peephole")):
            scale = SUMMATION[np.dtype(dtype).type] * max(float(np.abs(b).max(initial=0)), 1e-30)
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_allclose(a, b, rtol=0, atol=scale, err_msg=name)
        else:
            assert_identical(a, b, [name])


def forward_backward(p, grads, **options):
    y, h, c, cache = lstm_c.lstm_forward(**p, **options)
    return (y, h, c), lstm_c.lstm_backward(cache, *grads, num_threads=options.get("num_threads"))


# ----------------------------------------------------------------------------- every option


@pytest.mark.parametrize("every", [1, 3, 7, 23, 40])
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradients_equal_the_full_cache(dtype, variant, batch_first, reverse, lengths, every):
    rng = np.random.default_rng(every * 7 + reverse + 2 * batch_first)
    p = make_problem(rng, 23, 6, 4, 7, dtype, batch_first=batch_first, **VARIANTS[variant])
    grads = grads_for(rng, p, batch_first=batch_first)
    options = dict(lengths=LENGTHS[lengths], reverse=reverse, batch_first=batch_first)
    full_out, full = forward_backward(p, grads, **options)
    out, ours = forward_backward(p, grads, **options, checkpoint_every=every)
    assert_identical(out, full_out, ["y", "h_n", "c_n"])
    assert_like_full_cache(ours, full, dtype)


@pytest.mark.parametrize("which", ["dy_only", "state_only", "none"])
def test_missing_output_gradients_mean_zeros(which):
    rng = np.random.default_rng(3)
    p = make_problem(rng, 17, 4, 3, 5, P=2, peephole=True)
    grads = grads_for(rng, p, which=which)
    options = dict(lengths=[17, 9, 0, 4], reverse=True)
    _, full = forward_backward(p, grads, **options)
    _, ours = forward_backward(p, grads, **options, checkpoint_every=4)
    assert_like_full_cache(ours, full, np.float64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", [1e30, -1], ids=["panels", "blas"])
def test_both_recurrent_products_and_thread_counts(path, threads, monkeypatch):
    # B·H large enough for the kernels to split a step over two threads.
    monkeypatch.setattr(functional, "_PANEL_MAX_STEP_FLOPS", path)
    monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", path)
    rng = np.random.default_rng(threads)
    p = make_problem(rng, 30, 20, 8, 48, np.float32, P=16, peephole=True)
    grads = grads_for(rng, p)
    options = dict(lengths=np.arange(20) * 3 // 2, reverse=True, num_threads=threads)
    full_out, full = forward_backward(p, grads, **options)
    out, ours = forward_backward(p, grads, **options, checkpoint_every=5)
    assert_identical(out, full_out)
    assert_like_full_cache(ours, full, np.float32)


def test_matches_the_reference():
    rng = np.random.default_rng(4)
    p = make_problem(rng, 19, 5, 3, 6, P=4, peephole=True, batch_first=True)
    grads = grads_for(rng, p, batch_first=True)
    options = dict(lengths=[19, 3, 0, 11, 12], reverse=True, batch_first=True)
    out, ours = forward_backward(p, grads, **options, checkpoint_every=4)
    y, h, c, cache = reference.lstm_forward(**p, **options)
    assert_close(out, (y, h, c), np.float64)
    assert_close(ours, reference.lstm_backward(cache, *grads), np.float64)


def test_nan_in_padding_does_not_reach_any_result():
    rng = np.random.default_rng(5)
    p = make_problem(rng, 12, 3, 2, 4)
    lengths = np.array([12, 5, 0])
    p["x"][5:, 1] = np.nan
    p["x"][:, 2] = np.inf
    for reverse in (False, True):
        grads = grads_for(rng, p)
        full_out, full = forward_backward(p, grads, lengths=lengths, reverse=reverse)
        out, ours = forward_backward(p, grads, lengths=lengths, reverse=reverse, checkpoint_every=4)
        assert all(np.isfinite(a).all() for a in (*out, *ours) if a is not None)
        assert_identical(out, full_out)
        assert_like_full_cache(ours, full, np.float64)


# ----------------------------------------------------------------------------- the cache and inference


def test_cache_holds_only_the_checkpoints_and_can_be_used_twice():
    rng = np.random.default_rng(7)
    p = make_problem(rng, 20, 3, 2, 5, P=3)
    y, h, c, cache = lstm_c.lstm_forward(**p, lengths=[20, 13, 0], checkpoint_every=6)
    assert isinstance(cache, CheckpointCache) and not isinstance(cache, LSTMCache)
    assert cache.every == 6 and cache.h.shape == (4, 3, 3) and cache.c.shape == (4, 3, 5)
    np.testing.assert_array_equal(cache.h[0], p["h0"])  # the first checkpoint is the initial state
    assert cache.h[0] is not p["h0"] and not np.shares_memory(cache.h, p["h0"])
    assert cache.args.x is p["x"]  # a reference, not a copy
    assert "checkpoint_every=6" in repr(cache) and "checkpoints=4" in repr(cache)
    grads = grads_for(rng, p)
    first = lstm_c.lstm_backward(cache, *grads)
    assert_identical(lstm_c.lstm_backward(cache, *grads), first)


def test_inference_runs_in_segments_and_returns_no_cache():
    rng = np.random.default_rng(8)
    p = make_problem(rng, 21, 4, 3, 5, peephole=True)
    for reverse in (False, True):
        options = dict(lengths=[21, 2, 0, 10], reverse=reverse, training=False)
        full = lstm_c.lstm_forward(**p, **options)
        ours = lstm_c.lstm_forward(**p, **options, checkpoint_every=4)
        assert ours[3] is None
        assert_identical(ours[:3], full[:3])


@pytest.mark.parametrize("every", [1, 2, 100])
@pytest.mark.parametrize("case", [(0, 3), (3, 0), (0, 0), (4, 3, [0, 0, 0]), (4, 3, [0, 4, 1])])
def test_degenerate_sizes(case, every):
    T, B, *lengths = case
    rng = np.random.default_rng(T * 10 + B)
    p = make_problem(rng, T, B, 2, 3, P=2, peephole=True)
    grads = grads_for(rng, p)
    options = dict(lengths=lengths[0] if lengths else None, reverse=True)
    full_out, full = forward_backward(p, grads, **options)
    out, ours = forward_backward(p, grads, **options, checkpoint_every=every)
    assert_identical(out, full_out)
    assert_like_full_cache(ours, full, np.float64)


# ----------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    "value, error",
    [
        (2.0, TypeError),
        ("4", TypeError),
        (True, TypeError),
        (np.bool_(True), TypeError),
        ([4], TypeError),
        (0, ValueError),
        (-3, ValueError),
        (np.int64(0), ValueError),
    ],
)
def test_checkpoint_every_must_be_none_or_an_int_of_at_least_one(value, error):
    # A wrong type is a TypeError, a wrong value a ValueError, in the functional API and the layer.
    p = make_problem(np.random.default_rng(0), 4, 2, 3, 5)
    with pytest.raises(error, match="checkpoint_every must be None or an int >= 1"):
        lstm_c.lstm_forward(**p, checkpoint_every=value)
    with pytest.raises(error, match="checkpoint_every"):
        lstm_c.LSTM(3, 5, checkpoint_every=value)


def test_numpy_ints_are_accepted():
    p = make_problem(np.random.default_rng(0), 9, 2, 3, 5)
    *_, cache = lstm_c.lstm_forward(**p, checkpoint_every=np.int32(4))
    assert cache.every == 4 and type(cache.every) is int


def test_a_changed_cache_or_input_is_refused():
    rng = np.random.default_rng(9)
    p = make_problem(rng, 10, 3, 2, 4)
    *_, cache = lstm_c.lstm_forward(**p, checkpoint_every=3)
    cache.h = cache.h[:-1]
    with pytest.raises(ValueError, match="cache.h must be the"):
        lstm_c.lstm_backward(cache)
    *_, cache = lstm_c.lstm_forward(**p, checkpoint_every=3)
    cache.every = 0
    with pytest.raises(ValueError, match="cache.every"):
        lstm_c.lstm_backward(cache)
    *_, cache = lstm_c.lstm_forward(**p, checkpoint_every=3)
    p["x"].resize((5, 3, 2), refcheck=False)
    with pytest.raises(ValueError, match="no longer matches"):
        lstm_c.lstm_backward(cache)
    with pytest.raises(TypeError) as error:
        lstm_c.lstm_backward("not a cache")
    assert_mentions(error, ["LSTMCache or CheckpointCache"])


def test_output_gradients_are_checked_against_the_forward():
    p = make_problem(np.random.default_rng(10), 6, 2, 3, 4)
    y, _, _, cache = lstm_c.lstm_forward(**p, checkpoint_every=2)
    with pytest.raises(ValueError, match="dy must have shape"):
        lstm_c.lstm_backward(cache, y[:-1])
    with pytest.raises(TypeError, match="dh_n"):
        lstm_c.lstm_backward(cache, None, np.zeros((2, 4), np.float32))


# ----------------------------------------------------------------------------- Ctrl-C


def test_an_interrupt_during_the_recomputation_reaches_the_caller_and_leaves_the_cache_usable(monkeypatch):
    rng = np.random.default_rng(11)
    p = make_problem(rng, 40, 3, 2, 4)
    grads = grads_for(rng, p)
    *_, cache = lstm_c.lstm_forward(**p, checkpoint_every=5)
    expected = lstm_c.lstm_backward(cache, *grads)
    forward, calls = functional.lstm_forward, []

    def forward_then_sigint(*args, **kwargs):
        calls.append(1)
        result = forward(*args, **kwargs)
        if len(calls) == 3:  # the third segment's recomputation, as a user presses Ctrl-C
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(functional, "lstm_forward", forward_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        lstm_c.lstm_backward(cache, *grads)
    assert len(calls) == 3
    monkeypatch.undo()
    assert_identical(lstm_c.lstm_backward(cache, *grads), expected)


# ----------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("every", [1, 4, 100])
@pytest.mark.parametrize(
    "config",
    [
        dict(num_layers=2, bidirectional=True, proj_size=3, peephole=True, batch_first=True),
        dict(num_layers=3, dropout=0.3),
        dict(bidirectional=True, bias=False),
    ],
    ids=["stacked_bidirectional_projection_peephole", "dropout", "no_bias"],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer_gradients_equal_the_full_cache(dtype, config, every):
    full = lstm_c.LSTM(5, 8, **config, dtype=dtype, seed=1)
    ours = lstm_c.LSTM(5, 8, **config, dtype=dtype, seed=1, checkpoint_every=every)
    assert ours.checkpoint_every == every and f"checkpoint_every={every}" in repr(ours)
    rng = np.random.default_rng(every)
    inputs = layer_inputs(full, rng, 19, 4)
    lengths = [19, 0, 6, 13]
    expected = layer_call(full, inputs.x, inputs.hx, lengths, inputs.dy, inputs.dhx)
    actual = layer_call(ours, inputs.x, inputs.hx, lengths, inputs.dy, inputs.dhx)
    assert all(isinstance(c, CheckpointCache) for caches in ours._trace.caches for c in caches)
    assert_like_full_cache(actual, expected, dtype, names=layer_call_names(full))


def test_layer_unbatched_and_a_changed_attribute():
    m = lstm_c.LSTM(3, 6, num_layers=2, dtype=np.float64, seed=2)
    rng = np.random.default_rng(12)
    inputs = layer_inputs(m, rng, 15, 1, unbatched=True)
    expected = layer_call(m, inputs.x, inputs.hx, None, inputs.dy, inputs.dhx)
    m.checkpoint_every = 4
    actual = layer_call(m, inputs.x, inputs.hx, None, inputs.dy, inputs.dhx)
    assert_like_full_cache(actual, expected, np.float64, names=layer_call_names(m))
    m.checkpoint_every = "sqrt"
    with pytest.raises(TypeError, match="checkpoint_every"):
        m(inputs.x)
    m.checkpoint_every = None
    m(inputs.x)
    assert isinstance(m._trace.caches[0][0], LSTMCache)


# ----------------------------------------------------------------------------- memory


def test_peak_memory_stays_within_the_bound_on_a_long_sequence():
    T, B, I, H = 2000, 4, 16, 32
    k = int(math.sqrt(T)) or 1
    segments = -(-T // k)
    item = 8
    rng = np.random.default_rng(13)
    p = make_problem(rng, T, B, I, H, bias=False, state=False)
    dy = np.ones((T, B, H))

    def peak_of(every):
        tracemalloc.start()
        try:
            y, _, _, cache = lstm_c.lstm_forward(**p, checkpoint_every=every)
            g = lstm_c.lstm_backward(cache, dy)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak - y.nbytes - g.dx.nbytes  # beyond the outputs y and dx

    peak_of(k)  # the first call binds to SciPy's BLAS once: not the call's memory
    ours, full = peak_of(k), peak_of(None)
    # The checkpoints, one segment's activations, gate gradients and gathered
    # inputs (at most 10H + 3P + 3I numbers per position of a segment), the
    # weight gradients twice (a segment's and the sums), and per-call buffers.
    weights = 4 * H * (I + H + 1)
    bound = item * (segments * B * 2 * H + k * B * (10 * H + 3 * H + 3 * I) + 2 * weights) + 256 * 1024
    assert ours <= bound, (ours, bound)
    assert ours < T * B * 4 * H * item  # no array of T·B·4H numbers
    assert full >= T * B * 10 * H * item  # the full cache: 6H kept, 4H of gate gradients
    assert ours * 10 < full


# ----------------------------------------------------------------------------- truncated BPTT


def chunks_of(T, size):
    return [slice(t, min(t + size, T)) for t in range(0, T, size)]


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_chunks_with_carried_state_and_gradients_equal_one_call(batch_first):
    T = 25
    rng = np.random.default_rng(14)
    p = make_problem(rng, T, 3, 4, 5, P=2, peephole=True, batch_first=batch_first)
    dy, dh_n, dc_n = grads_for(rng, p, batch_first=batch_first)
    lengths = np.array([25, 9, 17])
    (y, h_n, c_n), full = forward_backward(p, (dy, dh_n, dc_n), lengths=lengths, batch_first=batch_first)

    def part(a, sl):
        return a[:, sl] if batch_first else a[sl]

    weights = {k: v for k, v in p.items() if k not in ("x", "h0", "c0")}
    h, c, caches, ys = p["h0"], p["c0"], [], []
    for sl in chunks_of(T, 7):  # forward: carry (h, c) from chunk to chunk
        y_j, h, c, cache = lstm_c.lstm_forward(
            part(p["x"], sl),
            **weights,
            h0=h,
            c0=c,
            lengths=np.clip(lengths - sl.start, 0, sl.stop - sl.start),
            batch_first=batch_first,
        )
        ys.append(y_j)
        caches.append(cache)
    assert_identical((np.concatenate(ys, axis=1 if batch_first else 0), h, c), (y, h_n, c_n))

    dh, dc, dxs, sums = dh_n, dc_n, [], {}
    for sl, cache in reversed(list(zip(chunks_of(T, 7), caches))):  # backward: feed dh0, dc0 back
        g = lstm_c.lstm_backward(cache, part(dy, sl), dh, dc)
        dh, dc = g.dh0, g.dc0
        dxs.insert(0, g.dx)
        for name in SUMMED:
            sums[name] = getattr(g, name) + sums.get(name, 0)
    assert_identical(
        (np.concatenate(dxs, axis=1 if batch_first else 0), dh, dc), (full.dx, full.dh0, full.dc0)
    )
    assert_like_full_cache([sums[n] for n in SUMMED], [getattr(full, n) for n in SUMMED], np.float64, SUMMED)


def test_truncated_bptt_with_the_layer_drops_only_the_gradient_across_chunks():
    T, size = 24, 8
    m = lstm_c.LSTM(3, 6, num_layers=2, dtype=np.float64, seed=3)
    rng = np.random.default_rng(15)
    x = rng.standard_normal((T, 2, 3))
    dy = rng.standard_normal((T, 2, 6))
    y_full, _ = m(x)
    m.backward(dy)
    full_grads = m.grads
    state, ys, summed = None, [], {}
    for sl in chunks_of(T, size):
        y, state = m(x[sl], state)  # the state carries on; its gradient is not fed back
        m.backward(dy[sl])
        ys.append(y)
        summed = {k: v + summed.get(k, 0) for k, v in m.grads.items()}
    assert_identical(np.concatenate(ys), y_full)  # the same outputs as one call
    # The chunks' gradients miss the terms that crossed a chunk boundary: close, not equal.
    for name, g in full_grads.items():
        assert not np.allclose(summed[name], g, rtol=1e-6, atol=0), name
        np.testing.assert_allclose(summed[name], g, rtol=0, atol=0.5 * np.abs(g).max(), err_msg=name)
