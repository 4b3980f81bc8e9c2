"""`lstm_c.torch.LSTM`: ``torch.nn.LSTM`` computed by lstm_c's kernels, as a ``torch.nn.Module``.

A drop-in replacement: the same constructor, parameters (``torch.nn.Parameter``
of the same names and shapes, so state_dicts load either way), inputs (a
Tensor, batched or unbatched, or a ``PackedSequence``; optional ``(h0, c0)``)
and outputs, plus ``peephole=True``. Autograd runs through one
``torch.autograd.Function`` for the whole layer stack, whose forward and
backward call the kernels on the tensors' own memory (``.numpy()`` views of
contiguous CPU tensors, gradients returned with ``torch.from_numpy``).

Needs PyTorch >= 2.1 (imported only here: ``import lstm_c`` never imports torch).
CPU tensors of float32 or float64 only; anything else is refused with an error
that names it. The kernels use lstm_c's own OpenMP threads:
``torch.set_num_threads`` does not change them, ``lstm_c.set_num_threads`` or
the module's `num_threads` attribute does.

``torch.compile`` runs the module eagerly: the layer stack is excluded from
compilation (one graph break), the rest of the model still compiles.
TorchScript cannot compile it (``torch.jit.script`` fails) and tracing it
(``torch.jit.trace``, the ONNX exporter's tracer) raises an error: the
parameters load unchanged into a ``torch.nn.LSTM``, which both support.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, overload

import numpy as np

from lstm_c import functional
from lstm_c._params import ParamNames, layer_param_names, param_shapes
from lstm_c._stack import StackTrace, stack_backward, stack_forward
from lstm_c._validation import check_checkpoint_every, check_layer_config, check_num_threads

__all__ = ["LSTM", "MIN_TORCH_VERSION"]

# The oldest PyTorch this module supports: torch.nn.Module factory kwargs (dtype=),
# torch.compiler.disable, autograd.Function with ctx.set_materialize_grads.
MIN_TORCH_VERSION = (2, 1)
_CPU_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def _version_tuple(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


_NEEDED = ".".join(map(str, MIN_TORCH_VERSION))
try:
    import torch
except ImportError as error:  # pragma: no cover - the tests run with torch installed
    raise ImportError(
        f"lstm_c.torch needs PyTorch >= {_NEEDED}, which is not installed; lstm_c never installs it. "
        f"For the CPU build (the default Linux wheel brings gigabytes of CUDA packages): {_CPU_INSTALL}"
    ) from error
if _version_tuple(torch.__version__) < MIN_TORCH_VERSION:  # pragma: no cover
    raise ImportError(
        f"lstm_c.torch needs PyTorch >= {_NEEDED}, found {torch.__version__}; upgrade it ({_CPU_INSTALL})"
    )

from torch.autograd.function import once_differentiable  # noqa: E402
from torch.nn.utils.rnn import PackedSequence  # noqa: E402

_NUMPY_DTYPE: dict[torch.dtype, np.dtype] = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}

State = tuple[torch.Tensor, torch.Tensor]


@overload
def _numpy(tensor: torch.Tensor) -> np.ndarray: ...
@overload
def _numpy(tensor: None) -> None: ...
@overload
def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None: ...


def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    """A NumPy view of a CPU tensor's memory (a contiguous copy first if it is not contiguous)."""
    if tensor is None:
        return None
    tensor = tensor.detach()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    return tensor.numpy()


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor on `array`'s memory (no copy)."""
    return torch.from_numpy(array)


# ------------------------------------------------------------------ the trace as saved tensors


class _Slot:
    """Where an array of a StackTrace was: an index into the tensors saved for backward."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _split(obj: Any, arrays: list[np.ndarray], seen: dict[int, int]) -> Any:
    """`obj` (a StackTrace, nested) with every array replaced by a `_Slot` into `arrays`."""
    if isinstance(obj, np.ndarray):
        if id(obj) not in seen:
            seen[id(obj)] = len(arrays)
            arrays.append(obj)
        return _Slot(seen[id(obj)])
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # a cache of the functional API
        return (type(obj), tuple(_split(getattr(obj, f.name), arrays, seen) for f in dataclasses.fields(obj)))
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
        return type(obj)(*(_split(item, arrays, seen) for item in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_split(item, arrays, seen) for item in obj)
    return obj


def _join(obj: Any, arrays: Sequence[np.ndarray]) -> Any:
    """The inverse of `_split`."""
    if isinstance(obj, _Slot):
        return arrays[obj.index]
    if (
        isinstance(obj, tuple)
        and len(obj) == 2
        and isinstance(obj[0], type)
        and dataclasses.is_dataclass(obj[0])
    ):
        return obj[0](*(_join(item, arrays) for item in obj[1]))
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_join(item, arrays) for item in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_join(item, arrays) for item in obj)
    return obj


# ------------------------------------------------------------------ the autograd Function


class _Spec(NamedTuple):
    """What one call of the layer stack needs besides its tensors."""

    names: list[ParamNames]
    param_order: list[str]  # the parameters as passed to the Function, in state_dict order
    num_directions: int
    batch_first: bool
    lengths: np.ndarray | None
    dropout_mask: Callable[[int, tuple[int, ...]], np.ndarray | None]
    num_threads: int | None
    checkpoint_every: int | None


def _stack_forward(
    spec: _Spec,
    x: torch.Tensor,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    params: Sequence[torch.Tensor],
    training: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, StackTrace | None]:
    """`lstm_c._stack.stack_forward` over the kernels, on the tensors' memory."""
    return stack_forward(
        functional,
        {name: _numpy(p) for name, p in zip(spec.param_order, params)},
        spec.names,
        spec.num_directions,
        _numpy(x),
        _numpy(h0),
        _numpy(c0),
        lengths=spec.lengths,
        batch_first=spec.batch_first,
        training=training,
        dropout_mask=spec.dropout_mask,
        num_threads=spec.num_threads,
        checkpoint_every=spec.checkpoint_every if training else None,
    )


class _LSTMStack(torch.autograd.Function):
    """The whole layer stack, forward and backward in the kernels."""

    @staticmethod
    def forward(
        ctx: Any,
        spec: _Spec,
        x: torch.Tensor,
        h0: torch.Tensor | None,
        c0: torch.Tensor | None,
        *params: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, h_n, c_n, trace = _stack_forward(spec, x, h0, c0, params, training=True)
        # The trace's arrays become saved tensors (views, not copies), so that autograd frees
        # them after backward as it frees its own, and keeps them with retain_graph=True.
        arrays: list[np.ndarray] = []
        ctx.structure = _split(trace, arrays, {})
        ctx.spec = spec
        ctx.has_state = (h0 is not None, c0 is not None)
        ctx.save_for_backward(x, h0, c0, *params, *(_tensor(a) for a in arrays))
        ctx.set_materialize_grads(False)
        return _tensor(y), _tensor(h_n), _tensor(c_n)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, dy: torch.Tensor | None, dh_n: torch.Tensor | None, dc_n: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        spec: _Spec = ctx.spec
        saved = ctx.saved_tensors  # checks that no input was changed in place since the forward
        arrays = [t.numpy() for t in saved[3 + len(spec.param_order) :]]
        trace: StackTrace = _join(ctx.structure, arrays)
        dx, dh0, dc0, grads = stack_backward(
            functional,
            spec.names,
            spec.num_directions,
            trace,
            _numpy(dy),
            _numpy(dh_n),
            _numpy(dc_n),
            num_threads=spec.num_threads,
        )
        has_h0, has_c0 = ctx.has_state
        return (
            None,
            _tensor(dx),
            _tensor(dh0) if has_h0 else None,
            _tensor(dc0) if has_c0 else None,
            *(_tensor(grads[name]) for name in spec.param_order),
        )


def _dropout_mask(p: float, dtype: torch.dtype, layer: int, shape: tuple[int, ...]) -> np.ndarray:
    """A scaled inverted-dropout mask (0 or 1/(1-p)) drawn from torch's default generator."""
    if p == 1:
        return np.zeros(shape, _NUMPY_DTYPE[dtype])
    return torch.empty(shape, dtype=dtype).bernoulli_(1 - p).div_(1 - p).numpy()


def _no_mask(layer: int, shape: tuple[int, ...]) -> None:
    return None


def _packed_layout(
    batch_sizes: torch.Tensor, sorted_indices: torch.Tensor | None
) -> tuple[torch.Tensor, np.ndarray, int, int]:
    """Where a PackedSequence's rows go in a padded (T, B, ·) batch in the original row order.

    Returns (positions, lengths, T, B): positions[r] = t * B + b of packed row r,
    lengths[b] the length of the original row b.
    """
    sizes = batch_sizes.numpy().astype(np.intp)
    steps, batch = len(sizes), int(sizes[0]) if len(sizes) else 0
    starts = np.cumsum(sizes) - sizes
    step = np.repeat(np.arange(steps), sizes)
    rank = np.arange(int(sizes.sum())) - np.repeat(starts, sizes)  # position in the sorted batch
    order = np.arange(batch) if sorted_indices is None else sorted_indices.numpy().astype(np.intp)
    lengths = np.empty(batch, np.intp)
    lengths[order] = np.bincount(rank, minlength=batch)
    return torch.from_numpy(step * batch + order[rank]), lengths, steps, batch


# ------------------------------------------------------------------ the module


@torch.compiler.disable
def _run_stack(
    spec: _Spec,
    x: torch.Tensor,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    params: list[torch.Tensor],
    needs_grad: bool,
    dropout: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer stack through the autograd Function, or, when no gradient is needed, directly
    (keeping no activations once it returns)."""
    if needs_grad:
        return _LSTMStack.apply(spec, x, h0, c0, *params)
    y, h_n, c_n, _ = _stack_forward(spec, x, h0, c0, params, training=dropout)
    return _tensor(y), _tensor(h_n), _tensor(c_n)


class LSTM(torch.nn.Module):
    """``torch.nn.LSTM`` computed by lstm_c's kernels on the CPU; optionally with peepholes.

    Same constructor, parameters, inputs and outputs as ``torch.nn.LSTM``
    (see its documentation); what differs is listed here.

    Parameters
    ----------
    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size
        As in ``torch.nn.LSTM``. Dropout masks come from torch's default generator
        (``torch.manual_seed`` repeats them).
    device : torch.device or str, optional
        Where the parameters are made, as in ``torch.nn.LSTM``; forward needs them on the CPU.
    dtype : torch.float32 or torch.float64, optional
        The parameters' dtype; None is torch's default dtype. Others are refused.
    peephole : bool
        Adds ``peephole_l{k}[_reverse]`` (3, H): rows (i, f, o); the i and f gates see
        c_{t-1}, the o gate sees c_t. ``torch.nn.LSTM`` has none.
    num_threads : int, optional
        Threads of each kernel call (also an attribute); None: ``lstm_c.get_num_threads()``,
        the CPUs this process may use. ``torch.set_num_threads`` does not change it.
    checkpoint_every : int, optional
        Keep the state only every k steps during training and recompute each segment in
        the backward pass: memory O((T/k + k)·B·H) per layer instead of O(T·B·H), for
        about one more forward pass (also an attribute; k ≈ √T is a good choice). None
        keeps every step. See ``lstm_c.lstm_forward``.

    Notes
    -----
    Parameters are initialised as ``torch.nn.LSTM``'s, uniform in ±1/sqrt(hidden_size)
    from torch's generator in ``state_dict`` order: after the same ``torch.manual_seed``
    both modules start with equal parameters. A ``PackedSequence`` runs as per-row
    lengths in its original row order (no sorting); h_n and c_n are in that order,
    as torch's. Under ``torch.no_grad()`` (or when nothing needs a gradient) no
    activation is kept.
    """

    # torch.nn.LSTM's constructor, as lstm_c.LSTM's is too (on purpose; see there).
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        peephole: bool = False,
        num_threads: int | None = None,
        checkpoint_every: int | None = None,
    ) -> None:
        super().__init__()
        config = check_layer_config(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, peephole, checkpoint_every,
        )  # fmt: skip
        (
            self.input_size, self.hidden_size, self.num_layers, self.bias, self.batch_first,
            self.dropout, self.bidirectional, self.proj_size, self.peephole, self.checkpoint_every,
        ) = config  # fmt: skip
        self.num_threads = check_num_threads(num_threads)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _NUMPY_DTYPE:
            raise TypeError(f"dtype must be torch.float32 or torch.float64 (lstm_c's kernels), got {dtype}")
        D = 2 if self.bidirectional else 1
        self._names = layer_param_names(
            self.num_layers, D, bias=self.bias, projection=self.proj_size > 0, peephole=self.peephole
        )
        shapes = param_shapes(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            D,
            bias=self.bias,
            proj_size=self.proj_size,
            peephole=self.peephole,
        )
        self._param_order = list(shapes)
        for name, shape in shapes.items():
            self.register_parameter(name, torch.nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        """D: 2 if bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """Draw every parameter uniformly from ±1/sqrt(hidden_size), as ``torch.nn.LSTM``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            torch.nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """Nothing to do (``torch.nn.LSTM``'s is for cuDNN); here so that calls to it keep working."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = dict(
            num_layers=1,
            bias=True,
            batch_first=False,
            dropout=0.0,
            bidirectional=False,
            proj_size=0,
            peephole=False,
        )
        for name, default in defaults.items():
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s

    # ---------------------------------------------------------------- checks

    def _parameters_dtype(self, params: list[torch.Tensor]) -> torch.dtype:
        dtypes = {p.dtype for p in params}
        devices = {p.device.type for p in params}
        if devices != {"cpu"}:
            raise RuntimeError(
                f"lstm_c.torch.LSTM computes on the CPU, but its parameters are on {sorted(devices)}: "
                f"move the module with .cpu() (use torch.nn.LSTM on other devices)"
            )
        if len(dtypes) != 1 or next(iter(dtypes)) not in _NUMPY_DTYPE:
            raise TypeError(
                f"lstm_c.torch.LSTM computes in torch.float32 or torch.float64, its parameters are "
                f"{sorted(map(str, dtypes))}: convert the module with .float() or .double()"
            )
        return next(iter(dtypes))

    @staticmethod
    def _check_tensor(name: str, value: Any, dtype: torch.dtype) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.device.type != "cpu":
            raise RuntimeError(
                f"lstm_c.torch.LSTM computes on the CPU, but {name} is on {value.device}: move it with .cpu()"
            )
        if value.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {value.dtype} but this LSTM's parameters are {dtype}: "
                f"lstm_c computes in torch.float32 or torch.float64, with inputs and parameters alike"
            )
        return value

    def _check_state(
        self, hx: Any, batch: int, unbatched: bool, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx must be a tuple (h_0, c_0) of two tensors or None, got {type(hx).__name__}")
        LD = self.num_layers * self.num_directions
        states = []
        for k, (value, features) in enumerate(
            zip(hx, (self.proj_size or self.hidden_size, self.hidden_size))
        ):
            name = ("h_0", "c_0")[k]
            value = self._check_tensor(name, value, dtype)
            shape = (LD, features) if unbatched else (LD, batch, features)
            if tuple(value.shape) != shape:
                where = "unbatched input takes 2-D states " if unbatched else ""
                raise ValueError(
                    f"{name} must have shape (num_layers*num_directions, {'' if unbatched else 'batch, '}"
                    f"{'proj_size or hidden_size' if k == 0 else 'hidden_size'}) = {shape} "
                    f"({where}as torch.nn.LSTM), got {tuple(value.shape)}"
                )
            states.append(value.unsqueeze(1) if unbatched else value)
        return states[0], states[1]

    # --------------------------------------------------------------- forward

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: State | None = None
    ) -> tuple[torch.Tensor | PackedSequence, State]:
        """Run the LSTM, as ``torch.nn.LSTM.forward``.

        Parameters
        ----------
        input : Tensor (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or PackedSequence
        hx : tuple (h_0, c_0), optional
            (L·D, B, H_out) and (L·D, B, H), 2-D for unbatched input; zeros when None.

        Returns
        -------
        output : Tensor (T, B, D·H_out), (B, T, D·H_out) or (T, D·H_out), or PackedSequence
        (h_n, c_n) : tuple of Tensor, shaped as hx
        """
        if torch.jit.is_tracing():
            raise RuntimeError(
                "lstm_c.torch.LSTM cannot be traced (torch.jit.trace, torch.onnx.export's tracer): the "
                "kernels run outside torch, so a trace would hold its outputs as constants. Load its "
                "state_dict into a torch.nn.LSTM to trace or export"
            )
        params = [getattr(self, name) for name in self._param_order]
        dtype = self._parameters_dtype(params)
        num_threads = check_num_threads(self.num_threads)
        lengths = None
        unbatched = False
        batch_first = self.batch_first
        if isinstance(input, PackedSequence):
            data = self._check_tensor("input.data", input.data, dtype)
            if data.ndim != 2 or data.shape[1] != self.input_size:
                raise ValueError(
                    f"a PackedSequence's data must be (sum of lengths, input_size={self.input_size}), "
                    f"got {tuple(data.shape)}"
                )
            positions, lengths, steps, batch = _packed_layout(input.batch_sizes, input.sorted_indices)
            x = data.new_zeros((steps * batch, self.input_size)).index_copy(0, positions, data)
            x = x.view(steps, batch, self.input_size)
            batch_first = False
        else:
            x = self._check_tensor("input", input, dtype)
            if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
                layout = "(batch, seq_len, input_size)" if batch_first else "(seq_len, batch, input_size)"
                raise ValueError(
                    f"input must be 3-D {layout} or 2-D (seq_len, input_size) unbatched with "
                    f"input_size={self.input_size}, got shape {tuple(x.shape)}"
                )
            unbatched = x.ndim == 2
            if unbatched:
                x, batch_first = x.unsqueeze(1), False
            batch = x.shape[0] if batch_first else x.shape[1]
        h0, c0 = self._check_state(hx, batch, unbatched, dtype)

        dropout = self.training and self.dropout > 0 and self.num_layers > 1
        mask: Callable[[int, tuple[int, ...]], np.ndarray | None] = _no_mask
        if dropout:
            p = self.dropout

            def mask(layer: int, shape: tuple[int, ...]) -> np.ndarray | None:
                return _dropout_mask(p, dtype, layer, shape)

        spec = _Spec(
            self._names,
            self._param_order,
            self.num_directions,
            batch_first,
            lengths,
            mask,
            num_threads,
            check_checkpoint_every(self.checkpoint_every),
        )
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, h0, c0, *params)
        )
        y, h_n, c_n = _run_stack(spec, x, h0, c0, params, needs_grad, dropout)

        if isinstance(input, PackedSequence):
            out = y.reshape(-1, y.shape[-1]).index_select(0, positions)
            return PackedSequence(out, input.batch_sizes, input.sorted_indices, input.unsorted_indices), (
                h_n,
                c_n,
            )
        if unbatched:
            return y.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return y, (h_n, c_n)
