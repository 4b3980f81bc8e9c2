"""lstm_c.dask against one process: time per step, overhead and bytes moved. Prints, never asserts.

    python bench/dask_scaling.py [--hidden H] [--batch B] [--seq-len T] [--repeat N]

The same inference (eval forward of the whole batch) and training step (forward, a
squared-error loss, backward: loss and parameter gradients of the whole batch) run

- locally: one `lstm_c.LSTM` call on `--threads` threads (default 2), no Dask;
- on Dask's local threaded scheduler (one process, one task per batch chunk);
- on `distributed.LocalCluster`s on the loopback interface, in three shapes that use
  the same two cores: 2 workers x 1 thread (lstm_c 1 thread per task), 1 worker x 2
  threads (two tasks at once, 1 lstm_c thread each), 1 worker x 1 thread (lstm_c
  2 threads per task);
- and, for the fixed cost per step, the same steps on a tiny model (H=8, B=2) on the
  2 x 1 cluster: what a step costs when there is nothing to compute.

x and the target live on the cluster (persisted before timing), as data loaded by the
workers would; the results of inference (y, h_n, c_n) come back to the caller, the
training step returns the loss and the summed gradients.

Bytes each way per step are computed from the sizes involved (not sniffed from the
network): the model (the pickled shipment) goes to each worker once; each batch chunk
makes one set of gradients, and the tree of pairwise sums moves (chunks - 1) of them
between workers, then one to the caller.

Timings on a shared or busy machine are noisy: the script prints the median and the
spread of `--repeat` rounds after one warm-up round, and the load average.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import lstm_c


def squared_error(y: np.ndarray, target: np.ndarray, lengths: Any = None) -> tuple[float, np.ndarray]:
    d = y - target
    return 0.5 * float((d * d).sum()), d


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    """(median, min, max) seconds of `repeat` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0] * 1e3:8.1f} ms  [{t[1] * 1e3:.1f} .. {t[2] * 1e3:.1f}]"


def local_steps(m: lstm_c.LSTM, x: np.ndarray, target: np.ndarray, threads: int) -> dict[str, Callable]:
    def infer() -> None:
        m.eval()
        m.num_threads = threads
        m(x)
        m.train()

    def train() -> None:
        m.num_threads = threads
        y, _ = m(x)
        _, dy = squared_error(y, target)
        m.backward(dy)

    return {"inference": infer, "training": train}


def dask_steps(m: lstm_c.LSTM, xd: Any, td: Any) -> dict[str, Callable]:
    import dask

    import lstm_c.dask

    def infer() -> None:
        y, (h, c) = lstm_c.dask.forward(m, xd)
        dask.compute(y, h, c)

    def train() -> None:
        lstm_c.dask.loss_and_grads(m, xd, td, squared_error)

    return {"inference": infer, "training": train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256, help="H = I (default 256)")
    parser.add_argument("--batch", type=int, default=64, help="B (default 64)")
    parser.add_argument("--seq-len", type=int, default=25, help="T (default 25)")
    parser.add_argument("--threads", type=int, default=2, help="lstm_c threads of the local run (default 2)")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds per case (default 7)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import lstm_c.dask

    dtype = np.dtype(args.dtype)
    H, B, T = args.hidden, args.batch, args.seq_len
    rng = np.random.default_rng(0)
    m = lstm_c.LSTM(H, H, dtype=dtype, seed=0)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    target = rng.standard_normal((T, B, H)).astype(dtype)
    chunks = 2
    x_chunks, t_chunks = (T, B // chunks, H), (T, B // chunks, H)

    params = sum(p.nbytes for p in m.params.values())
    shipment = lstm_c.dask._Shipment(lstm_c.dask._snapshot(m), {"tcp://127.0.0.1:1": 1}, "t")
    shipped = len(pickle.dumps(shipment, protocol=5))
    y_bytes = T * B * H * dtype.itemsize + 2 * B * H * dtype.itemsize
    print(
        f"lstm_c {lstm_c.__version__}, dask {dask.__version__}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (timings on a busy machine are noisy)"
    )
    print(
        f"model: LSTM({H}, {H}), {dtype}; x: T={T}, B={B}, I={H}; {chunks} batch chunks; "
        f"median [min .. max] of {args.repeat} rounds\n"
    )

    results: dict[tuple[str, str], tuple[float, float, float]] = {}
    for step, fn in local_steps(m, x, target, args.threads).items():
        results[(f"local, one call, {args.threads} threads", step)] = timed(fn, args.repeat)
    with dask.config.set(scheduler="threads", num_workers=2):
        xd = da.from_array(x, chunks=x_chunks)
        td = da.from_array(target, chunks=t_chunks)
        for step, fn in dask_steps(m, xd, td).items():
            results[("dask threaded scheduler, 2 chunks", step)] = timed(fn, args.repeat)

    shapes = [("2 workers x 1 thread", 2, 1), ("1 worker x 2 threads", 1, 2), ("1 worker x 1 thread", 1, 1)]
    fixed: dict[str, tuple[float, float, float]] = {}
    for label, workers, threads in shapes:
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            plan = lstm_c.dask._cluster_plan(client)
            xd = da.from_array(x, chunks=x_chunks).persist()
            td = da.from_array(target, chunks=t_chunks).persist()
            for step, fn in dask_steps(m, xd, td).items():
                results[(f"LocalCluster {label} (lstm_c {max(plan.values())} per task)", step)] = timed(
                    fn, args.repeat
                )
            if workers == 2:
                tiny = lstm_c.LSTM(8, 8, dtype=dtype, seed=0)
                tx = da.from_array(np.zeros((T, 2, 8), dtype), chunks=(T, 1, 8)).persist()
                for step, fn in dask_steps(tiny, tx, tx).items():
                    fixed[step] = timed(fn, args.repeat)

    print(f"{'':58s} {'inference':>32s}   {'training step':>32s}")
    for label in dict.fromkeys(k[0] for k in results):
        print(
            f"{label:58s} {fmt(results[(label, 'inference')]):>32s}   {fmt(results[(label, 'training')]):>32s}"
        )
    print(
        f"{'LocalCluster 2 x 1, tiny model (H=8, B=2): fixed cost':58s} "
        f"{fmt(fixed['inference']):>32s}   {fmt(fixed['training']):>32s}"
    )

    local = {
        s: results[(f"local, one call, {args.threads} threads", s)][0] for s in ("inference", "training")
    }
    two = next(k for k in results if k[0].startswith("LocalCluster 2 workers"))[0]
    print("\noverhead per step (median, LocalCluster 2 x 1 minus the local call):")
    for step in ("inference", "training"):
        print(
            f"  {step:10s} {(results[(two, step)][0] - local[step]) * 1e3:7.1f} ms "
            f"(fixed cost of an empty step: {fixed[step][0] * 1e3:.1f} ms)"
        )
    print("\nbytes per step (computed from the sizes):")
    print(f"  parameters {params / 1e6:.2f} MB; shipped model (pickled) {shipped / 1e6:.2f} MB")
    print(f"  to the workers: the model, once per worker: {2 * shipped / 1e6:.2f} MB with 2 workers")
    print(
        f"  training, back: {chunks - 1} gradient set(s) between workers in the sum tree + 1 to the caller: "
        f"{chunks * params / 1e6:.2f} MB"
    )
    print(f"  inference, back: y, h_n, c_n to the caller: {y_bytes / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
