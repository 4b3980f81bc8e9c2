"""``python -m lstm_c bench``: a quick benchmark of this install on this machine.

A few shapes, each timed for lstm_c, the NumPy reference and, when installed,
PyTorch's ``nn.LSTM`` and ONNX Runtime's ``LSTM`` operator, interleaved in one
run with the same weights and thread count. The full suite, with DeepBench's
shapes, the GEMM peak and a chart, is ``bench/`` in the source tree.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import numpy as np

from lstm_c import functional, reference
from lstm_c._info import cpu_model
from lstm_c.interop import to_onnx


@dataclass(frozen=True)
class Shape:
    kind: str  # "training" (forward + backward) or "inference"
    T: int
    B: int
    H: int  # input size = hidden size, one layer

    @property
    def label(self) -> str:
        return f"{self.kind} H={self.H} B={self.B} T={self.T}"

    @property
    def flops(self) -> float:
        forward = 8.0 * self.T * self.B * self.H * (2 * self.H)
        return 3 * forward if self.kind == "training" else forward


SHAPES = (
    Shape("training", 25, 32, 256),
    Shape("training", 25, 16, 512),
    Shape("inference", 25, 4, 512),
    Shape("inference", 100, 1, 128),
)


def _weights(shape: Shape, dtype: np.dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(shape.H)
    sizes = {"weight_ih_l0": (4 * shape.H, shape.H), "weight_hh_l0": (4 * shape.H, shape.H),
             "bias_ih_l0": (4 * shape.H,), "bias_hh_l0": (4 * shape.H,)}
    return {k: rng.uniform(-bound, bound, s).astype(dtype) for k, s in sizes.items()}


def _functional(api: Any, shape: Shape, sd: dict[str, np.ndarray], x: np.ndarray,
                threads: int) -> Callable[[], Any]:
    args = (x, sd["weight_ih_l0"], sd["weight_hh_l0"], sd["bias_ih_l0"], sd["bias_hh_l0"])
    if shape.kind == "inference":
        return lambda: api.lstm_forward(*args, training=False, num_threads=threads)

    def train() -> Any:
        y, _, _, cache = api.lstm_forward(*args, num_threads=threads)
        return api.lstm_backward(cache, y, num_threads=threads)

    return train


def _torch(shape: Shape, sd: dict[str, np.ndarray], x: np.ndarray,
           threads: int) -> Callable[[], Any] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    module = torch.nn.LSTM(shape.H, shape.H).to(getattr(torch, str(x.dtype)))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    if shape.kind == "inference":
        xt = torch.from_numpy(x)

        def infer() -> Any:
            with torch.inference_mode():
                return module(xt)

        return infer
    xt = torch.from_numpy(x).requires_grad_(True)

    def train() -> Any:
        module.zero_grad(set_to_none=True)
        xt.grad = None
        y, _ = module(xt)
        y.backward(y.detach())
        return xt.grad

    return train


def _onnxruntime(shape: Shape, sd: dict[str, np.ndarray], x: np.ndarray,
                 threads: int) -> Callable[[], Any] | None:
    if shape.kind != "inference" or x.dtype != np.float32:
        return None  # ONNX Runtime's CPU LSTM is inference only, float32 only
    try:
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError:
        return None
    w = to_onnx(sd)
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=shape.H)
    graph = helper.make_graph(
        [node], "lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w[k], k) for k in ("W", "R", "B")],
    )
    # IR version 8 pairs with opset 14 and loads in any recent ONNX Runtime.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return lambda: session.run(None, {"X": x})


def _median_seconds(call: Callable[[], Any], budget: float) -> float:
    call()  # warm up (and first-call setup)
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _progress(out: TextIO, done: int, total: int, what: str) -> None:
    if not out.isatty():
        return
    width = 30
    filled = width * done // total
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what:<40}")
    out.flush()
    if done == total:
        out.write("\n")


def run(out: TextIO = sys.stdout, progress: TextIO = sys.stderr, *, threads: int = 2,
        dtype: str = "float32", budget: float = 1.0, shapes: tuple[Shape, ...] = SHAPES) -> None:
    """Time every shape for every available implementation and print a table.

    Parameters
    ----------
    out : text stream
        Where the table goes.
    progress : text stream
        Where the progress bar goes (only when it is a terminal).
    threads : int
        Threads for every implementation.
    dtype : "float32" or "float64"
    budget : float
        Seconds of timed calls per shape and implementation (at least 3 calls).
    shapes : tuple of Shape
    """
    np_dtype = np.dtype(dtype)
    builders = {
        "lstm_c": lambda s, sd, x: _functional(functional, s, sd, x, threads),
        "NumPy reference": lambda s, sd, x: _functional(reference, s, sd, x, threads),
        "PyTorch": lambda s, sd, x: _torch(s, sd, x, threads),
        "ONNX Runtime": lambda s, sd, x: _onnxruntime(s, sd, x, threads),
    }
    rows: list[tuple[Shape, dict[str, float]]] = []
    total = len(shapes) * len(builders)
    done = 0
    for shape in shapes:
        sd = _weights(shape, np_dtype)
        x = np.random.default_rng(1).standard_normal((shape.T, shape.B, shape.H)).astype(np_dtype)
        medians: dict[str, float] = {}
        for name, build in builders.items():
            _progress(progress, done, total, f"{shape.label}: {name}")
            call = build(shape, sd, x)
            if call is not None:
                medians[name] = _median_seconds(call, budget)
            done += 1
        rows.append((shape, medians))
    _progress(progress, total, total, "done")

    names = [n for n in builders if any(n in m for _, m in rows)]
    print(f"lstm_c quick benchmark: {dtype}, {threads} threads, median time per call "
          f"({cpu_model()}, {os.cpu_count()} CPUs)", file=out)
    if hasattr(os, "getloadavg"):
        print(f"load average {os.getloadavg()[0]:.2f} (other work on the machine slows every "
              f"column, multi-threaded ones most)", file=out)
    header = ["shape"] + names + ["lstm_c GFLOP/s"] + [f"x {n}" for n in names[1:]]
    table = [header]
    for shape, medians in rows:
        ours = medians["lstm_c"]
        cells = [shape.label] + [_ms(medians.get(n)) for n in names]
        cells.append(f"{shape.flops / ours / 1e9:.1f}")
        cells += [f"{medians[n] / ours:.2f}x" if n in medians else "-" for n in names[1:]]
        table.append(cells)
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    for k, r in enumerate(table):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))),
              file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)
    print("x peer = the peer's time over lstm_c's: above 1x, lstm_c is faster.", file=out)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"
