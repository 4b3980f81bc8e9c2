"""lstm_c.dask: forward and data-parallel gradients over dask arrays chunked along the batch.

The results must equal one process's on the whole batch: `forward` the local eval-mode
call, `loss_and_grads` the local full-batch loss and gradients (a sum over chunks, so
equal to rounding). Most tests run on a real ``distributed.LocalCluster`` of two worker
processes on the loopback interface (one per module); a few run on Dask's local
schedulers. Nothing here measures time.
"""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import helpers  # noqa: E402
from helpers import assert_close, assert_mentions, run_in_child  # noqa: E402

import lstm_c  # noqa: E402
import lstm_c.dask as lstm_dask  # noqa: E402
from lstm_c._threads import usable_cpus  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes, used only inside `on_cluster`."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as c,
    ):
        yield c


@pytest.fixture
def on_cluster(client):
    with dask.config.set(scheduler=client):
        yield client


def _make_squared_error():
    # A local function: the workers cannot import this test module, so the loss function
    # must travel by value (as a lambda's, a local function's or a script's do).
    def squared_error(y, target, lengths=None):
        """0.5 * sum((y - target)**2) over the valid steps, and its gradient."""
        d = y - target
        if lengths is not None:
            steps = np.arange(y.shape[0])[:, None] < lengths[None, :]  # (T, B): not batch_first here
            d = d * steps[..., None]
        return 0.5 * float((d * d).sum()), d

    return squared_error


squared_error = _make_squared_error()


def problem(rng, *, T=7, B=11, chunks=(3, 3, 3, 2), batch_first=False, lengths=True, **options):
    """A model, its input as NumPy and chunked dask arrays, and lengths (NumPy, with a zero)."""
    m = lstm_c.LSTM(5, 6, batch_first=batch_first, dtype=np.float64, seed=1, **options)
    x = rng.standard_normal((B, T, 5) if batch_first else (T, B, 5))
    axis = 0 if batch_first else 1
    x_chunks = [x.shape[0], x.shape[1], 5]
    x_chunks[axis] = chunks
    lens = rng.integers(0, T + 1, B) if lengths else None
    if lens is not None:
        lens[0] = 0
    return m, x, da.from_array(x, chunks=tuple(x_chunks)), lens


def local_forward(m, x, lengths):
    m.eval()
    try:
        y, (h, c) = m(x, lengths=lengths)
    finally:
        m.train()
    return y, h, c


def local_loss_and_grads(m, x, target, lengths):
    y, _ = m(x, lengths=lengths)
    loss, dy = squared_error(y, target, lengths)
    m.backward(dy)
    grads = m.grads
    m.grads, m._trace = {}, None
    return loss, grads


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize(
    "options",
    [
        dict(num_layers=2, bidirectional=True),
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(proj_size=3, peephole=True),
    ],
    ids=["stacked_bidirectional", "batch_first", "projection_peephole"],
)
def test_forward_on_cluster_equals_local_call(on_cluster, options):
    rng = np.random.default_rng(0)
    batch_first = options.pop("batch_first", False)
    m, x, xd, lens = problem(rng, batch_first=batch_first, **options)
    lens_d = da.from_array(lens, chunks=((3, 3, 3, 2),))
    y, (h, c) = lstm_dask.forward(m, xd, lengths=lens_d)
    assert y.chunks[0 if batch_first else 1] == (3, 3, 3, 2) and h.chunks[1] == (3, 3, 3, 2)
    got = dask.compute(y, h, c)
    assert_close(got, local_forward(m, x, lens), np.float64, names=["y", "h_n", "c_n"])


def test_forward_local_scheduler_float32_numpy_lengths():
    """The default local (threaded) scheduler; NumPy lengths split as x; float32."""
    rng = np.random.default_rng(1)
    m = lstm_c.LSTM(4, 8, num_layers=2, seed=0)
    x = rng.standard_normal((9, 10, 4)).astype(np.float32)
    lens = rng.integers(1, 10, 10)
    y, (h, c) = lstm_dask.forward(m, da.from_array(x, chunks=(9, 4, 4)), lengths=lens)
    assert_close(dask.compute(y, h, c), local_forward(m, x, lens), np.float32)


def test_forward_ignores_later_changes_and_dropout():
    """Parameters are copied at the call; eval mode whatever the model's (dropout off)."""
    rng = np.random.default_rng(2)
    m = lstm_c.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 6, 3))
    expected = local_forward(m, x, None)
    y, (h, c) = lstm_dask.forward(m, da.from_array(x, chunks=(5, 2, 3)))
    m.params["weight_ih_l0"][:] = 0
    with dask.config.set(scheduler="sync"):
        assert_close(dask.compute(y, h, c), expected, np.float64)
    assert m.training and not m.grads


def test_model_is_one_key_of_the_graph():
    """The weights are in the graph once, not once per chunk (local scheduler: embedded)."""
    m = lstm_c.LSTM(64, 64, dtype=np.float64, seed=0)  # 266 KB of parameters
    weights = sum(p.nbytes for p in m.params.values())
    xd = da.zeros((2, 8, 64), chunks=(2, 1, 64))  # 8 chunks of 1 KB (made by their tasks)
    y, (h, c) = lstm_dask.forward(m, xd)
    graph = {**dict(y.__dask_graph__()), **dict(h.__dask_graph__()), **dict(c.__dask_graph__())}
    sizes = sorted(len(pickle.dumps(task)) for task in graph.values())
    assert sizes[-1] > weights and sizes[-2] < weights / 50, sizes[-3:]
    holders = [key for key, task in graph.items() if len(pickle.dumps(task)) > weights]
    assert len(holders) == 1 and str(holders[0]).startswith("lstm_c-model-")


def test_model_is_scattered_once_on_the_cluster(on_cluster):
    """With a distributed client the weights are scattered to the workers: the graph holds
    none of them, and every chunk's task refers to the one scattered key."""
    m = lstm_c.LSTM(64, 64, dtype=np.float64, seed=0)
    weights = sum(p.nbytes for p in m.params.values())
    xd = da.zeros((2, 8, 64), chunks=(2, 1, 64))
    y, _ = lstm_dask.forward(m, xd)
    graph = dict(y.__dask_graph__())
    assert max(len(pickle.dumps(task)) for task in graph.values()) < weights / 50
    forward_tasks = [task for key, task in graph.items() if str(key).startswith("_forward_chunk")]
    assert len(forward_tasks) == 8
    model_keys = {dep for task in forward_tasks for dep in task.dependencies} - set(graph)
    assert len(model_keys) == 1  # the scattered shipment, held by the cluster
    assert y.compute().shape == (2, 8, 64)


def test_repeated_calls_with_one_model_on_the_cluster(on_cluster):
    """Each call ships its own copy: releasing an earlier call's result never takes away
    the weights a later call with the same model needs."""
    rng = np.random.default_rng(8)
    m, x, xd, lens = problem(rng)
    expected = local_forward(m, x, lens)
    first, _ = lstm_dask.forward(m, xd, lengths=lens)
    second, (h, c) = lstm_dask.forward(m, xd, lengths=lens)
    del first
    gc.collect()
    assert_close(dask.compute(second, h, c), expected, np.float64)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "full"])
def test_loss_and_grads_on_cluster_equal_full_batch(on_cluster, with_lengths):
    rng = np.random.default_rng(3)
    m, x, xd, lens = problem(rng, lengths=with_lengths, num_layers=2, bidirectional=True)
    target = rng.standard_normal((7, 11, 12))
    target_d = da.from_array(target, chunks=(7, (3, 3, 3, 2), 12))
    lens_d = None if lens is None else da.from_array(lens, chunks=((3, 3, 3, 2),))
    loss, grads = lstm_dask.loss_and_grads(m, xd, target_d, squared_error, lengths=lens_d)
    expected_loss, expected = local_loss_and_grads(m, x, target, lens)
    assert list(grads) == list(m.state_dict())
    assert abs(loss - expected_loss) <= 1e-12 * abs(expected_loss)
    for name, g in grads.items():
        scale = np.abs(expected[name]).max()
        np.testing.assert_allclose(g, expected[name], rtol=1e-12, atol=1e-12 * scale, err_msg=name)
    assert not m.grads and m._trace is None  # the caller's model is untouched


def test_sgd_steps_on_cluster_equal_local_steps(on_cluster):
    rng = np.random.default_rng(4)
    m, x, xd, lens = problem(rng, num_layers=2)
    local = lstm_c.LSTM(5, 6, num_layers=2, dtype=np.float64, seed=1)
    target = rng.standard_normal((7, 11, 6))
    losses = []
    for _ in range(3):
        loss, grads = lstm_dask.loss_and_grads(m, xd, target, squared_error, lengths=lens)
        local_loss, local_grads = local_loss_and_grads(local, x, target, lens)
        losses.append(loss)
        assert abs(loss - local_loss) <= 1e-12 * local_loss
        for name, p in m.params.items():
            p -= 0.05 * grads[name]
        for name, p in local.params.items():
            p -= 0.05 * local_grads[name]
    assert losses[-1] < losses[0]
    assert_close(list(m.params.values()), list(local.params.values()), np.float64)


def test_loss_and_grads_local_scheduler_batch_first_float32():
    """The default local scheduler; batch_first; float32; a 1-D per-sequence target."""
    rng = np.random.default_rng(5)
    m = lstm_c.LSTM(3, 5, batch_first=True, seed=0)
    x = rng.standard_normal((10, 4, 3)).astype(np.float32)
    labels = rng.standard_normal(10).astype(np.float32)

    def last_step_error(y, target, lengths=None):  # the mean over the whole batch of 10
        d = np.zeros_like(y)
        d[:, -1, 0] = (y[:, -1, 0] - target) / 10
        return float((d[:, -1, 0] * (y[:, -1, 0] - target)).sum() / 2), d

    loss, grads = lstm_dask.loss_and_grads(m, da.from_array(x, chunks=(3, 4, 3)), labels, last_step_error)
    y, _ = m(x)
    expected_loss, dy = last_step_error(y, labels)
    m.backward(dy)
    assert abs(loss - expected_loss) <= 1e-5 * expected_loss
    assert_close(list(grads.values()), list(m.grads.values()), np.float32, names=list(grads))


def test_target_batch_axis_per_sequence_labels():
    """A (B, K) target for a time-major model: its batch axis is given."""
    rng = np.random.default_rng(9)
    m = lstm_c.LSTM(3, 4, dtype=np.float64, seed=0)
    x = rng.standard_normal((6, 10, 3))
    labels = rng.standard_normal((10, 4))

    def last_step_error(y, target, lengths=None):
        d = np.zeros_like(y)
        d[-1] = y[-1] - target
        return 0.5 * float((d[-1] ** 2).sum()), d

    labels_d = da.from_array(labels, chunks=((4, 4, 2), 4))
    xd = da.from_array(x, chunks=(6, (4, 4, 2), 3))
    loss, grads = lstm_dask.loss_and_grads(m, xd, labels_d, last_step_error, target_batch_axis=0)
    y, _ = m(x)
    expected_loss, dy = last_step_error(y, labels)
    m.backward(dy)
    assert abs(loss - expected_loss) <= 1e-12 * expected_loss
    assert_close(list(grads.values()), list(m.grads.values()), np.float64, names=list(grads))
    with pytest.raises(ValueError, match="target is chunked along axis 0"):  # axis 1 by default
        lstm_dask.loss_and_grads(m, xd, labels_d, last_step_error)


def test_dropout_masks_per_chunk_are_repeatable():
    """Masks come from one draw of the model's dropout_rng and the chunk index."""
    rng = np.random.default_rng(6)
    x = da.from_array(rng.standard_normal((4, 6, 3)), chunks=(4, 2, 3))
    target = np.zeros((4, 6, 4))
    results = []
    for _ in range(2):
        m = lstm_c.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=np.float64, seed=7)
        first = lstm_dask.loss_and_grads(m, x, target, squared_error)
        second = lstm_dask.loss_and_grads(m, x, target, squared_error)
        results.append((first, second))
    (a1, a2), (b1, b2) = results
    assert a1[0] == b1[0] and a2[0] == b2[0]  # the same seed: the same masks
    assert a1[0] != a2[0]  # the rng advanced: the next step draws new masks


# ----------------------------------------------------------------------------- threads


def test_thread_plan_shares_each_machine_among_its_workers(client):
    """Two single-threaded workers on this machine: each task gets half of its CPUs."""
    plan = lstm_dask._cluster_plan(client)
    assert len(plan) == 2
    assert set(plan.values()) == {max(1, usable_cpus() // 2)}


def test_local_plan_follows_the_scheduler():
    with dask.config.set(scheduler="sync"):
        assert lstm_dask._local_plan(4) == usable_cpus()
    with dask.config.set(scheduler="threads", num_workers=2):
        assert lstm_dask._local_plan(1) == usable_cpus()
        assert lstm_dask._local_plan(8) == max(1, usable_cpus() // 2)


# ----------------------------------------------------------------------------- errors


def test_refuses_x_chunked_along_time_or_features():
    m = lstm_c.LSTM(4, 3)
    x = da.zeros((6, 8, 4), dtype=np.float32)
    with pytest.raises(ValueError) as error:
        lstm_dask.forward(m, x.rechunk((3, 4, 4)))
    assert_mentions(error, ["chunked along time", "axis 0", "rechunk"])
    with pytest.raises(ValueError) as error:
        lstm_dask.loss_and_grads(m, x.rechunk((6, 4, 2)), np.zeros((6, 8, 3)), squared_error)
    assert_mentions(error, ["chunked along features", "axis 2"])
    with pytest.raises(TypeError, match="dask array"):
        lstm_dask.forward(m, np.zeros((6, 8, 4), np.float32))
    with pytest.raises(TypeError, match="float64"):
        lstm_dask.forward(m, x.astype(np.float64))
    with pytest.raises(ValueError, match="input_size=4"):
        lstm_dask.forward(m, da.zeros((6, 8, 5), dtype=np.float32))


def test_refuses_chunks_that_disagree():
    m = lstm_c.LSTM(4, 3)
    x = da.zeros((6, 8, 4), dtype=np.float32, chunks=(6, 4, 4))
    with pytest.raises(ValueError) as error:
        lstm_dask.loss_and_grads(m, x, da.zeros((6, 8, 3), chunks=(6, 2, 3)), squared_error)
    assert_mentions(error, ["target has 4 batch chunks", "x has 2", "rechunk"])
    with pytest.raises(ValueError) as error:
        lstm_dask.forward(m, x, lengths=da.full(8, 6, chunks=3))
    assert_mentions(error, ["lengths has 3 batch chunks", "x has 2"])
    with pytest.raises(ValueError, match="chunked along axis 0"):
        lstm_dask.loss_and_grads(m, x, da.zeros((6, 8, 3), chunks=(3, 4, 3)), squared_error)
    with pytest.raises(ValueError, match="target must have the batch"):
        lstm_dask.loss_and_grads(m, x, np.zeros((6, 7, 3)), squared_error)
    with pytest.raises(ValueError, match="lengths must lie in"):
        lstm_dask.forward(m, x, lengths=np.full(8, 7))


@pytest.mark.parametrize(
    "bad, words",
    [
        (lambda y, t, lengths=None: (0.0, y[:-1]), ["returned dy of shape", "must have the shape"]),
        (lambda y, t, lengths=None: (np.ones(2), y), ["loss of shape (2,)", "scalar"]),
        (lambda y, t, lengths=None: 0.0, ["must return a tuple (loss, dy)"]),
    ],
    ids=["dy_shape", "loss_shape", "not_a_pair"],
)
def test_refuses_a_loss_function_of_the_wrong_shape(bad, words):
    m = lstm_c.LSTM(4, 3)
    x = da.zeros((6, 8, 4), dtype=np.float32, chunks=(6, 4, 4))
    with dask.config.set(scheduler="sync"), pytest.raises((ValueError, TypeError)) as error:
        lstm_dask.loss_and_grads(m, x, np.zeros((6, 8, 3)), bad)
    assert_mentions(error, ["loss_fn on batch chunk", *words])


def test_dask_is_imported_only_by_lstm_c_dask(tmp_path):
    script = (
        "import sys\n"
        "import lstm_c\n"
        "assert 'dask' not in sys.modules and 'distributed' not in sys.modules, 'imported by lstm_c'\n"
        "sys.modules['dask'] = None  # as if not installed\n"
        "try:\n"
        "    import lstm_c.dask\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = run_in_child(script, tmp_path)
    assert result.returncode == 0, helpers.child_failure(result)
    assert 'pip install "lstm_c[dask]"' in result.stdout
