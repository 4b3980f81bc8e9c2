"""The benchmark harness: cases, FLOP counts, the implementations under test, the GEMM peak.

Imported by the pytest-benchmark suite (`test_bench_lstm.py`), by `run.py` and
by `report.py`; it does not depend on pytest. Every implementation is built
from the same parameters, named as in `torch.nn.LSTM.state_dict()`:

    weight_ih_l{k}[_reverse] (4H, I_k), weight_hh_l{k}[_reverse] (4H, H),
    bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse] (4H,), gates i, f, g, o.

PyTorch and ONNX Runtime are optional: when one is missing (or cannot run a
case, e.g. ONNX Runtime's CPU LSTM has no float64 kernel) its builder raises
`Unavailable` and the suite skips that column.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

DEFAULT_THREADS = 2
DTYPES = ("float32", "float64")

# Implementation ids, in the order of the report's columns.
IMPLS = ("lstm_c", "lstm_c_1thread", "lstm_c_forward_t1", "reference", "torch", "onnxruntime")
IMPL_LABELS = {
    "lstm_c": "lstm_c",
    "lstm_c_1thread": "lstm_c, 1 thread",
    "lstm_c_forward_t1": "lstm_c.lstm_forward, T=1",
    "reference": "NumPy reference",
    "torch": "PyTorch",
    "onnxruntime": "ONNX Runtime",
}
PEERS = ("reference", "torch", "onnxruntime")


class Unavailable(Exception):
    """This implementation cannot run this case here (not installed, not supported)."""


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One benchmark shape. `kind` is "training" (forward + backward), "inference" or "step"."""

    name: str
    kind: str
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    impls: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # dtypes of this case in the quick subset
    note: str = ""
    dtypes: tuple[str, ...] = DTYPES

    @property
    def dirs(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def uses_layer_class(self) -> bool:
        """Whether lstm_c is measured through `lstm_c.LSTM` (stacked, bidirectional, step)."""
        return self.kind == "step" or self.layers > 1 or self.bidirectional

    @property
    def shape(self) -> str:
        s = f"H={self.H} B={self.B}" + ("" if self.kind == "step" else f" T={self.T}")
        if self.I != self.H:
            s += f" I={self.I}"
        if self.layers > 1 or self.bidirectional:
            s += f", {self.layers} layers" + (" bidir" if self.bidirectional else "")
        return s


def flops(case: Case) -> float:
    """FLOPs of one timed call: forward 8·T·B·H·(I+H) per layer and direction, training 3×.

    A step case counts one time step (T = 1) per call.
    """
    steps = 1 if case.kind == "step" else case.T
    total = 0.0
    for layer in range(case.layers):
        inputs = case.I if layer == 0 else case.H * case.dirs
        total += case.dirs * 8.0 * steps * case.B * case.H * (inputs + case.H)
    return 3.0 * total if case.kind == "training" else total


_SEQ = ("lstm_c", "reference", "torch")
_INFER = _SEQ + ("onnxruntime",)


def _cases() -> list[Case]:
    cases: list[Case] = []
    # Baidu DeepBench training set (I = H, one layer), cut to 2 cores.
    for H in (256, 512, 1024):
        for B in (16, 32, 64):
            T = 150 if H == 256 else 25
            impls = _SEQ + (("lstm_c_1thread",) if (H, B) == (512, 64) else ())
            quick = DTYPES if (H, B) == (512, 32) else ()
            cases.append(Case(f"train_H{H}_B{B}_T{T}", "training", T, B, H, H, impls=impls,
                              quick=quick, note="DeepBench training"))
    # DeepBench inference (server) set, the device case, a small-batch case.
    for H in (512, 1024):
        for B in (1, 4):
            quick = ("float32",) if (H, B) == (512, 4) else ()
            cases.append(Case(f"infer_H{H}_B{B}_T25", "inference", 25, B, H, H, impls=_INFER,
                              quick=quick, note="DeepBench inference"))
    cases.append(Case("infer_H256_B1_T150", "inference", 150, 1, 256, 256, impls=_INFER,
                      note="DeepBench device"))
    cases.append(Case("infer_H128_B1_T100", "inference", 100, 1, 128, 128, impls=_INFER,
                      quick=("float32",), note="small batch"))
    # The streaming step: one time step per call, state carried over.
    cases.append(Case("step_H128_B1", "step", 1, 1, 128, 128,
                      impls=("lstm_c", "lstm_c_forward_t1", "reference", "torch", "onnxruntime"), quick=DTYPES,
                      note="LSTM.step"))
    # One stacked bidirectional case (through lstm_c.LSTM).
    cases.append(Case("train_2L_bidir_H256_B32_T25", "training", 25, 32, 256, 256, layers=2,
                      bidirectional=True, impls=_SEQ, quick=("float32",), note="stacked bidirectional"))
    cases.append(Case("infer_2L_bidir_H256_B32_T25", "inference", 25, 32, 256, 256, layers=2,
                      bidirectional=True, impls=_INFER, note="stacked bidirectional"))
    return cases


CASES: list[Case] = _cases()
CASES_BY_NAME = {c.name: c for c in CASES}


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """Inputs of one case: torch-named parameters, x (T, B, I) or x_t (B, I), dy, initial state."""

    params: dict[str, np.ndarray]
    x: np.ndarray
    dy: np.ndarray | None
    h0: np.ndarray | None  # step cases: (B, H)
    c0: np.ndarray | None


def param_names(layers: int, dirs: int) -> list[str]:
    names = []
    for layer in range(layers):
        for d in range(dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            names += [f"weight_ih_{sfx}", f"weight_hh_{sfx}", f"bias_ih_{sfx}", f"bias_hh_{sfx}"]
    return names


def make_data(case: Case, dtype: str, seed: int = 0) -> Data:
    """Random inputs and PyTorch-style initialised weights (uniform ±1/sqrt(H))."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    k = 1.0 / math.sqrt(case.H)
    params: dict[str, np.ndarray] = {}
    for layer in range(case.layers):
        inputs = case.I if layer == 0 else case.H * case.dirs
        for d in range(case.dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            params[f"weight_ih_{sfx}"] = rng.uniform(-k, k, (4 * case.H, inputs)).astype(dt)
            params[f"weight_hh_{sfx}"] = rng.uniform(-k, k, (4 * case.H, case.H)).astype(dt)
            params[f"bias_ih_{sfx}"] = rng.uniform(-k, k, 4 * case.H).astype(dt)
            params[f"bias_hh_{sfx}"] = rng.uniform(-k, k, 4 * case.H).astype(dt)
    if case.kind == "step":
        x = rng.standard_normal((case.B, case.I)).astype(dt)
        h0 = (0.5 * rng.standard_normal((case.B, case.H))).astype(dt)
        c0 = rng.standard_normal((case.B, case.H)).astype(dt)
        return Data(params, x, None, h0, c0)
    x = rng.standard_normal((case.T, case.B, case.I)).astype(dt)
    dy = None
    if case.kind == "training":
        dy = rng.standard_normal((case.T, case.B, case.H * case.dirs)).astype(dt)
    return Data(params, x, dy, None, None)


# --------------------------------------------------------------------------- implementations


@dataclass
class Runner:
    """`run()` is what gets timed; `normalize(run())` gives arrays comparable with the oracle.

    Normalised outputs: inference {"y": (T, B, dirs·H), "h": (layers·dirs, B, H)};
    training {"y", "dx"}; step {"h": (B, H), "c": (B, H)} after the first call.
    """

    run: Callable[[], Any]
    normalize: Callable[[Any], dict[str, np.ndarray]]
    label: str = ""
    keep: list[Any] = field(default_factory=list)  # objects that must outlive the runner


def _import_lstm_c():
    try:
        import lstm_c
    except ImportError as exc:  # pragma: no cover - the suite needs lstm_c
        raise Unavailable(f"lstm_c is not importable: {exc}") from exc
    return lstm_c


def _stack_forward(mod, params, x, case: Case, training: bool, threads: int | None):
    """Layers and directions composed from a functional module (lstm_c or lstm_c.reference)."""
    caches, hs, cs = [], [], []
    inp = x
    for layer in range(case.layers):
        outs = []
        for d in range(case.dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            y, h, c, cache = mod.lstm_forward(
                inp, params[f"weight_ih_{sfx}"], params[f"weight_hh_{sfx}"],
                b_ih=params[f"bias_ih_{sfx}"], b_hh=params[f"bias_hh_{sfx}"],
                reverse=bool(d), training=training, num_threads=threads,
            )
            outs.append(y)
            caches.append(cache)
            hs.append(h)
            cs.append(c)
        inp = outs[0] if case.dirs == 1 else np.concatenate(outs, axis=-1)
    return inp, hs, cs, caches


def _stack_backward(mod, caches, dy, case: Case, threads: int | None):
    H = case.H
    for layer in reversed(range(case.layers)):
        dx = None
        for d in range(case.dirs):
            g_out = dy if case.dirs == 1 else dy[..., d * H:(d + 1) * H]
            grads = mod.lstm_backward(caches[layer * case.dirs + d], g_out, num_threads=threads)
            dx = grads.dx if dx is None else dx + grads.dx
        dy = dx
    return dy


def _functional(mod, case: Case, data: Data, threads: int | None) -> Runner:
    """lstm_c.lstm_forward/lstm_backward or the NumPy reference, per layer and direction."""
    p, x = data.params, data.x
    if case.kind == "step":
        state = [data.h0, data.c0]
        w = (p["weight_ih_l0"], p["weight_hh_l0"])
        b = dict(b_ih=p["bias_ih_l0"], b_hh=p["bias_hh_l0"])
        x_seq = x[None]

        def run():
            _, state[0], state[1], _ = mod.lstm_forward(
                x_seq, *w, **b, h0=state[0], c0=state[1], training=False, num_threads=threads)
            return state[0], state[1]

        return Runner(run, lambda r: {"h": r[0], "c": r[1]})
    if case.kind == "inference":
        def run():
            y, hs, cs, _ = _stack_forward(mod, p, x, case, False, threads)
            return y, hs

        return Runner(run, lambda r: {"y": r[0], "h": np.stack(r[1])})

    def run():
        y, _, _, caches = _stack_forward(mod, p, x, case, True, threads)
        return y, _stack_backward(mod, caches, data.dy, case, threads)

    return Runner(run, lambda r: {"y": r[0], "dx": r[1]})


def build_lstm_c(case: Case, data: Data, threads: int) -> Runner:
    lstm_c = _import_lstm_c()
    if not case.uses_layer_class:
        return _functional(lstm_c, case, data, threads)
    if not hasattr(lstm_c, "LSTM"):
        raise Unavailable("lstm_c.LSTM does not exist yet")
    if hasattr(lstm_c, "set_num_threads"):
        lstm_c.set_num_threads(threads)
    m = lstm_c.LSTM(case.I, case.H, num_layers=case.layers, bidirectional=case.bidirectional,
                    dtype=np.dtype(data.x.dtype).type)
    m.load_state_dict(data.params)
    if hasattr(m, "num_threads"):
        m.num_threads = threads
    x = data.x
    if case.kind == "step":
        state = [(data.h0[None], data.c0[None])]  # (layers·dirs, B, H), as torch's hx
        if hasattr(m, "eval"):
            m.eval()

        def run():
            y, state[0] = m.step(x, state[0])
            return state[0]

        return Runner(run, lambda r: {"h": np.asarray(r[0]).reshape(case.B, case.H),
                                       "c": np.asarray(r[1]).reshape(case.B, case.H)}, keep=[m])
    if case.kind == "inference":
        if hasattr(m, "eval"):
            m.eval()

        def run():
            return m(x)

        return Runner(run, lambda r: {"y": r[0], "h": r[1][0]}, keep=[m])
    if hasattr(m, "train"):
        m.train()
    dy = data.dy

    def run():
        y, _ = m(x)
        dx, _ = m.backward(dy)
        return y, dx

    return Runner(run, lambda r: {"y": r[0], "dx": r[1]}, keep=[m])


def build_lstm_c_1thread(case: Case, data: Data, threads: int) -> Runner:
    """The same kernels on one thread: the thread-scaling column."""
    return _functional(_import_lstm_c(), case, data, 1)


def build_lstm_c_forward_t1(case: Case, data: Data, threads: int) -> Runner:
    """A step through the functional API (lstm_forward with T = 1): its per-call overhead."""
    return _functional(_import_lstm_c(), case, data, threads)


def build_reference(case: Case, data: Data, threads: int) -> Runner:
    lstm_c = _import_lstm_c()
    from lstm_c import reference

    del lstm_c
    return _functional(reference, case, data, threads)


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise Unavailable("PyTorch is not installed") from exc
    return torch


def build_torch(case: Case, data: Data, threads: int) -> Runner:
    torch = _torch()
    torch.set_num_threads(threads)
    tdtype = getattr(torch, str(data.x.dtype))
    p = data.params
    if case.kind == "step":
        cell = torch.nn.LSTMCell(case.I, case.H, dtype=tdtype)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(torch.from_numpy(p[name + "_l0"]))
        x = torch.from_numpy(data.x)
        state = [(torch.from_numpy(data.h0.copy()), torch.from_numpy(data.c0.copy()))]

        def run():
            with torch.inference_mode():
                state[0] = cell(x, state[0])
            return state[0]

        return Runner(run, lambda r: {"h": r[0].numpy(), "c": r[1].numpy()}, keep=[cell])
    lstm = torch.nn.LSTM(case.I, case.H, num_layers=case.layers,
                         bidirectional=case.bidirectional, dtype=tdtype)
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            param.copy_(torch.from_numpy(p[name]))
    x = torch.from_numpy(data.x)
    if case.kind == "inference":
        lstm.eval()

        def run():
            with torch.inference_mode():
                return lstm(x)

        return Runner(run, lambda r: {"y": r[0].numpy(), "h": r[1][0].numpy()}, keep=[lstm])
    xg = x.clone().requires_grad_(True)
    dy = torch.from_numpy(data.dy)

    def run():
        lstm.zero_grad(set_to_none=True)
        xg.grad = None
        y, _ = lstm(xg)
        y.backward(dy)
        return y, xg.grad

    return Runner(run, lambda r: {"y": r[0].detach().numpy(), "dx": r[1].numpy()}, keep=[lstm])


def _onnx_gates(w: np.ndarray, H: int) -> np.ndarray:
    """PyTorch gate blocks (i, f, g, o) to ONNX's (i, o, f, c) along the first axis."""
    return w.reshape(4, H, *w.shape[1:])[[0, 3, 1, 2]].reshape(w.shape)


def onnx_lstm_model(case: Case, params: dict[str, np.ndarray], dtype: str, with_state: bool = False):
    """An ONNX model of `case`'s LSTM stack built with onnx.helper (opset 14).

    Inputs X (T, B, I) [, initial_h, initial_c (dirs, B, H) when `with_state`,
    single layer only]; outputs the last layer's Y (T, dirs, B, H) and every
    layer's Y_h. Stacked layers feed Transpose + Reshape of Y, (T, B, dirs·H).
    """
    from onnx import TensorProto, helper, numpy_helper

    H, dirs = case.H, case.dirs
    tp = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype]
    T = 1 if case.kind == "step" else case.T
    direction = "bidirectional" if case.bidirectional else "forward"
    inputs = [helper.make_tensor_value_info("X", tp, [T, case.B, case.I])]
    if with_state:
        inputs += [helper.make_tensor_value_info(n, tp, [dirs, case.B, H])
                   for n in ("initial_h", "initial_c")]
    nodes, inits, outputs = [], [], []
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "flat_shape"))
    cur = "X"
    for layer in range(case.layers):
        W, R, Bs = [], [], []
        for d in range(dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            W.append(_onnx_gates(params[f"weight_ih_{sfx}"], H))
            R.append(_onnx_gates(params[f"weight_hh_{sfx}"], H))
            Bs.append(np.concatenate([_onnx_gates(params[f"bias_ih_{sfx}"], H),
                                      _onnx_gates(params[f"bias_hh_{sfx}"], H)]))
        for n, arr in ((f"W{layer}", W), (f"R{layer}", R), (f"B{layer}", Bs)):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(np.stack(arr)), n))
        last = layer == case.layers - 1
        y = "Y" if last else f"Y{layer}"
        node_inputs = [cur, f"W{layer}", f"R{layer}", f"B{layer}"]
        if with_state:
            node_inputs += ["", "initial_h", "initial_c"]
        nodes.append(helper.make_node("LSTM", node_inputs, [y, f"Y_h{layer}", f"Y_c{layer}"],
                                      hidden_size=H, direction=direction))
        outputs.append(helper.make_tensor_value_info(f"Y_h{layer}", tp, [dirs, case.B, H]))
        if with_state:
            outputs.append(helper.make_tensor_value_info(f"Y_c{layer}", tp, [dirs, case.B, H]))
        if not last:
            nodes.append(helper.make_node("Transpose", [y], [f"Yt{layer}"], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"Yt{layer}", "flat_shape"], [f"X{layer + 1}"]))
            cur = f"X{layer + 1}"
    outputs.insert(0, helper.make_tensor_value_info("Y", tp, [T, dirs, case.B, H]))
    graph = helper.make_graph(nodes, "lstm_c_bench", inputs, outputs, initializer=inits)
    # ir_version 8 pairs with opset 14 and loads in any recent ONNX Runtime.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def build_onnxruntime(case: Case, data: Data, threads: int) -> Runner:
    if case.kind == "training":
        raise Unavailable("ONNX Runtime is measured for inference only")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Unavailable("onnxruntime is not installed") from exc
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise Unavailable("onnx (to build the model) is not installed") from exc
    dtype = str(data.x.dtype)
    step = case.kind == "step"
    model = onnx_lstm_model(case, data.params, dtype, with_state=step)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 4  # the float64 probe below would log an error otherwise
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    B, H = case.B, case.H
    if step:
        x = data.x[None]
        state = [data.h0[None].copy(), data.c0[None].copy()]

        def run():
            _, state[0], state[1] = sess.run(None, {"X": x, "initial_h": state[0], "initial_c": state[1]})
            return state[0], state[1]

        def normalize(r):
            return {"h": r[0].reshape(B, H), "c": r[1].reshape(B, H)}
    else:
        x = data.x
        feeds = {"X": x}

        def run():
            return sess.run(None, feeds)

        def normalize(r):
            y = r[0].transpose(0, 2, 1, 3).reshape(case.T, B, case.dirs * H)
            return {"y": y, "h": np.concatenate(r[1:], axis=0)}
    try:
        probe = sess.run(None, {i.name: np.zeros(i.shape, dtype) for i in sess.get_inputs()})
        del probe
    except Exception as exc:  # ONNX Runtime raises its own exception types
        if "double" in str(exc) or "not support" in str(exc).lower():
            raise Unavailable(f"ONNX Runtime's CPU LSTM kernel does not run {dtype}") from exc
        raise
    return Runner(run, normalize, keep=[sess])


BUILDERS: dict[str, Callable[[Case, Data, int], Runner]] = {
    "lstm_c": build_lstm_c,
    "lstm_c_1thread": build_lstm_c_1thread,
    "lstm_c_forward_t1": build_lstm_c_forward_t1,
    "reference": build_reference,
    "torch": build_torch,
    "onnxruntime": build_onnxruntime,
}


def oracle(case: Case, data: Data) -> dict[str, np.ndarray]:
    """The NumPy reference's normalised outputs for one call from the initial state."""
    runner = build_reference(case, data, 1)
    return runner.normalize(runner.run())


def mismatch(ours: dict[str, np.ndarray], expected: dict[str, np.ndarray], dtype: str) -> str | None:
    """None if `ours` agrees with `expected`, else a description (relative max-abs error)."""
    tol = 2e-3 if dtype == "float32" else 1e-8
    for key, want in expected.items():
        got = np.asarray(ours[key])
        if got.shape != want.shape:
            return f"{key}: shape {got.shape}, expected {want.shape}"
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
        err = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) / scale
        if not err <= tol:
            return f"{key}: max error {err:.3g} (relative to max |value|), tolerance {tol:g}"
    return None


# --------------------------------------------------------------------------- threads, peak, machine


_CONTROLLER: Any = None


def limit_threads(threads: int) -> contextlib.AbstractContextManager:
    """Pin every BLAS and OpenMP pool in the process (and PyTorch's) to `threads`.

    Call after importing the peers, so that their libraries are found. Returns
    the threadpoolctl limiter; it restores the previous limits on `restore_original_limits`.
    """
    global _CONTROLLER
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  (load its OpenMP runtime before inspecting)

        torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401
    with contextlib.suppress(Exception):
        import lstm_c

        if hasattr(lstm_c, "set_num_threads"):
            lstm_c.set_num_threads(threads)
    from threadpoolctl import ThreadpoolController

    _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=threads)


_GEMM_OPERANDS: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def gemm_peak(dtype: str, threads: int, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of SciPy's sgemm/dgemm on n×n matrices with `threads` BLAS threads (best of `repeats`).

    SciPy's BLAS is the one lstm_c's kernels call, so this is their ceiling.
    The first call for a dtype also warms up (operands are kept for the next calls).
    """
    from scipy.linalg import blas
    from threadpoolctl import threadpool_limits

    gemm = blas.sgemm if dtype == "float32" else blas.dgemm
    key = (dtype, n)
    warm = key in _GEMM_OPERANDS
    if not warm:
        rng = np.random.default_rng(1)
        _GEMM_OPERANDS[key] = (np.asfortranarray(rng.standard_normal((n, n)).astype(dtype)),
                               np.asfortranarray(rng.standard_normal((n, n)).astype(dtype)),
                               np.zeros((n, n), dtype, order="F"))
    a, b, c = _GEMM_OPERANDS[key]
    best = math.inf
    with threadpool_limits(limits=threads, user_api="blas"):
        if not warm:
            gemm(1.0, a, b, c=c, overwrite_c=True)
        for _ in range(repeats):
            t0 = time.perf_counter()
            gemm(1.0, a, b, c=c, overwrite_c=True)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("lstm_c", "numpy", "scipy", "torch", "onnxruntime", "onnx", "threadpoolctl"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def machine_info(threads: int) -> dict[str, Any]:
    """What the report names: CPU model, cores, threads, the BLAS, versions, date."""
    lscpu = _lscpu()
    model = lscpu.get("Model name") or platform.processor() or platform.machine()
    try:
        sockets = int(lscpu.get("Socket(s)", "1"))
        cores = int(lscpu["Core(s) per socket"]) * sockets
    except (KeyError, ValueError):
        cores = None
    try:
        cpus = int(lscpu["CPU(s)"])
    except (KeyError, ValueError):
        cpus = os.cpu_count()
    blas = []
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            if lib.get("user_api") == "blas":
                blas.append(f"{lib.get('internal_api')} {lib.get('version')} "
                            f"({lib.get('architecture')}, {os.path.basename(lib.get('filepath', ''))})")
    openmp = where = None
    with contextlib.suppress(Exception):
        import lstm_c

        where = os.path.dirname(lstm_c.__file__)
        openmp = bool(lstm_c.openmp_enabled())
    return {
        "cpu_model": model,
        "cores": cores,
        "cpus": cpus,
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "l2": lscpu.get("L2 cache"),
        "l3": lscpu.get("L3 cache"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "bench_threads": threads,
        "blas": blas,
        "lstm_c_openmp": openmp,
        "lstm_c_path": where,
        "versions": _versions(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "thread_env": {k: v for k, v in sorted(os.environ.items())
                       if k.startswith(("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MKL_", "LSTM_C_"))},
    }
