"""Calls over no positions (T * B == 0) return at once, with the right results.

However long the other dimension: a batch of 0 over 2**40 steps has nothing
to compute. The kernels must be safe on their own (whatever the Python layer
does first): forward leaves h_n = h0 and c_n = c0; backward writes dh0 = dh_n,
keeps dc0 = dc_n and writes zeros into every weight gradient (which the Python
layer allocates uninitialised).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from helpers import run_in_child

import lstm_c
from lstm_c import _lstm, reference

HUGE = 2**40

OPTIONS = [
    dict(),
    dict(P=2, peephole=True),
    dict(reverse=True, batch_first=True),
]


def problem(rng, T, B, dtype, *, P=0, peephole=False, batch_first=False, I=3, H=4):
    out = P or H
    p = dict(
        x=np.zeros((B, T, I) if batch_first else (T, B, I), dtype),
        w_ih=rng.standard_normal((4 * H, I)).astype(dtype),
        w_hh=rng.standard_normal((4 * H, out)).astype(dtype),
        b_ih=rng.standard_normal(4 * H).astype(dtype),
        b_hh=rng.standard_normal(4 * H).astype(dtype),
        h0=rng.standard_normal((B, out)).astype(dtype),
        c0=rng.standard_normal((B, H)).astype(dtype),
        batch_first=batch_first,
    )
    if P:
        p["w_hr"] = rng.standard_normal((P, H)).astype(dtype)
    if peephole:
        p["peephole"] = rng.standard_normal((3, H)).astype(dtype)
    return p


def both(rng, T, B, dtype, reverse=False, **options):
    """Forward and backward (with dh_n and dc_n) through lstm_c and the reference."""
    p = problem(rng, T, B, dtype, **options)
    out, H = p["w_hh"].shape[1], p["c0"].shape[1]
    dh_n = rng.standard_normal((B, out)).astype(dtype)
    dc_n = rng.standard_normal((B, H)).astype(dtype)
    ours = lstm_c.lstm_forward(**p, reverse=reverse)
    theirs = reference.lstm_forward(**p, reverse=reverse)
    grads = lstm_c.lstm_backward(ours[3], None, dh_n, dc_n)
    ref_grads = reference.lstm_backward(theirs[3], None, dh_n, dc_n)
    return ours[:3], theirs[:3], grads, ref_grads, dh_n, dc_n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("T, B", [(0, 3), (5, 0), (0, 0)])
def test_no_positions_match_the_reference(T, B, options, dtype):
    rng = np.random.default_rng(0)
    ours, theirs, grads, ref_grads, dh_n, dc_n = both(rng, T, B, dtype, **options)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    for name, a, b in zip(grads._fields, grads, ref_grads):
        if b is None:
            assert a is None, name
            continue
        assert a.shape == b.shape and a.dtype == dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(grads.dh0, dh_n)
    np.testing.assert_array_equal(grads.dc0, dc_n)
    for name in ("dw_ih", "dw_hh", "db", "dw_hr", "dpeephole"):
        g = getattr(grads, name)
        assert g is None or not g.any(), name


def kernel_arrays(steps, B, dtype, *, I=3, H=4, P=0, peephole=False):
    """Arguments of _lstm.forward and _lstm.backward over steps * B == 0 positions,
    every output filled with NaN so that what the kernel leaves unwritten shows."""
    out, G, rows = P or H, 4 * H, steps * B
    rng = np.random.default_rng(1)
    nan = lambda *shape: np.full(shape, np.nan, dtype)  # noqa: E731
    w = dict(
        x=np.zeros((rows, I), dtype),
        w_ih=rng.standard_normal((G, I)).astype(dtype),
        w_hh=rng.standard_normal((G, out)).astype(dtype),
        w_hr=rng.standard_normal((P, H)).astype(dtype) if P else None,
        peephole=rng.standard_normal((3, H)).astype(dtype) if peephole else None,
        lengths=np.full(B, steps, np.intp),
    )
    forward = dict(
        x=w["x"],
        w_ih=w["w_ih"],
        w_hh=w["w_hh"],
        bias=np.ones(G, dtype),
        w_hr=w["w_hr"],
        peephole=w["peephole"],
        h=np.ones((B, out), dtype),
        c=np.full((B, H), 2, dtype),
        lengths=w["lengths"],
        reverse=False,
        batch_first=False,
        steps=steps,
        gates=nan(rows, G),
        y=nan(rows, out),
        h_prev=nan(rows, out),
        c_prev=nan(rows, H),
        m_all=nan(rows, H) if P else None,
        rec=nan(B, G),
        h_next=None if P else nan(B, H),
        m_step=nan(B, H) if P else None,
        proj=nan(B, out) if P else None,
        panels=None,
        ih_panels=None,
        num_threads=2,
        split_batch=False,
    )
    dh_n = rng.standard_normal((B, out)).astype(dtype)
    dc_n = rng.standard_normal((B, H)).astype(dtype)
    grads = dict(
        dh0=nan(B, out),
        dc0=dc_n.copy(),
        dw_ih=nan(G, I),
        dw_hh=nan(G, out),
        db=nan(G),
        dw_hr=nan(P, H) if P else None,
        dpeephole=nan(3, H) if peephole else None,
    )
    backward = dict(
        x=w["x"],
        w_ih=w["w_ih"],
        w_hh=w["w_hh"],
        w_hr=w["w_hr"],
        peephole=w["peephole"],
        act=np.zeros((rows, G), dtype),
        c_prev=np.zeros((rows, H), dtype),
        h_prev=np.zeros((rows, out), dtype),
        m_all=np.zeros((rows, H), dtype) if P else None,
        lengths=w["lengths"],
        reverse=False,
        batch_first=False,
        steps=steps,
        dy=None,
        dh_n=dh_n,
        dx=nan(rows, I),
        num_threads=2,
        split_batch=False,
        dgates=nan(rows, G),
        dgates_step=np.zeros((2 * B, G), dtype),
        dh_all=nan(rows, out) if P else None,
        dh_step=nan(B, out) if P else None,
        dm_step=nan(B, H) if P else None,
        panels=None,
        ih_panels=None,
        **grads,
    )
    return forward, backward, grads, dh_n, dc_n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("extra", [dict(), dict(P=2, peephole=True)])
@pytest.mark.parametrize("steps, B", [(0, 3), (HUGE, 0), (0, 0)])
def test_the_kernels_alone_write_what_an_empty_call_defines(steps, B, extra, dtype):
    forward, backward, grads, dh_n, dc_n = kernel_arrays(steps, B, dtype, **extra)
    _lstm.forward(**forward)
    np.testing.assert_array_equal(forward["h"], 1)  # h_n = h0
    np.testing.assert_array_equal(forward["c"], 2)  # c_n = c0
    _lstm.backward(**backward)
    np.testing.assert_array_equal(grads["dh0"], dh_n)
    np.testing.assert_array_equal(grads["dc0"], dc_n)
    for name in ("dw_ih", "dw_hh", "db", "dw_hr", "dpeephole"):
        if grads[name] is not None:
            np.testing.assert_array_equal(grads[name], 0, err_msg=name)


def test_a_huge_sequence_of_an_empty_batch_returns_at_once(tmp_path):
    # In a child with a time limit, so that a kernel looping over 2**40 steps
    # fails the test instead of hanging the suite. The limit is generous: the
    # calls take microseconds, whatever the machine's load.
    script = textwrap.dedent(
        f"""
        import numpy as np
        import lstm_c

        for dtype in (np.float32, np.float64):
            for P, peephole, reverse, batch_first in [(0, False, False, False), (2, True, True, True)]:
                H, I = 4, 3
                out = P or H
                x = np.zeros((0, {HUGE}, I) if batch_first else ({HUGE}, 0, I), dtype)
                w_ih = np.ones((4 * H, I), dtype)
                w_hh = np.ones((4 * H, out), dtype)
                kw = dict(reverse=reverse, batch_first=batch_first)
                if P:
                    kw["w_hr"] = np.ones((P, H), dtype)
                if peephole:
                    kw["peephole"] = np.ones((3, H), dtype)
                y, h, c, cache = lstm_c.lstm_forward(x, w_ih, w_hh, **kw)
                assert y.shape == x.shape[:2] + (out,) and h.shape == (0, out) and c.shape == (0, H)
                g = lstm_c.lstm_backward(cache, np.zeros(y.shape, dtype))
                assert g.dx.shape == x.shape
                for a in (g.dw_ih, g.dw_hh, g.db, g.dw_hr, g.dpeephole):
                    assert a is None or not a.any()
        print("ok")
        """
    )
    proc = run_in_child(script, tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok"]
