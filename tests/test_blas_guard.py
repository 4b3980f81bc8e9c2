"""The 32-bit BLAS guard: sizes past what a 32-bit BLAS integer holds are refused, with the
dimension named, before memory is touched or any compiled kernel runs (the `kernels`
fixture), by the functional API, its reference and the layer alike."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import APIS, assert_mentions, make_problem, zero_stride

from lstm_c import LSTM, _validation
from lstm_c._validation import BLAS_INT_MAX

HUGE = 2**31  # one more than the largest 32-bit BLAS integer


def huge_problems():
    """Arguments whose sizes pass every other check but one BLAS dimension, and that dimension."""
    f = np.float32
    return {
        "seq_len*batch": (
            dict(x=zero_stride((2**16, 2**15, 1)), w_ih=zero_stride((4, 1)), w_hh=zero_stride((4, 1))),
            {},
        ),
        "seq_len*batch (batch_first)": (
            dict(x=zero_stride((2**15, 2**16, 1)), w_ih=zero_stride((4, 1)), w_hh=zero_stride((4, 1))),
            dict(batch_first=True),
        ),
        "4*hidden_size": (
            dict(x=np.zeros((1, 1, 1), f), w_ih=zero_stride((HUGE, 1)), w_hh=zero_stride((HUGE, HUGE // 4))),
            {},
        ),
        "input_size": (
            dict(x=zero_stride((1, 1, HUGE)), w_ih=zero_stride((4, HUGE)), w_hh=zero_stride((4, 1))),
            {},
        ),
        "proj_size": (
            dict(
                x=np.zeros((1, 1, 1), f),
                w_ih=zero_stride((4, 1)),
                w_hh=zero_stride((4, HUGE)),
                w_hr=zero_stride((HUGE, 1)),
            ),
            {},
        ),
    }


@APIS
@pytest.mark.parametrize("dimension", list(huge_problems()))
def test_sizes_past_32_bit_blas_are_refused_before_memory_is_touched(api, dimension, kernels):
    args, options = huge_problems()[dimension]
    name = dimension.split(" ")[0]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            api.lstm_forward(**args, **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_mentions(info, [f"{name} = {HUGE}", str(BLAS_INT_MAX), "32-bit BLAS"])
    assert peak < 2**20, f"{peak} bytes allocated before refusing"
    assert kernels == []


def test_lstm_refuses_huge_inputs_before_memory_is_touched(kernels):
    m = LSTM(1, 4)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"seq_len\*batch = {HUGE} exceeds {BLAS_INT_MAX}"):
            m(zero_stride((2**16, 2**15, 1)))
        with pytest.raises(ValueError, match=rf"batch = {HUGE} exceeds"):
            m.step(zero_stride((HUGE, 1)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert kernels == []


@pytest.fixture
def small_blas_limit(monkeypatch):
    """Pretend BLAS integers end at 100, to check the guard at its edge with small arrays."""
    monkeypatch.setattr(_validation, "BLAS_INT_MAX", 100)
    return 100


@pytest.mark.parametrize(
    "dimension, fits, refused",
    [
        ("seq_len*batch", dict(T=10, B=10, I=1, H=1), dict(T=101, B=1, I=1, H=1)),
        ("seq_len*batch", dict(T=10, B=10, I=1, H=1), dict(T=11, B=10, I=1, H=1)),
        ("4*hidden_size", dict(T=1, B=1, I=1, H=25), dict(T=1, B=1, I=1, H=26)),
        ("input_size", dict(T=1, B=1, I=100, H=1), dict(T=1, B=1, I=101, H=1)),
        ("proj_size", dict(T=1, B=1, I=1, H=2, P=100), dict(T=1, B=1, I=1, H=2, P=101)),
    ],
)
@APIS
def test_the_blas_guard_at_its_edge(api, dimension, fits, refused, small_blas_limit, kernels):
    rng = np.random.default_rng(0)
    ok = make_problem(rng, **fits)
    y, h, c, cache = api.lstm_forward(**ok)
    api.lstm_backward(cache, y)
    del kernels[:]
    bad = make_problem(rng, **refused)
    with pytest.raises(ValueError, match=rf"{dimension.replace('*', '[*]')} = \d+ exceeds 100 "):
        api.lstm_forward(**bad)
    assert kernels == []


def test_the_layer_blas_guard_at_its_edge(small_blas_limit, kernels):
    for args, words in [
        (dict(input_size=1, hidden_size=26), "4*hidden_size = 104"),
        (dict(input_size=101, hidden_size=2), "input_size = 101"),
    ]:
        with pytest.raises(ValueError, match=words):
            LSTM(**args)
    m = LSTM(1, 25, num_layers=2, bidirectional=True)
    m(np.zeros((10, 10, 1), np.float32))
    one_way = LSTM(1, 25, num_layers=2)
    one_way.step(np.zeros((100, 1), np.float32))
    del kernels[:]
    with pytest.raises(ValueError, match=r"seq_len\*batch = 110 exceeds 100"):
        m(np.zeros((11, 10, 1), np.float32))
    with pytest.raises(ValueError, match="batch = 101 exceeds 100"):
        one_way.step(np.zeros((101, 1), np.float32))
    assert kernels == []


def test_the_guard_covers_every_dimension_the_kernels_give_blas(monkeypatch):
    """The names check_forward passes to check_blas_sizes: rows, 4H, I, P and H."""
    seen = {}
    monkeypatch.setattr(_validation, "check_blas_sizes", seen.update)
    monkeypatch.setattr(_validation, "BLAS_INT_MAX", 0)  # every size is then checked by name
    none = dict(b_ih=None, b_hh=None, h0=None, c0=None, lengths=None, batch_first=False)
    _validation.check_forward(
        np.zeros((2, 3, 4)), np.zeros((20, 4)), np.zeros((20, 2)), **none, w_hr=np.zeros((2, 5))
    )
    assert seen == {
        "seq_len*batch": 6,
        "4*hidden_size": 20,
        "input_size": 4,
        "proj_size": 2,
        "hidden_size": 5,
    }
