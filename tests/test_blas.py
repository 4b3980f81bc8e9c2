"""The kernels' building blocks against NumPy: the row-major BLAS wrapper (src/_blas.pxd,
its matrix-vector branch and its empty-size branch included), the packed-panel products
the in-place product of a single row and the weight gradients' product."""

import numpy as np
import pytest
from helpers import DTYPES, assert_close, assert_identical

from lstm_c import _lstm


def operand(rng, rows, cols, dtype, transposed):
    """A C-contiguous array whose op() is (rows, cols)."""
    a = rng.standard_normal((cols, rows) if transposed else (rows, cols)).astype(dtype)
    return a, (a.T if transposed else a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize(
    "m, n, k",
    [(5, 7, 3), (1, 7, 3), (1, 1, 9), (6, 1, 4), (3, 4, 0), (0, 4, 3), (4, 0, 3), (33, 65, 17)],
    ids=["general", "one_row_gemv", "dot", "one_column", "k0", "m0", "n0", "blocked"],
)
def test_gemm_matches_numpy(m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a, op_a = operand(rng, m, k, dtype, trans_a)
    b, op_b = operand(rng, k, n, dtype, trans_b)
    c = rng.standard_normal((m, n)).astype(dtype)
    for alpha, beta in [(1.0, 0.0), (0.5, 2.0), (-1.0, 1.0)]:
        expected = alpha * (op_a @ op_b) + beta * c
        out = c.copy()
        _lstm._gemm(trans_a, trans_b, alpha, a, b, beta, out)
        assert_close(out, expected, dtype)


def test_gemm_refuses_operands_that_do_not_fit():
    z = np.zeros
    with pytest.raises(ValueError, match="do not fit"):
        _lstm._gemm(False, False, 1.0, z((2, 3)), z((4, 5)), 0.0, z((2, 5)))


@pytest.mark.skipif(_lstm.panel_width(4) == 0, reason="this build has no packed-panel products")
@pytest.mark.parametrize("dtype", DTYPES)
# Rows of h in blocks of eight with their tail, one to three rows against several panels at
# once (four, two, then one, and a last panel cut short), in both products.
@pytest.mark.parametrize(
    "H, P, B",
    [
        (7, 7, 3),
        (16, 16, 1),
        (40, 24, 5),
        (70, 66, 64),
        (33, 3, 2),
        (100, 70, 3),
        (80, 80, 1),
        (130, 9, 2),
        (70, 66, 11),
        (40, 24, 13),
        (70, 66, 21),
        (70, 66, 28),
    ],
)
@pytest.mark.parametrize("part", ["all", "from_one_panel_on", "up_to_one_panel"])
def test_panel_products_match_numpy(H, P, B, part, dtype):
    width = _lstm.panel_width(np.dtype(dtype).itemsize)
    lo, hi = {"all": (0, max(H, P)), "from_one_panel_on": (width, max(H, P)), "up_to_one_panel": (0, width)}[
        part
    ]
    if lo > hi:
        pytest.skip(f"H and P fit in one panel of {width}")
    rng = np.random.default_rng(H * 1000 + P * 10 + B)
    w_hh = rng.standard_normal((4 * H, P)).astype(dtype)
    h = rng.standard_normal((B, P)).astype(dtype)
    dgates = rng.standard_normal((B, 4 * H)).astype(dtype)
    rec = np.full((B, 4 * H), np.nan, dtype)
    dh = np.full((B, P), np.nan, dtype)
    _lstm._panel_products(w_hh, h, rec, dgates, dh, lo, hi)
    units = np.arange(H)[(np.arange(H) >= lo) & (np.arange(H) < hi)]
    columns = np.concatenate([g * H + units for g in range(4)])
    assert_close(rec[:, columns], (h @ w_hh.T)[:, columns], dtype)
    others = np.setdiff1d(np.arange(4 * H), columns)
    assert np.isnan(rec[:, others]).all()  # nothing outside the slice is written
    features = np.arange(P)[(np.arange(P) >= lo) & (np.arange(P) < hi)]
    assert_close(dh[:, features], (dgates @ w_hh)[:, features], dtype)
    assert np.isnan(dh[:, np.setdiff1d(np.arange(P), features)]).all()


@pytest.mark.skipif(_lstm.panel_width(4) == 0, reason="this build has no packed-panel products")
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_of_the_panel_product_has_the_same_bits_in_any_block_of_rows(dtype):
    # A batch of 4-64 rows goes in blocks of 4-8 rows, by its size: each row is summed over
    # k in one order whatever its block (the threads sharing a batch by rows give every
    # thread blocks of their own).
    rng = np.random.default_rng(5)
    H, P = 70, 66
    w_hh = rng.standard_normal((4 * H, P)).astype(dtype)
    h = rng.standard_normal((64, P)).astype(dtype)
    dgates = rng.standard_normal((64, 4 * H)).astype(dtype)

    def products(B):
        rec, dh = np.empty((B, 4 * H), dtype), np.empty((B, P), dtype)
        _lstm._panel_products(w_hh, h[:B], rec, dgates[:B], dh, 0, H)
        return rec, dh

    whole = products(64)
    for B in (4, 5, 8, 12, 13, 16, 20, 21, 28, 36):
        assert_identical(products(B), [part[:B] for part in whole], [f"rec, B={B}", f"dh, B={B}"])


@pytest.mark.skipif(_lstm.panel_width(4) == 0, reason="this build has no vector products")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 3, 4, 5, 8, 13, 64])
@pytest.mark.parametrize("K", [0, 1, 7, 8, 16, 17, 40])
def test_the_in_place_product_of_a_single_row_matches_numpy(N, K, dtype):
    # N past the four rows taken at a time; K below, at and past whole vectors (16 floats, 8 doubles).
    rng = np.random.default_rng(N * 100 + K)
    w = rng.standard_normal((N, K)).astype(dtype)
    v = rng.standard_normal(K).astype(dtype)
    out = np.full(N, np.nan, dtype)
    _lstm._gemv_product(w, v, out)
    assert_close(out, w @ v, dtype)


@pytest.mark.skipif(_lstm.panel_width(4) == 0, reason="this build has no vector products")
@pytest.mark.parametrize("dtype", DTYPES)
def test_any_rows_of_the_in_place_product_give_the_same_bits_as_all_of_them(dtype):
    # LSTM.step's threads each take the rows of their units: a slice that starts or ends
    # inside a group of four rows must sum each row as the whole product does.
    rng = np.random.default_rng(11)
    w = rng.standard_normal((40, 37)).astype(dtype)
    v = rng.standard_normal(37).astype(dtype)
    whole = np.empty(40, dtype)
    _lstm._gemv_product(w, v, whole)
    for lo, hi in [(0, 5), (3, 10), (4, 11), (16, 40), (21, 34), (6, 7)]:
        part = np.full(hi - lo, np.nan, dtype)
        _lstm._gemv_product(w[lo:hi], v, part)
        assert_identical([part], [whole[lo:hi]], [f"rows {lo}:{hi}"])


@pytest.mark.skipif(_lstm.panel_width(4) == 0, reason="this build has no vector products")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "K, G, N, lo, hi",
    [
        (1, 8, 16, 0, 8),
        (300, 21, 16, 3, 20),
        (600, 40, 32, 0, 40),
        (257, 64, 48, 8, 64),
        (0, 8, 16, 0, 8),
        (70, 7, 96, 0, 7),
        (300, 23, 112, 1, 23),
        (520, 13, 1040, 0, 13),
        (300, 37, 512, 5, 30),
        (1, 12, 528, 0, 12),
        (257, 100, 1024, 0, 100),
    ],
    ids=[
        "one_position",
        "rows_past_six_and_a_slice",
        "blocks_of_positions",
        "a_block_and_one",
        "none",
        "six_vectors_of_columns",
        "seven_vectors_of_columns_and_a_slice",
        "blocks_of_columns",
        "packed_a_slice_past_groups_of_rows",
        "packed_one_position_an_odd_vector",
        "packed_blocks_of_positions_and_rows",
    ],
)
def test_the_weight_gradients_product_matches_numpy(K, G, N, lo, hi, dtype):
    # Blocks of 256 positions summed in order. Rows of x under 1 KiB are read as stored,
    # in tiles of six rows of the gradient by four vectors of columns; wider ones (from
    # blocks_of_columns on, both dtypes) through packed copies, in blocks of 96 rows.
    rng = np.random.default_rng(K * 100 + G)
    a = rng.standard_normal((K, G)).astype(dtype)
    x = rng.standard_normal((K, N)).astype(dtype)
    out = np.full((G, N), np.nan, dtype)
    _lstm._outer_product(a, x, out, lo, hi)
    # Sums of hundreds of products cancel: their error scales with the largest entry.
    assert_close(out[lo:hi], (a.T @ x)[lo:hi], dtype, scaled=True)
    assert np.isnan(out[:lo]).all() and np.isnan(out[hi:]).all()  # only the rows asked for


def test_the_weight_gradients_product_needs_whole_vectors_of_columns():
    with pytest.raises(ValueError, match="do not fit"):
        _lstm._outer_product(np.zeros((4, 8)), np.zeros((4, 5)), np.zeros((8, 5)), 0, 8)
