"""The layer stack (lstm_c._stack) and the parameter names (lstm_c._params) on their own.

The layer tests compare lstm_c.LSTM with this same stack run over lstm_c.reference, so
the stack's wiring is checked here by watching the calls it makes: which inputs, states
and gradients each layer and direction gets, and how their results are combined.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import layer_inputs, layer_names

from lstm_c import LSTM, reference
from lstm_c._params import KINDS, layer_param_names, param_name, parse_param_name
from lstm_c._stack import stack_backward, stack_forward


def test_parameter_names_are_pytorchs():
    # The one place the names are spelled out: torch.nn.LSTM's state_dict keys.
    assert param_name("weight_ih", 0) == "weight_ih_l0"
    assert param_name("bias_hh", 2, reverse=True) == "bias_hh_l2_reverse"
    assert KINDS == ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "peephole")
    for kind in KINDS:
        for layer, reverse in [(0, False), (1, True), (12, False)]:
            assert parse_param_name(param_name(kind, layer, reverse)) == (kind, layer, reverse)
    for other in ("lstm.weight_ih_l0", "weight_ih_l", "weight_ih_l0_forward", "bias_l0", 5, None):
        assert parse_param_name(other) is None, other


def test_layer_param_names_are_in_layer_then_direction_order():
    names = layer_param_names(2, 2, bias=False, projection=True, peephole=False)
    assert [(n.w_ih, n.b_ih, n.peephole) for n in names] == [
        (param_name("weight_ih", layer, reverse), None, None) for layer in (0, 1) for reverse in (False, True)
    ]
    assert [n.w_hr for n in names] == [param_name("weight_hr", k // 2, k % 2 == 1) for k in range(4)]


def recording(api):
    """`api` with every lstm_forward and lstm_backward call recorded (arguments and results)."""
    calls = SimpleNamespace(forward=[], backward=[])

    def lstm_forward(x, w_ih, *args, **kwargs):
        result = api.lstm_forward(x, w_ih, *args, **kwargs)
        calls.forward.append(
            SimpleNamespace(
                x=x, w_ih=w_ih, h0=args[3], c0=args[4], kwargs=kwargs, y=result[0], cache=result[3]
            )
        )
        return result

    def lstm_backward(cache, dy, dh_n, dc_n, **kwargs):
        grads = api.lstm_backward(cache, dy, dh_n, dc_n, **kwargs)
        calls.backward.append(SimpleNamespace(cache=cache, dy=dy, dh_n=dh_n, dc_n=dc_n, grads=grads))
        return grads

    return SimpleNamespace(lstm_forward=lstm_forward, lstm_backward=lstm_backward), calls


def same(a, b):
    """a is b, or a view of the same memory with the same values (such as hx[0][k])."""
    return a is b or (np.shares_memory(a, b) and a.shape == b.shape and np.array_equal(a, b))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_the_stack_wires_layers_and_directions(dropout):
    m = LSTM(3, 4, num_layers=3, bidirectional=True, proj_size=2, dropout=dropout, dtype=np.float64, seed=1)
    x, hx, dy, dhx = layer_inputs(m, np.random.default_rng(1), 5, 2)
    names, params, D, L = layer_names(m), m.state_dict(), 2, 3
    masks = {layer: np.random.default_rng(layer).integers(0, 2, (5, 2, 4)) * 2.0 for layer in (1, 2)}
    api, calls = recording(reference)
    y, h_n, c_n, trace = stack_forward(
        api,
        params,
        names,
        D,
        x,
        *hx,
        lengths=[5, 3],
        training=True,
        dropout_mask=(lambda layer, shape: masks[layer]) if dropout else None,
        num_threads=1,
    )
    assert len(calls.forward) == L * D
    for k, call in enumerate(calls.forward):
        layer, direction = divmod(k, D)
        assert call.w_ih is params[names[k].w_ih]
        assert same(call.h0, hx[0][k]) and same(call.c0, hx[1][k])
        assert call.kwargs["reverse"] == (direction == 1) and call.kwargs["num_threads"] == 1
        np.testing.assert_array_equal(call.kwargs["lengths"], [5, 3])
        if layer == 0:
            assert call.x is x
        else:  # the previous layer's outputs, [forward, reverse], times its dropout mask
            below = np.concatenate(
                [calls.forward[k - direction - D].y, calls.forward[k - direction - D + 1].y], -1
            )
            np.testing.assert_array_equal(call.x, below * masks[layer] if dropout else below)
    np.testing.assert_array_equal(y, np.concatenate([calls.forward[-2].y, calls.forward[-1].y], -1))
    assert trace.masks == ([masks[1], masks[2]] if dropout else [None, None])
    assert [c for layer in trace.caches for c in layer] == [call.cache for call in calls.forward]

    dx, dh0, dc0, grads = stack_backward(api, names, D, trace, dy, *dhx, num_threads=1)
    by_cache = {id(call.cache): call for call in calls.backward}
    assert len(by_cache) == L * D
    for k, forward in enumerate(calls.forward):
        layer, direction = divmod(k, D)
        call = by_cache[id(forward.cache)]
        assert same(call.dh_n, dhx[0][k]) and same(call.dc_n, dhx[1][k])
        np.testing.assert_array_equal(dh0[k], call.grads.dh0)
        if layer == L - 1:
            np.testing.assert_array_equal(call.dy, dy[..., direction * 2 : (direction + 1) * 2])
        else:  # the gradient of this layer's half of the next layer's input
            above = [by_cache[id(calls.forward[(layer + 1) * D + d].cache)].grads.dx for d in range(D)]
            d_input = (above[0] + above[1]) * (masks[layer + 1] if dropout else 1)
            np.testing.assert_array_equal(call.dy, d_input[..., direction * 2 : (direction + 1) * 2])
        assert grads[names[k].w_ih] is call.grads.dw_ih and grads[names[k].w_hr] is call.grads.dw_hr
        np.testing.assert_array_equal(grads[names[k].b_hh], grads[names[k].b_ih])
    first = [by_cache[id(calls.forward[d].cache)].grads.dx for d in range(D)]
    np.testing.assert_array_equal(dx, first[0] + first[1])
    assert set(grads) == set(params)
