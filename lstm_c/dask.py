"""`lstm_c.dask`: an `lstm_c.LSTM` over Dask arrays chunked along the batch.

Data parallelism on Dask's schedulers, with no scheduler of lstm_c's own:
`forward` scores a batch too large for one machine (or one call), and
`loss_and_grads` computes one training step's loss and parameter gradients,
summed over the batch chunks by a tree of pairwise sums on the cluster. Both
run on whatever scheduler is in effect: Dask's local schedulers, or a
``distributed.Client`` (``LocalCluster`` on one machine, ``dask scheduler`` and
``dask worker`` on several, dask-jobqueue on a batch system).

The model travels once per call, not once per chunk: one key of the graph
holds a snapshot of its parameters and configuration (with a distributed
client, scattered to every worker), and every chunk's task depends on that key.

Install with ``pip install "lstm_c[dask]"``; ``import lstm_c`` never imports Dask.
"""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

try:
    import dask
    import dask.array as da
    import dask.local
    import dask.system
    from dask.base import tokenize
    from dask.delayed import Delayed, delayed
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        'lstm_c.dask needs Dask: install it with pip install "lstm_c[dask]" (dask[array] and distributed)'
    ) from error

from lstm_c._threads import usable_cpus
from lstm_c._validation import as_dtype_array, check_int, check_lengths, check_num_threads
from lstm_c.layer import LSTM

__all__ = ["forward", "loss_and_grads"]

LossFn = Callable[..., tuple[float, np.ndarray]]

# Threads of one chunk's task: an int for every worker, or one per worker address.
ThreadPlan = int | Mapping[str, int]


# ----------------------------------------------------------------------------- the model on the workers


class _Shipment:
    """What every chunk's task needs from the caller, in one graph key: a snapshot of the
    model (parameters copied, no trace, no gradients) and the threads per task."""

    def __init__(self, model: LSTM, threads: ThreadPlan, token: str) -> None:
        self.model = model
        self.threads = threads
        self.token = token

    def __dask_tokenize__(self) -> str:
        return self.token


def _snapshot(model: LSTM) -> LSTM:
    """A copy of `model` for shipping: its parameters copied (the caller may update its own in
    place while a lazy result is pending), without the trace of a forward or any gradients."""
    snapshot = copy.copy(model)
    snapshot._params = model.state_dict()
    snapshot._trace = None
    snapshot.grads = {}
    snapshot.training = False
    return snapshot


def _replica(shipment: _Shipment, *, training: bool, seed: Any = None) -> LSTM:
    """The task's own module, sharing the shipped (read-only) parameter arrays.

    A forward reads the parameters and never writes them (see `lstm_c.layer`), so
    the tasks a worker runs at once may share them; the trace and the gradients,
    which a training forward and `backward` store in the module, are each task's own.
    """
    m = copy.copy(shipment.model)
    m.training = training
    m.grads = {}
    m._trace = None
    if m.num_threads is None:
        m.num_threads = _task_threads(shipment.threads)
    if seed is not None:
        m.dropout_rng = np.random.default_rng(seed)
    return m


def _task_threads(plan: ThreadPlan) -> int:
    if isinstance(plan, int):
        return plan
    try:
        from distributed import get_worker

        return plan.get(get_worker().address, 1)
    except (ImportError, ValueError):  # not in a distributed worker: the plan was for one
        return 1


def _ship(model: LSTM, threads: ThreadPlan, client: Any) -> Any:
    """The one graph key (a Delayed, or a Future scattered to every worker) holding the model."""
    snapshot = _snapshot(model)
    token = tokenize(repr(model), model.num_threads, threads, snapshot._params)
    shipment = _Shipment(snapshot, threads, token)
    if client is not None:
        # A fresh key per call (hash=False): with a key derived from the contents, releasing an
        # earlier call's copy of the same model would delete the data this call needs.
        return client.scatter(shipment, broadcast=True, hash=False)
    return delayed(shipment, pure=True, name=f"lstm_c-model-{token}")


# ----------------------------------------------------------------------------- threads per task


def _active_client() -> Any:
    """The distributed.Client that will run the computation, or None for a local scheduler."""
    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    if owner is None:
        return None
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask[array] without distributed
        return None
    return owner if isinstance(owner, Client) else None


def _worker_cpus(dask_worker: Any) -> tuple[tuple[str, tuple[int, ...]], int, int]:
    """Run on each worker: (the CPUs it shares with co-located workers, their count, its task threads)."""
    cpu_set = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
    state = getattr(dask_worker, "state", dask_worker)  # distributed >= 2022.11 keeps nthreads there
    return (socket.gethostname(), cpu_set), usable_cpus(), int(state.nthreads)


def _cluster_plan(client: Any) -> dict[str, int]:
    """Threads per task on each worker: the CPUs the worker may use, shared among the task
    threads of every worker on the same CPUs (the same machine and CPU set)."""
    reports = client.run(_worker_cpus)
    sharing: dict[Any, int] = {}
    for cpu_key, _, nthreads in reports.values():
        sharing[cpu_key] = sharing.get(cpu_key, 0) + nthreads
    return {address: max(1, cpus // sharing[cpu_key]) for address, (cpu_key, cpus, _) in reports.items()}


def _local_plan(chunks: int) -> int:
    """Threads per task under a local scheduler: this process's CPUs over the tasks run at once."""
    if dask.base.get_scheduler() is dask.local.get_sync:
        at_once = 1
    else:
        at_once = dask.config.get("num_workers", None) or dask.system.CPU_COUNT
    return max(1, usable_cpus() // max(1, min(chunks, at_once)))


def _plan(client: Any, chunks: int, num_threads: int | None) -> ThreadPlan:
    if num_threads is not None:
        return num_threads
    return _cluster_plan(client) if client is not None else _local_plan(chunks)


# ----------------------------------------------------------------------------- chunks


def _batch_axis(model: LSTM) -> int:
    return 0 if model.batch_first else 1


def _check_x(model: LSTM, x: Any) -> da.Array:
    if not isinstance(model, LSTM):
        raise TypeError(f"model must be an lstm_c.LSTM, got {type(model).__name__}")
    if not isinstance(x, da.Array):
        raise TypeError(
            f"x must be a dask array chunked along the batch axis, got {type(x).__name__}: "
            f"wrap a NumPy array with dask.array.from_array(x, chunks=...)"
        )
    layout = "(batch, seq_len, input_size)" if model.batch_first else "(seq_len, batch, input_size)"
    if x.ndim != 3:
        raise ValueError(f"x must be 3-D {layout}, got {x.ndim}-D shape {x.shape}")
    if x.shape[2] != model.input_size:
        raise ValueError(
            f"x has {x.shape[2]} features (shape {x.shape}) but the model has input_size={model.input_size}"
        )
    as_dtype_array("x", np.empty(0, x.dtype), model.dtype, owner="this LSTM", convert=False)
    time_axis = 1 - _batch_axis(model)
    _check_one_chunk(
        "x", x, _batch_axis(model), {time_axis: f"time (axis {time_axis})", 2: "features (axis 2)"}
    )
    return x


def _check_one_chunk(name: str, array: da.Array, batch_axis: int, axes: Mapping[int, str]) -> None:
    """Refuse an array chunked along any axis but the batch axis."""
    for axis, what in axes.items():
        if array.numblocks[axis] != 1:
            fix = {a: -1 for a in axes}
            raise ValueError(
                f"{name} is chunked along {what} ({array.numblocks[axis]} chunks): each "
                f"task runs whole sequences, so chunk {name} along the batch axis (axis {batch_axis}) only, "
                f"e.g. {name} = {name}.rechunk({fix})"
            )


def _blocks(name: str, value: Any, x: da.Array, batch_axis: int, value_axis: int) -> list[Any]:
    """`value` (a dask or NumPy array, or None) split as x is along the batch: one entry per chunk."""
    batch_chunks = x.chunks[batch_axis]
    if value is None:
        return [None] * len(batch_chunks)
    if not isinstance(value, da.Array):
        value = np.asarray(value)
        if value.ndim <= value_axis or value.shape[value_axis] != x.shape[batch_axis]:
            raise ValueError(
                f"{name} must have the batch ({x.shape[batch_axis]}) on axis {value_axis}, got shape {value.shape}"
            )
        bounds = np.cumsum((0,) + batch_chunks)
        index = [slice(None)] * value.ndim
        parts = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            index[value_axis] = slice(start, stop)
            parts.append(value[tuple(index)])
        return parts
    if value.ndim <= value_axis:
        raise ValueError(f"{name} must have the batch on axis {value_axis}, got shape {value.shape}")
    others = {a: f"axis {a}" for a in range(value.ndim) if a != value_axis}
    _check_one_chunk(name, value, value_axis, others)
    if value.chunks[value_axis] != batch_chunks:
        raise ValueError(
            f"{name} has {value.numblocks[value_axis]} batch chunks {value.chunks[value_axis]} but x has "
            f"{len(batch_chunks)} {batch_chunks}: chunk them alike, e.g. "
            f"{name} = {name}.rechunk({{{value_axis}: x.chunks[{batch_axis}]}})"
        )
    return list(value.to_delayed().ravel())


def _lengths_blocks(model: LSTM, x: da.Array, lengths: Any) -> list[Any]:
    batch_axis = _batch_axis(model)
    if lengths is not None and not isinstance(lengths, da.Array):
        lengths = check_lengths(lengths, x.shape[1 - batch_axis], x.shape[batch_axis])
    return _blocks("lengths", lengths, x, batch_axis, 0)


# ----------------------------------------------------------------------------- inference


def _forward_chunk(shipment: _Shipment, x: np.ndarray, lengths: np.ndarray | None) -> tuple[np.ndarray, ...]:
    m = _replica(shipment, training=False)
    y, (h_n, c_n) = m(x, lengths=lengths)
    return y, h_n, c_n


def forward(
    model: LSTM, x: da.Array, lengths: Any = None, *, num_threads: int | None = None
) -> tuple[da.Array, tuple[da.Array, da.Array]]:
    """`model(x, lengths=lengths)` in eval mode, one task per batch chunk of `x`.

    Parameters
    ----------
    model : lstm_c.LSTM
        Its parameters are copied when this function is called (later changes
        to the module do not reach the result) and travel to each worker once.
    x : dask.array.Array, (T, B, I), or (B, T, I) with the model's `batch_first`
        Chunked along the batch axis only: time and features in one chunk.
    lengths : dask.array.Array or array_like of int, (B,), optional
        Valid steps per row, as for `lstm_c.LSTM.forward`; a dask array must
        have x's batch chunks, a NumPy array is split like x.
    num_threads : int, optional
        lstm_c threads per task. Default: the model's `num_threads` if set,
        else the CPUs each worker may use shared among the tasks that run at
        once on those CPUs (see the guide's "Scaling out" page).

    Returns
    -------
    y : dask.array.Array, (T, B, D·H_out), or (B, T, D·H_out) with `batch_first`
        Chunked as x along the batch.
    (h_n, c_n) : tuple of dask.array.Array, (L·D, B, H_out) and (L·D, B, H)
        Chunked as x along the batch (axis 1).

    Notes
    -----
    The initial states are zeros (there is no `hx`). Inference only: dropout off, no trace for a backward, whatever the model's
    mode. The thread plan is made for the scheduler in effect when this
    function is called; compute the results under the same one.
    """
    x = _check_x(model, x)
    num_threads = check_num_threads(num_threads)
    batch_axis = _batch_axis(model)
    lengths_parts = _lengths_blocks(model, x, lengths)
    client = _active_client()
    shipment = _ship(model, _plan(client, len(lengths_parts), num_threads), client)

    steps, LD = x.shape[1 - batch_axis], model.num_layers * model.num_directions
    ys, hs, cs = [], [], []
    for rows, x_part, lengths_part in zip(x.chunks[batch_axis], x.to_delayed().ravel(), lengths_parts):
        y, h_n, c_n = delayed(_forward_chunk, pure=True, nout=3)(shipment, x_part, lengths_part)
        y_shape = (rows, steps) if model.batch_first else (steps, rows)
        ys.append(da.from_delayed(y, (*y_shape, model.num_directions * model.output_size), model.dtype))
        hs.append(da.from_delayed(h_n, (LD, rows, model.output_size), model.dtype))
        cs.append(da.from_delayed(c_n, (LD, rows, model.hidden_size), model.dtype))
    return da.concatenate(ys, axis=batch_axis), (da.concatenate(hs, axis=1), da.concatenate(cs, axis=1))


# ----------------------------------------------------------------------------- training


def _loss_and_grads_chunk(
    shipment: _Shipment,
    x: np.ndarray,
    target: Any,
    lengths: np.ndarray | None,
    loss_fn: LossFn,
    seed: Any,
    chunk: int,
) -> tuple[float, dict[str, np.ndarray]]:
    m = _replica(shipment, training=True, seed=seed)
    y, _ = m(x, lengths=lengths)
    result = loss_fn(y, target, lengths=lengths)
    where = f"loss_fn on batch chunk {chunk}"
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"{where} must return a tuple (loss, dy), got {type(result).__name__}")
    loss, dy = result
    if np.ndim(loss) != 0:
        raise ValueError(f"{where} returned a loss of shape {np.shape(loss)}; it must be a scalar")
    if np.shape(dy) != y.shape:
        raise ValueError(
            f"{where} returned dy of shape {np.shape(dy)}; it must have the shape of the chunk's y, {y.shape}"
        )
    m.backward(dy)
    return float(loss), m.grads


def _add(
    a: tuple[float, dict[str, np.ndarray]], b: tuple[float, dict[str, np.ndarray]]
) -> tuple[float, dict[str, np.ndarray]]:
    return a[0] + b[0], {name: value + b[1][name] for name, value in a[1].items()}


def _tree_sum(parts: list[Delayed]) -> Delayed:
    """Pairwise sums, level by level: log2(chunks) levels, each a set of tasks run on the cluster."""
    while len(parts) > 1:
        pairs = [delayed(_add, pure=True)(a, b) for a, b in zip(parts[0::2], parts[1::2])]
        parts = pairs + parts[len(pairs) * 2 :]
    return parts[0]


def loss_and_grads(
    model: LSTM,
    x: da.Array,
    target: Any,
    loss_fn: LossFn,
    lengths: Any = None,
    *,
    target_batch_axis: int | None = None,
    num_threads: int | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """One data-parallel training step: the loss and the parameter gradients over all of `x`.

    Each batch chunk's task runs the model's forward in training mode, then
    ``loss, dy = loss_fn(y_chunk, target_chunk, lengths=lengths_chunk)``,
    then the backward. The chunks' losses and gradients are summed by a tree
    of pairwise sums on the cluster; only the total comes back. Apply your
    optimizer to the model and call again: its parameters travel to each
    worker once per call.

    Parameters
    ----------
    model : lstm_c.LSTM
        Not changed (its `grads` neither), except that its `dropout_rng`
        advances by one draw when it has dropout.
    x : dask.array.Array, (T, B, I), or (B, T, I) with the model's `batch_first`
        Chunked along the batch axis only.
    target : dask.array.Array or ndarray
        Whatever `loss_fn` compares y with, with the batch on the axis
        `target_batch_axis` and in one chunk along every other axis; a dask
        array must have x's batch chunks, a NumPy array is split like x.
    loss_fn : callable
        ``loss_fn(y, target, lengths=lengths) -> (loss, dy)`` for one chunk:
        a scalar loss and its gradient with respect to y (y's shape and dtype).
        The total loss is the SUM of the chunks' losses, so for a mean over the
        whole batch divide by the whole batch's size inside `loss_fn`.
        Runs on the workers: it must be picklable (a lambda or a local function
        is, by cloudpickle).
    lengths : dask.array.Array or array_like of int, (B,), optional
        As for `forward`; each chunk's part is also passed to `loss_fn`.
    target_batch_axis : int, optional
        The batch axis of `target`. Default: y's (0 with `batch_first`, else
        1), or 0 for a 1-D target (one value per sequence).
    num_threads : int, optional
        lstm_c threads per task, as for `forward`.

    Returns
    -------
    loss : float
        The sum of the chunks' losses.
    grads : dict of str to ndarray
        Keyed and ordered as the model's `state_dict` (and `grads`): the sums of
        the chunks' gradients, what one `backward` over the whole batch gives
        (to summation order: about 1e-12 relative in float64).

    Notes
    -----
    The initial states are zeros and the loss depends on y only (not on
    h_n or c_n). Dropout: every chunk draws its own masks, from a generator seeded with one
    draw from the model's `dropout_rng` and the chunk's index, so a step is
    repeatable, but its masks differ from those of one whole-batch forward;
    with ``dropout=0`` the result equals the whole-batch one.
    """
    x = _check_x(model, x)
    num_threads = check_num_threads(num_threads)
    batch_axis = _batch_axis(model)
    lengths_parts = _lengths_blocks(model, x, lengths)
    if target_batch_axis is None:
        target_batch_axis = batch_axis if np.ndim(target) > 1 else 0
    target_axis = check_int("target_batch_axis", target_batch_axis, 0)
    target_parts = _blocks("target", target, x, batch_axis, target_axis)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    entropy = int(model.dropout_rng.integers(2**63)) if model.dropout > 0 else None

    client = _active_client()
    shipment = _ship(model, _plan(client, len(target_parts), num_threads), client)
    parts = [
        delayed(_loss_and_grads_chunk, pure=True)(
            shipment,
            x_part,
            target_part,
            lengths_part,
            loss_fn,
            None if entropy is None else [entropy, chunk],
            chunk,
        )
        for chunk, (x_part, target_part, lengths_part) in enumerate(
            zip(x.to_delayed().ravel(), target_parts, lengths_parts)
        )
    ]
    ((loss, grads),) = dask.compute(_tree_sum(parts))
    return loss, grads
