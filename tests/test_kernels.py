"""The compiled kernels (lstm_c.lstm_forward / lstm_backward) against the NumPy reference,
over every path they take: the packed-panel recurrent product and BLAS's GEMM, one and
two threads, with and without projection and peepholes, in both dtypes."""

import os
import zlib

import numpy as np
import pytest
from helpers import DTYPES, assert_close, assert_identical, grads_for, make_problem, run

import lstm_c
from lstm_c import _lstm, _threads, functional, reference

CASES = {
    "plain": dict(T=6, B=3, I=5, H=8),
    "no_bias_no_state": dict(T=4, B=2, I=3, H=5, bias=False, state=False),
    "lengths": dict(T=7, B=5, I=4, H=9, lengths=[7, 0, 3, 7, 1]),
    "reverse": dict(T=6, B=3, I=4, H=7, reverse=True),
    "reverse_lengths": dict(T=7, B=5, I=4, H=9, reverse=True, lengths=[7, 0, 3, 7, 1]),
    "batch_first": dict(T=5, B=4, I=3, H=6, batch_first=True),
    "batch_first_reverse_lengths": dict(
        T=6, B=4, I=3, H=6, batch_first=True, reverse=True, lengths=[2, 6, 0, 5]
    ),
    "one_of_each": dict(T=1, B=1, I=1, H=1),
    "h_not_multiple_of_8": dict(T=3, B=2, I=3, H=13),
    "several_chunks": dict(T=4, B=3, I=10, H=130, lengths=[4, 2, 3]),
    "parallel_sized": dict(T=3, B=40, I=16, H=64, lengths=np.arange(40) % 4),
    "projection": dict(T=5, B=3, I=4, H=9, P=4),
    "projection_reverse_lengths": dict(T=6, B=4, I=3, H=7, P=3, reverse=True, lengths=[6, 0, 2, 5]),
    "projection_batch_first_wide": dict(T=4, B=3, I=3, H=70, P=66, batch_first=True, lengths=[4, 1, 3]),
    "peephole": dict(T=5, B=3, I=4, H=6, peephole=True),
    "peephole_reverse_lengths": dict(T=6, B=4, I=3, H=7, peephole=True, reverse=True, lengths=[6, 0, 2, 5]),
    "projection_and_peephole": dict(T=5, B=40, I=8, H=65, P=20, peephole=True, lengths=np.arange(40) % 6),
}


def split(spec):
    """(sizes and make_problem options, lstm_forward options) of a case."""
    spec = dict(spec)
    make = {k: spec.pop(k) for k in ("T", "B", "I", "H", "bias", "state", "P", "peephole") if k in spec}
    make["batch_first"] = spec.get("batch_first", False)
    return make, spec


def compare(case, spec, dtype, num_threads=None):
    """lstm_c and the reference on one case, with the same output gradients."""
    make, options = split(spec)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    problem = make_problem(rng, **make, dtype=dtype)
    grads = grads_for(rng, problem, batch_first=make["batch_first"])
    ours = run(lstm_c, problem, grads, num_threads=num_threads, **options)
    theirs = run(reference, problem, grads, **options)
    assert_close(ours[0], theirs[0], dtype, names=["y", "h_n", "c_n"])
    assert_close(ours[1], theirs[1], dtype)


# ----------------------------------------------------------------------------- every kernel path

# functional._panels picks the recurrent product: W_hh packed in panels up to
# _PANEL_MAX_STEP_FLOPS per step, BLAS's GEMM above; functional._input_panels the
# products with W_ih over all positions: panels up to _INPUT_PANELS_MAX_BYTES of
# W_ih. Each path is forced here (both products at once).
PATHS = {"panels": 1e30, "blas": -1}
# functional._split_batch picks how the threads share the time steps: by hidden
# units (a barrier every step) or by rows of the batch. Each is forced here.
SHARES = {  # (_SPLIT_BATCH_MIN_ROWS, ..._MAX_WEIGHT_BYTES)
    "units": (10**9, 0),
    "rows": (1, 1 << 62),
    "default": (functional._SPLIT_BATCH_MIN_ROWS, functional._SPLIT_BATCH_MAX_WEIGHT_BYTES),
}
PATH_CASES = {
    "small_plain_lengths": dict(T=5, B=5, I=6, H=20, lengths=[5, 0, 3, 5, 1]),
    "projection_peephole_reverse": dict(
        T=4, B=48, I=8, H=65, P=20, peephole=True, reverse=True, lengths=np.arange(48) % 5
    ),
    "batch_80_projection_peephole_batch_first": dict(
        T=3, B=80, I=8, H=40, P=12, peephole=True, batch_first=True, lengths=np.arange(80) % 4
    ),
    "batch_80_reverse": dict(T=3, B=80, I=5, H=48, reverse=True),
    # Fewer positions than gate columns and than inputs: the threads split the
    # input projection and the input gradient by columns, not rows.
    "few_positions_wide_input": dict(T=2, B=3, I=70, H=64, lengths=[2, 1, 2]),
    "few_positions_wide_input_batch_first_reverse": dict(
        T=2, B=3, I=70, H=64, batch_first=True, reverse=True
    ),
}


@pytest.fixture
def kernel_path(monkeypatch):
    """Forces a recurrent product (panels or BLAS) and a sharing of the steps between
    threads (units or rows); records the paths, thread plans and sharings taken."""
    taken = dict(panels=[], input_panels=[], plans=[], split_batch=[], forward_blas=[])
    panels, input_panels, plan = functional._panels, functional._input_panels, _threads.plan
    split_batch, calls_blas = functional._split_batch, functional._calls_blas

    def record_panels(*args):
        result = panels(*args)
        taken["panels"].append(result is not None)
        return result

    def record_input_panels(*args):
        result = input_panels(*args)
        taken["input_panels"].append(result is not None)
        return result

    def record_plan(num_threads, *sizes):
        threads = plan(num_threads, *sizes)
        taken["plans"].append((num_threads, threads))
        return threads

    def record_split_batch(*args):
        result = split_batch(*args)
        taken["split_batch"].append(result)
        return result

    def record_calls_blas(*args, **kwargs):
        result = calls_blas(*args, **kwargs)
        taken["forward_blas"].append(result)
        return result

    monkeypatch.setattr(functional, "_calls_blas", record_calls_blas)
    monkeypatch.setattr(functional, "_panels", record_panels)
    monkeypatch.setattr(functional, "_input_panels", record_input_panels)
    monkeypatch.setattr(_threads, "plan", record_plan)
    monkeypatch.setattr(functional, "_split_batch", record_split_batch)

    def force(path, share="units"):
        monkeypatch.setattr(functional, "_PANEL_MAX_STEP_FLOPS", PATHS[path])
        monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", PATHS[path])
        min_rows, max_bytes = SHARES[share]
        monkeypatch.setattr(functional, "_SPLIT_BATCH_MIN_ROWS", min_rows)
        monkeypatch.setattr(functional, "_SPLIT_BATCH_MAX_WEIGHT_BYTES", max_bytes)
        return taken

    return force


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_kernels_match_reference(case, dtype, path, kernel_path):
    taken = kernel_path(path)
    compare(case, CASES[case], dtype)
    available = _lstm.panel_width(np.dtype(dtype).itemsize) > 0
    assert taken["panels"] == [path == "panels" and available] * 2  # forward and backward
    assert taken["input_panels"] == [path == "panels" and available] * 2


def test_panels_up_to_the_step_flops_limit_then_blas():
    dtype = np.dtype(np.float32)
    if _lstm.panel_width(dtype.itemsize) == 0:
        pytest.skip("this build has no packed-panel products")
    limit = functional._PANEL_MAX_STEP_FLOPS
    hidden = 1024
    largest = int(limit // (8 * hidden * hidden))  # the largest batch whose step fits
    assert functional._panels(largest, hidden, hidden, dtype) is not None
    assert functional._panels(largest + 1, hidden, hidden, dtype) is None


def test_input_panels_up_to_the_size_limit_then_blas():
    dtype = np.dtype(np.float32)
    if _lstm.panel_width(dtype.itemsize) == 0:
        pytest.skip("this build has no packed-panel products")
    inputs = functional._INPUT_PANELS_MAX_BYTES // (4 * 256 * dtype.itemsize)  # W_ih at the limit
    assert functional._input_panels(256, inputs, dtype) is not None
    assert functional._input_panels(256, inputs + 1, dtype) is None


@pytest.mark.parametrize(
    "threads, share", [(1, "units"), (2, "units"), (2, "rows")], ids=["1", "2-units", "2-rows"]
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", PATH_CASES)
def test_each_recurrent_product_matches_the_reference(case, path, dtype, threads, share, kernel_path):
    taken = kernel_path(path, share)
    compare(case, PATH_CASES[case], dtype, num_threads=threads)
    available = _lstm.panel_width(np.dtype(dtype).itemsize) > 0
    assert taken["panels"] == [path == "panels" and available] * 2  # forward and backward
    assert taken["input_panels"] == [path == "panels" and available] * 2
    # SciPy's BLAS is held at one thread exactly when a forward product goes to it.
    projected = "P" in PATH_CASES[case]
    assert taken["forward_blas"] == [path == "blas" or not available or projected]
    assert [asked for asked, _ in taken["plans"]] == [threads] * 2
    spec = PATH_CASES[case]
    if (
        threads == 2
        and lstm_c.openmp_enabled()
        and not _threads.is_small_step(spec["B"], spec["H"], spec.get("P") or spec["H"])
    ):
        assert [used for _, used in taken["plans"]] == [2, 2]  # big enough to split
        assert taken["split_batch"] == [share == "rows"] * 2


@pytest.fixture(params=[1, 3, 8], ids=lambda n: f"row_block={n}")
def row_blocks(request):
    previous = _lstm._set_row_block(request.param)
    yield request.param
    _lstm._set_row_block(previous)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PATH_CASES)
def test_rows_taken_in_blocks_by_whichever_thread_is_free_match_the_reference(
    case, dtype, row_blocks, kernel_path
):
    taken = kernel_path("panels", "rows")
    compare(case, PATH_CASES[case], dtype, num_threads=2)
    spec = PATH_CASES[case]
    if lstm_c.openmp_enabled() and not _threads.is_small_step(
        spec["B"], spec["H"], spec.get("P") or spec["H"]
    ):
        assert taken["split_batch"] == [True, True]


# A single row (B = 1): the panels' tiles of several panels against one row of h.
SINGLE_ROW_CASES = {
    "single_row": dict(T=6, B=1, I=20, H=37),
    "single_row_projection_peephole_reverse_length": dict(
        T=7, B=1, I=18, H=21, P=19, peephole=True, reverse=True, lengths=[5]
    ),
    "single_row_wide_batch_first": dict(T=3, B=1, I=5, H=130, batch_first=True),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", SINGLE_ROW_CASES)
def test_a_single_row_matches_the_reference_on_each_recurrent_product(
    case, path, dtype, threads, kernel_path
):
    taken = kernel_path(path)
    compare(case, SINGLE_ROW_CASES[case], dtype, num_threads=threads)
    available = _lstm.panel_width(np.dtype(dtype).itemsize) > 0
    assert taken["panels"] == [path == "panels" and available] * 2  # forward and backward


# The weight gradients dgates^T x and dgates^T h_prev: lstm_outer with whole vectors of
# columns (I and P multiples of 16 floats or 8 doubles), BLAS's GEMM otherwise. Both
# forced here, on sizes the first can take.
OUTER_CASES = {
    "whole_vectors": dict(T=5, B=6, I=16, H=32, lengths=[5, 0, 3, 5, 1, 4]),
    "projection_peephole_reverse": dict(T=4, B=5, I=32, H=24, P=16, peephole=True, reverse=True),
    "over_a_block_of_positions_batch_first": dict(T=30, B=12, I=16, H=48, batch_first=True),
    "blocks_of_columns_wide_input": dict(T=30, B=12, I=272, H=20, lengths=np.arange(12) % 31),
}


@pytest.fixture(params=["outer", "blas"])
def weight_gradients_by(request):
    previous = _lstm._use_outer(request.param == "outer")
    yield request.param
    _lstm._use_outer(previous)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OUTER_CASES)
def test_each_weight_gradients_product_matches_the_reference(case, dtype, threads, weight_gradients_by):
    compare(case, OUTER_CASES[case], dtype, num_threads=threads)


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_the_steps_are_shared_by_rows_from_four_rows_per_thread_and_up_to_4_mib_of_w_hh(backward):
    w_hh = np.empty((4 * 512, 512), np.float32)  # 4 MiB
    assert functional._split_batch(2, 8, w_hh, backward)
    assert not functional._split_batch(2, 7, w_hh, backward)
    assert not functional._split_batch(1, 64, w_hh, backward)
    assert functional._split_batch(3, 12, w_hh, backward)
    assert not functional._split_batch(2, 64, np.empty((4 * 512, 513), np.float32), backward)


def w_hh_of(hidden, dtype=np.float32):
    return np.empty((4 * hidden, hidden), dtype)


def test_little_work_per_step_is_shared_by_rows_from_one_row_per_thread():
    # Forward passes: while a step is at most _threads.MAX_BARRIER_BOUND_WORK.
    assert functional._split_batch(2, 4, w_hh_of(64), False)
    assert functional._split_batch(2, 2, w_hh_of(128), False)
    assert not functional._split_batch(2, 4, w_hh_of(128), False)
    assert not functional._split_batch(2, 1, w_hh_of(128), False)  # fewer rows than threads
    # Backward passes: also up to a W_hh of 512 KiB, whatever the work.
    assert functional._split_batch(2, 6, w_hh_of(128), True)
    assert functional._split_batch(2, 2, w_hh_of(128, np.float64), True)  # 512 KiB
    assert not functional._split_batch(2, 4, w_hh_of(256), True)  # 1 MiB
    assert not functional._split_batch(2, 1, w_hh_of(128), True)
    assert not functional._split_batch(1, 4, w_hh_of(64), True)


# Fewer than 4 rows per thread, with the sharing each pass takes by default:
# (inference, training forward, backward); by rows is True.
FEW_ROWS_CASES = {
    "two_rows_lengths": (dict(T=6, B=2, I=5, H=96, lengths=[6, 3]), [True] * 3),
    "three_rows_projection_peephole_reverse": (
        dict(T=5, B=3, I=4, H=96, P=64, peephole=True, reverse=True),
        [True] * 3,
    ),
    "six_rows_batch_first": (
        dict(T=4, B=6, I=8, H=64, batch_first=True, lengths=[4, 0, 2, 4, 1, 3]),
        [True] * 3,
    ),
    "six_rows_backward_only": (dict(T=3, B=6, I=8, H=128, lengths=[3, 1, 0, 2, 3, 3]), [False, False, True]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FEW_ROWS_CASES)
def test_few_rows_per_thread_match_the_reference_in_inference_and_training(case, dtype, kernel_path):
    taken = kernel_path("panels", "default")
    spec, shared_by_rows = FEW_ROWS_CASES[case]
    make, options = split(spec)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    problem = make_problem(rng, **make, dtype=dtype)
    ours = lstm_c.lstm_forward(**problem, **options, training=False, num_threads=2)
    theirs = reference.lstm_forward(**problem, **options, training=False)
    assert_close(ours[:3], theirs[:3], dtype, names=["y", "h_n", "c_n"])
    compare(case, spec, dtype, num_threads=2)  # training: forward and backward
    if lstm_c.openmp_enabled():
        assert [used for _, used in taken["plans"]] == [2, 2, 2]
        assert taken["split_batch"] == shared_by_rows


def test_a_small_step_takes_two_threads_only_with_two_rows_each_and_h_from_32():
    if not lstm_c.openmp_enabled():
        pytest.skip("a build without OpenMP runs every call on one thread")
    assert _threads.plan(2, 4, 32, 32) == 2
    assert _threads.plan(2, 3, 32, 32) == 1  # fewer than 2 rows per thread
    assert _threads.plan(2, 16, 16, 16) == 1  # H below 32
    assert _threads.plan(3, 5, 32, 32) == 2  # as many threads as get 2 rows
    assert _threads.plan(1, 8, 32, 32) == 1
    assert functional._split_batch(2, 4, w_hh_of(32), False)


@pytest.mark.parametrize("path", PATHS)
def test_both_paths_give_the_same_results_as_each_other(path, kernel_path):
    """Per position the two products add the same terms: the paths agree to rounding."""
    make, options = split(PATH_CASES["batch_80_projection_peephole_batch_first"])
    rng = np.random.default_rng(3)
    problem = make_problem(rng, **make, dtype=np.float64)
    grads = grads_for(rng, problem, batch_first=True)
    kernel_path(path)
    forced = run(lstm_c, problem, grads, **options)
    kernel_path("blas" if path == "panels" else "panels")
    other = run(lstm_c, problem, grads, **options)
    assert_close(forced[0] + tuple(forced[1]), other[0] + tuple(other[1]), np.float64)


# ----------------------------------------------------------------------------- the build


def test_num_threads_gives_identical_results_run_to_run():
    rng = np.random.default_rng(9)
    p = make_problem(rng, 5, 48, 16, 64, np.float32)
    for threads in (1, 2):
        runs = []
        for _ in range(2):
            y, h, c, cache = lstm_c.lstm_forward(**p, num_threads=threads)
            runs.append((y, h, c) + tuple(lstm_c.lstm_backward(cache, np.ones_like(y), num_threads=threads)))
        assert_identical(*runs)


def test_openmp_is_on_unless_built_without_it():
    expected = os.environ.get("LSTM_C_NO_OPENMP", "0") in ("", "0")
    assert lstm_c.openmp_enabled() is expected


def test_the_compiled_module_comes_from_the_installed_package():
    # The tests must exercise what `pip install` produced, not this source tree.
    source_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lstm_c")
    assert os.path.dirname(os.path.abspath(lstm_c.__file__)) != source_tree
    assert os.path.dirname(_lstm.__file__) == os.path.dirname(lstm_c.__file__)


# --------------------------------------------------------------------------------------
# The kernels' own argument checks: the last line behind lstm_c.functional


def _kernel_forward_arguments(T=3, B=2, I=4, H=5, dtype=np.float64):
    from lstm_c import _scratch, functional
    from lstm_c._validation import check_forward

    rng = np.random.default_rng(0)
    x, w_ih, w_hh = (rng.standard_normal(shape) for shape in ((T, B, I), (4 * H, I), (4 * H, H)))
    args = check_forward(
        x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, lengths=None, batch_first=False
    )
    output_shapes, scratch = functional._workspace(args, "training")
    work = functional._outputs(output_shapes, args.dtype)
    return dict(
        x=args.x.reshape(T * B, I),
        w_ih=args.w_ih,
        w_hh=args.w_hh,
        bias=args.bias,
        w_hr=None,
        peephole=None,
        h=args.h0.copy(),
        c=args.c0.copy(),
        lengths=args.lengths,
        reverse=False,
        batch_first=False,
        steps=T,
        num_threads=1,
        split_batch=False,
        **work,
        **_scratch.allocate(args.dtype, scratch),
    )


def test_the_kernels_take_their_arrays_by_keyword_only():
    from lstm_c import _lstm

    kwargs = _kernel_forward_arguments()
    _lstm.forward(**kwargs)  # as lstm_c.functional calls it
    with pytest.raises(TypeError):
        _lstm.forward(*kwargs.values())


# Buffers of different shapes (two of the same shape cannot be told apart by it).
@pytest.mark.parametrize("swap", [("gates", "y"), ("gates", "rec"), ("c", "rec"), ("x", "y")])
def test_a_swapped_buffer_is_refused_before_anything_is_written(swap):
    from lstm_c import _lstm

    kwargs = _kernel_forward_arguments(H=6)
    a, b = swap
    kwargs[a], kwargs[b] = kwargs[b], kwargs[a]
    before = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    # The sizes come from x, h and c, so the message may name another array.
    with pytest.raises(ValueError, match="must be"):
        _lstm.forward(**kwargs)
    for name in ("h", "c"):
        np.testing.assert_array_equal(kwargs[name], before[name])


@pytest.mark.parametrize(
    "name, value",
    [
        ("lengths", np.array([3, 4], np.intp)),  # past T: the kernel would index past x
        ("y", np.empty((5, 5))),
        ("panels", np.empty(3)),
    ],
)
def test_a_missized_buffer_or_bad_lengths_are_refused(name, value):
    from lstm_c import _lstm

    kwargs = _kernel_forward_arguments()
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        _lstm.forward(**kwargs)


# --------------------------------------------------------------------------------------
# Inference computes the input projection in chunks of steps


@pytest.fixture(params=[1, 3, 7], ids=lambda n: f"chunk_positions={n}")
def small_chunks(request):
    previous = _lstm._set_chunk_positions(request.param)
    yield request.param
    _lstm._set_chunk_positions(previous)


def test_inference_chunks_cover_the_sequence():
    for H, I in [(8, 8), (256, 256), (1024, 1024)]:
        assert _lstm.inference_chunk_steps(10_000, 1, H, I, 4) <= 1024
        assert _lstm.inference_chunk_steps(5, 1, H, I, 4) == 5
        assert _lstm.inference_chunk_steps(100, 4096, H, I, 4) == 1
        assert _lstm.inference_chunk_steps(0, 3, H, I, 4) == 0


def test_inference_chunks_keep_their_gates_in_l2_while_w_ih_fits_there():
    # W_ih of 1 MiB (H = I = 256, float32): chunks of 256 KiB of gates, 64 rows of 4 KiB.
    assert _lstm.inference_chunk_steps(1000, 16, 256, 256, 4) == 4
    assert _lstm.inference_chunk_steps(1000, 1, 128, 128, 8) == 64
    # A larger W_ih (here 2 MiB) is read once per chunk from L3: chunks of 1024 positions.
    assert _lstm.inference_chunk_steps(1000, 16, 256, 512, 4) == 64
    assert _lstm.inference_chunk_steps(1000, 16, 256, 256, 8) == 64


@pytest.mark.parametrize("input_products", ["panels", "blas"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_inference_in_chunks_equals_the_training_forward_and_the_reference(
    case, num_threads, dtype, input_products, small_chunks, monkeypatch
):
    if input_products == "blas":
        monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", -1)
    make, options = split(CASES[case])
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    problem = make_problem(rng, **make, dtype=dtype)
    chunked = lstm_c.lstm_forward(**problem, **options, training=False, num_threads=num_threads)[:3]
    whole = lstm_c.lstm_forward(**problem, **options, training=True, num_threads=num_threads)[:3]
    if (
        functional._input_panels(problem["w_ih"].shape[0] // 4, problem["w_ih"].shape[1], np.dtype(dtype))
        is not None
    ):
        # W_ih in panels: every position's projection summed in the same order.
        assert_identical(chunked, whole, ["y", "h_n", "c_n"])
    else:
        # The same products of the same numbers, but through BLAS calls of other sizes (a
        # one-row chunk is a matrix-vector product): equal up to the last bits.
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        for name, a, b in zip(["y", "h_n", "c_n"], chunked, whole):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=name)
    assert_close(
        chunked,
        reference.lstm_forward(**problem, **options, training=False)[:3],
        dtype,
        names=["y", "h_n", "c_n"],
    )


@pytest.mark.parametrize("share", SHARES)
@pytest.mark.parametrize("input_products", ["panels", "blas"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case", ["few_positions_wide_input", "few_positions_wide_input_batch_first_reverse", "batch_80_reverse"]
)
def test_inference_chunks_split_between_two_threads_match_the_reference(
    case, dtype, input_products, share, small_chunks, kernel_path, monkeypatch
):
    # Large enough for two threads: a chunk's projection is split by units (panels),
    # or through BLAS by gate columns (fewer positions than columns) or by rows; with
    # the steps shared by rows, each thread projects its own rows.
    kernel_path("panels", share)
    if input_products == "blas":
        monkeypatch.setattr(functional, "_INPUT_PANELS_MAX_BYTES", -1)
    make, options = split(PATH_CASES[case])
    problem = make_problem(np.random.default_rng(zlib.crc32(case.encode())), **make, dtype=dtype)
    ours = lstm_c.lstm_forward(**problem, **options, training=False, num_threads=2)[:3]
    theirs = reference.lstm_forward(**problem, **options, training=False)[:3]
    assert_close(ours, theirs, dtype, names=["y", "h_n", "c_n"])


def test_inference_scratch_does_not_grow_with_the_sequence():
    import tracemalloc

    rng = np.random.default_rng(0)
    B, I, H = 2, 8, 16
    w = dict(w_ih=rng.standard_normal((4 * H, I)), w_hh=rng.standard_normal((4 * H, H)))
    peaks = {}
    for T in (4096, 16384):
        x = rng.standard_normal((T, B, I))
        tracemalloc.start()
        y = lstm_c.lstm_forward(x, **w, training=False)[0]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peaks[T] = peak - y.nbytes
    # Beyond the output y, a long inference call holds at most one chunk of gate
    # pre-activations, never T*B*4H of them (which would be 4 MiB and 16 MiB here).
    chunk_bytes = _lstm.inference_chunk_steps(16384, B, H, I, 8) * B * 4 * H * 8
    for T, extra in peaks.items():
        assert extra < chunk_bytes + 256 * 1024, (T, extra)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("x", lambda a: np.asfortranarray(a), "contiguous"),  # NumPy's own message
        ("w_hh", lambda a: a.astype(np.float32), "w_hh must be a 2-D array of float64"),
        ("bias", lambda a: a[None], "bias must be a 1-D array"),
        ("lengths", lambda a: a.astype(np.int32), "lengths must be a 1-D array of intp"),
        ("y", lambda a: _read_only(a), "read-only|not writable"),
        ("c", lambda a: None, "c is missing"),
    ],
    ids=["strided", "other_dtype", "other_ndim", "int32_lengths", "read_only_output", "no_state"],
)
def test_an_array_the_kernel_cannot_take_as_it_is_is_refused(name, value, message):
    from lstm_c import _lstm

    kwargs = _kernel_forward_arguments()
    kwargs[name] = value(kwargs[name])
    before = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    with pytest.raises((ValueError, BufferError), match=message):
        _lstm.forward(**kwargs)
    for key in ("h", "c"):
        if isinstance(kwargs[key], np.ndarray):
            np.testing.assert_array_equal(kwargs[key], before[key])


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a
