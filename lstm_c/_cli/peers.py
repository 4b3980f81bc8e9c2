"""What the benchmarks compare, built once for ``python -m lstm_c bench`` and the suite in bench/.

A `Case` is one shape; `make_data` draws its inputs and PyTorch-style
weights, named as in ``torch.nn.LSTM.state_dict()`` (`lstm_c._params`);
`BUILDERS` turn them into a `Runner` for each implementation: lstm_c, its
NumPy reference, PyTorch's ``nn.LSTM`` and ONNX Runtime's ``LSTM`` operator,
all from the same weights and with the same thread count. `mismatch` checks
a runner's outputs against the reference's before anything is timed.

PyTorch and ONNX Runtime are optional: `not_installed` names the missing
ones, and a builder raises `Unavailable` for a case its implementation
cannot run (not installed, training in ONNX Runtime, float64 in its kernel).
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstm_c import functional, reference
from lstm_c._params import layer_param_names, param_name, param_shapes
from lstm_c._stack import stack_backward, stack_forward

DTYPES = ("float32", "float64")

# Implementation ids and what a reader sees, in the order of the tables' columns.
LABELS = {
    "lstm_c": "lstm_c",
    "lstm_c_1thread": "lstm_c, 1 thread",
    "lstm_c_forward_t1": "lstm_c.lstm_forward, T=1",
    "reference": "NumPy reference",
    "torch": "PyTorch",
    "onnxruntime": "ONNX Runtime",
}

# The optional peers: the modules each needs, and how to get them. PyTorch's default
# Linux wheel pulls gigabytes of CUDA libraries; its CPU build is all a CPU benchmark needs.
_REQUIRES = {"torch": ("torch",), "onnxruntime": ("onnxruntime", "onnx")}
INSTALL_HINTS = {
    "torch": "for the CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu",
    "onnxruntime": "pip install onnx onnxruntime",
}


class Unavailable(Exception):
    """This implementation cannot run this case here (not installed, not supported)."""


def not_installed(impls: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The optional peers among `impls` that do not import here: {impl: what to install}."""
    absent = {}
    for impl in (i for i in impls if i in _REQUIRES):
        try:
            _import(impl)
        except Unavailable:
            absent[impl] = INSTALL_HINTS[impl]
    return absent


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


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """Inputs of one case: torch-named parameters, x (T, B, I) or x_t (B, I), dy, initial state."""

    params: dict[str, np.ndarray]
    x: np.ndarray
    dy: np.ndarray | None
    h0: np.ndarray | None  # step cases: (B, H)
    c0: np.ndarray | None


def initial_state(data: Data) -> tuple[np.ndarray, np.ndarray]:
    """(h0, c0), each (B, H), of a step case's data."""
    if data.h0 is None or data.c0 is None:
        raise ValueError("only a step case's data has an initial state")
    return data.h0, data.c0


def make_data(case: Case, dtype: str, seed: int = 0) -> Data:
    """Random inputs and PyTorch-style initialised weights (uniform ±1/sqrt(H))."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    k = 1.0 / math.sqrt(case.H)
    params = {
        name: rng.uniform(-k, k, shape).astype(dt)
        for name, shape in param_shapes(case.I, case.H, case.layers, case.dirs).items()
    }
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
    """`run()` is what gets timed; `normalize(run())` gives arrays comparable with the reference's.

    Normalised outputs: inference {"y": (T, B, dirs·H), "h": (layers·dirs, B, H)};
    training {"y", "dx"}; step {"h": (B, H), "c": (B, H)} after the first call.
    """

    run: Callable[[], Any]
    normalize: Callable[[Any], dict[str, np.ndarray]]
    keep: list[Any] = field(default_factory=list)  # objects that must outlive the runner


def _functional(api: Any, case: Case, data: Data, threads: int | None) -> Runner:
    """A functional API (`lstm_c.functional` or `lstm_c.reference`), one call per layer and direction."""
    p, x = data.params, data.x
    names = layer_param_names(case.layers, case.dirs, bias=True, projection=False, peephole=False)
    if case.kind == "step":
        state = list(initial_state(data))
        n = names[0]
        assert n.b_ih is not None and n.b_hh is not None  # bias=True above
        weights = (p[n.w_ih], p[n.w_hh], p[n.b_ih], p[n.b_hh])
        x_seq = x[None]

        def step() -> tuple[np.ndarray, np.ndarray]:
            _, state[0], state[1], _ = api.lstm_forward(
                x_seq, *weights, state[0], state[1], training=False, num_threads=threads
            )
            return state[0], state[1]

        return Runner(step, lambda r: {"h": r[0], "c": r[1]})
    if case.kind == "inference":

        def infer() -> tuple[np.ndarray, np.ndarray]:
            y, h_n, _, _ = stack_forward(api, p, names, case.dirs, x, num_threads=threads)
            return y, h_n

        return Runner(infer, lambda r: {"y": r[0], "h": r[1]})

    def train() -> tuple[np.ndarray, np.ndarray]:
        y, _, _, trace = stack_forward(api, p, names, case.dirs, x, training=True, num_threads=threads)
        assert trace is not None
        dx = stack_backward(api, names, case.dirs, trace, data.dy, num_threads=threads)[0]
        return y, dx

    return Runner(train, lambda r: {"y": r[0], "dx": r[1]})


def build_lstm_c(case: Case, data: Data, threads: int) -> Runner:
    """lstm_c: inference through `LSTM.freeze` (the weights packed once, as ONNX Runtime's
    session packs them); training and the step through the functional API for one layer
    and direction, `lstm_c.LSTM` otherwise."""
    from lstm_c import LSTM

    if not case.uses_layer_class and case.kind != "inference":
        return _functional(functional, case, data, threads)
    m = LSTM(
        case.I, case.H, num_layers=case.layers, bidirectional=case.bidirectional, dtype=data.x.dtype.type
    )
    m.load_state_dict(data.params)
    m.num_threads = threads
    x = data.x
    if case.kind == "step":
        m.eval()
        h0, c0 = initial_state(data)
        state = [(h0[None], c0[None])]  # (layers·dirs, B, H), as torch's hx

        def step() -> Any:
            _, state[0] = m.step(x, state[0])
            return state[0]

        return Runner(
            step,
            lambda r: {
                "h": np.asarray(r[0]).reshape(case.B, case.H),
                "c": np.asarray(r[1]).reshape(case.B, case.H),
            },
            keep=[m],
        )
    if case.kind == "inference":
        frozen = m.freeze()
        return Runner(lambda: frozen(x), lambda r: {"y": r[0], "h": r[1][0]}, keep=[frozen])
    m.train()
    dy = data.dy

    def train() -> tuple[np.ndarray, np.ndarray]:
        y, _ = m(x)
        dx, _ = m.backward(dy)
        return y, dx

    return Runner(train, lambda r: {"y": r[0], "dx": r[1]}, keep=[m])


def build_lstm_c_1thread(case: Case, data: Data, threads: int) -> Runner:
    """The same kernels on one thread: the thread-scaling column."""
    return _functional(functional, case, data, 1)


def build_lstm_c_forward_t1(case: Case, data: Data, threads: int) -> Runner:
    """A step through the functional API (lstm_forward with T = 1): its per-call overhead."""
    return _functional(functional, case, data, threads)


def build_reference(case: Case, data: Data, threads: int) -> Runner:
    """lstm_c.reference, plain NumPy (its BLAS threads are whatever the caller set)."""
    return _functional(reference, case, data, threads)


def _import(impl: str) -> Any:
    """The module of an optional peer, or `Unavailable` with what to install."""
    try:
        modules = [importlib.import_module(name) for name in _REQUIRES[impl]]
    except ImportError as exc:
        raise Unavailable(f"{LABELS[impl]} is not installed ({INSTALL_HINTS[impl]})") from exc
    return modules[0]


def build_torch(case: Case, data: Data, threads: int) -> Runner:
    """torch.nn.LSTM (nn.LSTMCell for a step) on the CPU, loaded with the case's state_dict."""
    torch = _import("torch")
    torch.set_num_threads(threads)
    tdtype = getattr(torch, str(data.x.dtype))
    p = {name: torch.from_numpy(value) for name, value in data.params.items()}
    if case.kind == "step":
        cell = torch.nn.LSTMCell(case.I, case.H, dtype=tdtype)
        cell.load_state_dict(
            {kind: p[param_name(kind, 0)] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        )
        x = torch.from_numpy(data.x)
        h0, c0 = initial_state(data)
        state = [(torch.from_numpy(h0.copy()), torch.from_numpy(c0.copy()))]

        def step() -> Any:
            with torch.inference_mode():
                state[0] = cell(x, state[0])
            return state[0]

        return Runner(step, lambda r: {"h": r[0].numpy(), "c": r[1].numpy()}, keep=[cell])
    lstm = torch.nn.LSTM(
        case.I, case.H, num_layers=case.layers, bidirectional=case.bidirectional, dtype=tdtype
    )
    lstm.load_state_dict(p)
    x = torch.from_numpy(data.x)
    if case.kind == "inference":
        lstm.eval()

        def infer() -> Any:
            with torch.inference_mode():
                return lstm(x)

        return Runner(infer, lambda r: {"y": r[0].numpy(), "h": r[1][0].numpy()}, keep=[lstm])
    xg = x.clone().requires_grad_(True)
    dy = torch.from_numpy(data.dy)

    def train() -> Any:
        lstm.zero_grad(set_to_none=True)
        xg.grad = None
        y, _ = lstm(xg)
        y.backward(dy)
        return y, xg.grad

    return Runner(train, lambda r: {"y": r[0].detach().numpy(), "dx": r[1].numpy()}, keep=[lstm])


def onnx_lstm_model(case: Case, params: dict[str, np.ndarray], dtype: str, with_state: bool = False) -> Any:
    """An ONNX model (opset 14) of `case`'s LSTM stack: one LSTM node per layer.

    Each layer's weights go through `lstm_c.interop.to_onnx`. Inputs X (T, B, I)
    [, initial_h, initial_c (dirs, B, H) when `with_state`, single layer only];
    outputs the last layer's Y (T, dirs, B, H) and every layer's Y_h (with
    `with_state` also Y_c). Stacked layers feed Transpose + Reshape of Y,
    (T, B, dirs·H), to the next.
    """
    from onnx import TensorProto, helper, numpy_helper

    from lstm_c.interop import onnx_attributes, to_onnx

    H, dirs = case.H, case.dirs
    tp = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype]
    T = 1 if case.kind == "step" else case.T
    inputs = [helper.make_tensor_value_info("X", tp, [T, case.B, case.I])]
    if with_state:
        inputs += [
            helper.make_tensor_value_info(n, tp, [dirs, case.B, H]) for n in ("initial_h", "initial_c")
        ]
    nodes, outputs = [], []
    inits = [numpy_helper.from_array(np.array([0, 0, -1], np.int64), "flat_shape")]
    cur = "X"
    for layer in range(case.layers):
        # This layer's parameters renamed to a one-layer state_dict (suffix _l0).
        one_layer = {
            param_name(kind, 0, reverse): params[param_name(kind, layer, reverse)]
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            for reverse in (False, True)[:dirs]
        }
        weights = to_onnx(one_layer)
        for n in ("W", "R", "B"):
            inits.append(numpy_helper.from_array(weights[n], f"{n}{layer}"))
        last = layer == case.layers - 1
        y = "Y" if last else f"Y{layer}"
        node_inputs = [cur, f"W{layer}", f"R{layer}", f"B{layer}"]
        if with_state:
            node_inputs += ["", "initial_h", "initial_c"]
        nodes.append(
            helper.make_node(
                "LSTM", node_inputs, [y, f"Y_h{layer}", f"Y_c{layer}"], **onnx_attributes(one_layer)
            )
        )
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


def build_onnxruntime(case: Case, data: Data, threads: int, spinning: bool = True) -> Runner:
    """An ONNX Runtime session of `onnx_lstm_model` on the CPU; inference and step only.

    `spinning`: whether the session's idle threads poll for work (ONNX Runtime's
    default) rather than sleep (its ``session.intra_op.allow_spinning`` set to "0")."""
    if case.kind == "training":
        raise Unavailable("ONNX Runtime runs inference only")
    ort = _import("onnxruntime")
    dtype = str(data.x.dtype)
    step = case.kind == "step"
    model = onnx_lstm_model(case, data.params, dtype, with_state=step)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 4  # the float64 probe below would log an error otherwise
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    B, H = case.B, case.H
    run: Callable[[], Any]
    normalize: Callable[[Any], dict[str, np.ndarray]]
    if step:
        x = data.x[None]
        h0, c0 = initial_state(data)
        state = [h0[None].copy(), c0[None].copy()]

        def run() -> Any:
            _, state[0], state[1] = sess.run(None, {"X": x, "initial_h": state[0], "initial_c": state[1]})
            return state[0], state[1]

        def normalize(r: Any) -> dict[str, np.ndarray]:
            return {"h": r[0].reshape(B, H), "c": r[1].reshape(B, H)}
    else:
        feeds = {"X": data.x}

        def run() -> Any:
            return sess.run(None, feeds)

        def normalize(r: Any) -> dict[str, np.ndarray]:
            y = r[0].transpose(0, 2, 1, 3).reshape(case.T, B, case.dirs * H)
            return {"y": y, "h": np.concatenate(r[1:], axis=0)}

    try:
        sess.run(None, {i.name: np.zeros(i.shape, dtype) for i in sess.get_inputs()})
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


@contextlib.contextmanager
def limit_threads(threads: int) -> Iterator[None]:
    """Within: every BLAS and OpenMP pool in the process, and PyTorch's, on `threads` threads.

    Imports the installed peers first, so that their libraries are found;
    restores every previous limit on leaving. (lstm_c's runners pass their
    thread count to each call.)
    """
    from threadpoolctl import ThreadpoolController

    torch: Any = None
    with contextlib.suppress(ImportError):
        import torch
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401  (loads its libraries)
    if torch is not None:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    limiter = ThreadpoolController().limit(limits=threads)
    try:
        yield
    finally:
        limiter.restore_original_limits()
        if torch is not None:
            torch.set_num_threads(torch_threads)
