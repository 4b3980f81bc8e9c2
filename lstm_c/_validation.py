"""Every argument check of the package, in one place.

The functional API (`lstm_c.functional`) and the NumPy reference
(`lstm_c.reference`) share `check_forward` and the backward checks, so both
accept and refuse exactly the same inputs; the layer (`lstm_c.LSTM`) and the
weight conversions (`lstm_c.interop`) use the same helpers. Every error names
the argument, what it got and what was expected. One exception type per kind
of mistake: a wrong type (or dtype) is a TypeError, a wrong value or shape a
ValueError.

Conversion rule, the same everywhere: an array with a float dtype must be
float32 or float64 and is never silently converted to the other; integer and
bool arrays and array-likes without a dtype (lists, scalars) are converted
to the dtype being computed in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FLOAT32, _FLOAT64 = SUPPORTED_DTYPES  # NumPy's own instances: arrays of these dtypes share them

# SciPy's BLAS takes 32-bit integers for sizes and leading dimensions.
BLAS_INT_MAX = 2**31 - 1

# More threads than this per call is a mistake, not a plan: every thread of a
# call waits at a barrier each time step, and an OpenMP runtime that cannot
# start the threads asked for ends the process (libgomp: "Thread creation failed").
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))


class ForwardArgs(NamedTuple):
    """Validated forward arguments; every array is C-contiguous in `dtype`."""

    x: np.ndarray  # (T, B, I), or (B, T, I) when batch_first
    w_ih: np.ndarray  # (4H, I)
    w_hh: np.ndarray  # (4H, P)
    bias: np.ndarray  # (4H,): b_ih + b_hh, zeros when both are None
    w_hr: np.ndarray | None  # (P, H) projection, or None (then P = H)
    peephole: np.ndarray | None  # (3, H), gates i, f, o, or None
    h0: np.ndarray  # (B, P)
    c0: np.ndarray  # (B, H)
    lengths: np.ndarray  # (B,) intp, each in [0, T]
    batch_first: bool
    steps: int  # T
    batch: int  # B
    input_size: int  # I
    hidden_size: int  # H
    output_size: int  # P: the projection's size, else H

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    @property
    def y_shape(self) -> tuple[int, int, int]:
        if self.batch_first:
            return (self.batch, self.steps, self.output_size)
        return (self.steps, self.batch, self.output_size)


def common_dtype(**arrays: Any) -> np.dtype:
    """The float dtype to compute in, from the arguments that carry a dtype.

    Arrays of float32 or float64 decide it and must agree; integer and bool
    arrays, and array-likes without a dtype (lists, scalars), follow it.
    Without any float array the result is float64.
    """
    # The common case first: every argument None or a float32 or float64 array, all of one dtype.
    found = None
    for value in arrays.values():
        if type(value) is np.ndarray and (value.dtype is _FLOAT32 or value.dtype is _FLOAT64):
            if found is None:
                found = value.dtype
            elif value.dtype is not found:
                break
        elif value is not None:
            break
    else:
        return _FLOAT64 if found is None else found
    floats: dict[str, np.dtype] = {}
    for name, value in arrays.items():
        if type(value) is np.ndarray and (value.dtype is _FLOAT32 or value.dtype is _FLOAT64):
            floats[name] = value.dtype  # the common case, without the checks below
            continue
        if value is None or not hasattr(value, "dtype"):
            continue
        try:
            dtype = np.dtype(value.dtype)
        except TypeError:  # a dtype NumPy does not know (a torch tensor's): convert to see
            dtype = as_array(name, value).dtype
        _check_real(name, dtype)
        if dtype.kind == "f":
            if dtype not in SUPPORTED_DTYPES:
                raise TypeError(
                    f"{name} has dtype {dtype}; lstm_c computes in float32 or float64, "
                    f"convert it with .astype(numpy.float32) or .astype(numpy.float64)"
                )
            floats[name] = dtype
    if len(set(floats.values())) > 1:
        listed = ", ".join(f"{name} is {dtype}" for name, dtype in floats.items())
        raise TypeError(f"mixed float dtypes ({listed}); convert them to one dtype")
    return next(iter(floats.values()), np.dtype(np.float64))


def _check_real(name: str, dtype: np.dtype) -> None:
    if dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


def as_array(name: str, value: Any) -> np.ndarray:
    """`np.asarray(value)`, with an error that names the argument when NumPy refuses it.

    Ragged nested lists, for instance, make NumPy raise a ValueError that does
    not say which argument it was.
    """
    try:
        return np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{name} could not be converted to an array: {error}") from error
    except (TypeError, RuntimeError) as error:
        raise TypeError(f"{name} could not be converted to an array: {error}") from error


def check_int(name: str, value: Any, minimum: int) -> int:
    """An int (Python's or NumPy's, not a bool) >= `minimum`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_probability(name: str, value: Any) -> float:
    """A real number in [0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def check_dtype(name: str, dtype: Any) -> np.dtype:
    """numpy.float32 or numpy.float64 (as a numpy.dtype), the dtypes lstm_c computes in."""
    expected = f"{name} must be numpy.float32 or numpy.float64"
    if dtype is None:  # numpy.dtype(None) would be float64
        raise TypeError(f"{expected}, got None")
    try:
        result = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{expected}, got {dtype!r}") from error
    if result not in SUPPORTED_DTYPES:
        raise TypeError(f"{expected}, got {result}")
    return result


def as_dtype_array(
    name: str, value: Any, dtype: np.dtype, *, owner: str = "", convert: bool = True
) -> np.ndarray:
    """`value` as an array of `dtype` by the conversion rule (see the module docstring).

    `owner` names what computes in `dtype` (e.g. "this LSTM") for the message
    when a float array of the other dtype is given. ``convert=False`` returns
    the array still in its own dtype, known to convert: sizes can then be
    checked before a zero-stride view of a huge shape is copied.
    """
    typed = hasattr(value, "dtype")  # else a list or a scalar: it takes the dtype computed in
    array = as_array(name, value)
    _check_real(name, array.dtype)
    if not typed:
        return array.astype(dtype, copy=False)
    if array.dtype.kind == "f" and array.dtype != dtype:
        where = owner or "the computation"
        raise TypeError(
            f"{name} has dtype {array.dtype} but {where} computes in {dtype}: convert it with "
            f".astype(numpy.{dtype})"
        )
    return array.astype(dtype, copy=False) if convert else array


def as_float_array_of_own_dtype(name: str, value: Any) -> np.ndarray:
    """`value` as a float32 or float64 array, keeping its dtype (torch tensors accepted)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    array = as_array(name, value)
    if array.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected float32 or float64 "
            f"(convert it with .astype(numpy.float32) or .astype(numpy.float64))"
        )
    return array


def same_dtype(arrays: Mapping[str, np.ndarray | None]) -> np.dtype:
    """The one dtype of the given arrays (None entries skipped); mixed dtypes are a TypeError."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} is {dtype}" for name, dtype in dtypes.items())
        raise TypeError(f"mixed float dtypes ({listed}); convert them to one dtype")
    return next(iter(dtypes.values()))


def check_ndim(name: str, array: np.ndarray, ndim: int, layout: str) -> None:
    """`array` must have `ndim` dimensions; `layout` names them for the message."""
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got {array.ndim}-D shape {array.shape}")


def check_shape(name: str, array: np.ndarray, shape: tuple[int, ...], layout: str) -> None:
    """`array` must have `shape`; `layout` names its axes for the message."""
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {layout} = {shape}, got {array.shape}")


class LayerConfig(NamedTuple):
    """The checked constructor arguments of a stacked LSTM (`lstm_c.LSTM`, `lstm_c.torch.LSTM`)."""

    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    proj_size: int
    peephole: bool
    checkpoint_every: int | None


def check_layer_config(
    input_size: Any,
    hidden_size: Any,
    num_layers: Any,
    bias: Any,
    batch_first: Any,
    dropout: Any,
    bidirectional: Any,
    proj_size: Any,
    peephole: Any,
    checkpoint_every: Any,
) -> LayerConfig:
    """torch.nn.LSTM's constructor arguments, plus peephole and checkpoint_every, checked.

    Dropout with one layer is allowed, as in torch.nn.LSTM, with a warning: it
    applies between layers only.
    """
    config = LayerConfig(
        check_int("input_size", input_size, 1),
        check_int("hidden_size", hidden_size, 1),
        check_int("num_layers", num_layers, 1),
        check_flag("bias", bias),
        check_flag("batch_first", batch_first),
        check_probability("dropout", dropout),
        check_flag("bidirectional", bidirectional),
        check_int("proj_size", proj_size, 0),
        check_flag("peephole", peephole),
        check_checkpoint_every(checkpoint_every),
    )
    if config.proj_size >= config.hidden_size:
        raise ValueError(
            f"proj_size must be smaller than hidden_size (as in torch.nn.LSTM), "
            f"got proj_size={config.proj_size} with hidden_size={config.hidden_size}"
        )
    if config.dropout > 0 and config.num_layers == 1:
        warnings.warn(
            f"dropout={config.dropout} has no effect with num_layers=1: dropout applies to the "
            f"outputs of every layer but the last, so it expects num_layers greater than 1",
            UserWarning,
            stacklevel=3,
        )
    return config


def check_flag(name: str, value: Any) -> bool:
    """True or False (also NumPy's bool and the ints 0 and 1); anything else is a TypeError.

    A string such as "False" is truthy: taking it as True would be silently wrong.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")


def as_float_array(name: str, value: Any, dtype: np.dtype, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """`value` as a C-contiguous array of `dtype`; its shape must equal `shape`.

    `layout` names the axes, e.g. "(batch, hidden_size)", for the message.
    Contiguous arrays of the right dtype are returned as they are, not copied.
    """
    if (
        type(value) is np.ndarray
        and value.dtype is dtype
        and value.shape == shape
        and value.flags.c_contiguous
    ):
        return value
    array = as_array(name, value)
    _check_real(name, array.dtype)
    check_ndim(name, array, len(shape), f"{layout} = {shape}")
    check_shape(name, array, shape, layout)
    return np.ascontiguousarray(array, dtype=dtype)


def check_forward(
    x: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    h0: Any,
    c0: Any,
    lengths: Any,
    batch_first: bool,
    w_hr: Any = None,
    peephole: Any = None,
) -> ForwardArgs:
    """Validate the forward arguments and lay them out for computing.

    Every size is checked, the 32-bit BLAS limits included, before any array
    is converted or allocated: a refused call touches no memory.
    """
    batch_first = check_flag("batch_first", batch_first)
    dtype = common_dtype(
        x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, h0=h0, c0=c0, w_hr=w_hr, peephole=peephole
    )
    layout = "(batch, seq_len, input_size)" if batch_first else "(seq_len, batch, input_size)"

    x_arr = as_array("x", x)
    _check_real("x", x_arr.dtype)
    if x_arr.ndim != 3:
        raise ValueError(f"x must be 3-D {layout}, got {x_arr.ndim}-D shape {x_arr.shape}")
    if batch_first:
        batch, steps, input_size = x_arr.shape
    else:
        steps, batch, input_size = x_arr.shape

    w_ih_arr = as_array("w_ih", w_ih)
    _check_real("w_ih", w_ih_arr.dtype)
    if w_ih_arr.ndim != 2:
        raise ValueError(
            f"w_ih must be 2-D (4*hidden_size, input_size), got {w_ih_arr.ndim}-D shape {w_ih_arr.shape}"
        )
    rows, cols = w_ih_arr.shape
    if rows == 0 or rows % 4:
        raise ValueError(
            f"w_ih must have 4*hidden_size rows (gates i, f, g, o) with hidden_size >= 1, "
            f"got shape {w_ih_arr.shape}"
        )
    if cols != input_size:
        raise ValueError(
            f"w_ih has shape {w_ih_arr.shape}: its {cols} columns must equal x's input_size "
            f"{input_size} (x has shape {x_arr.shape})"
        )
    hidden_size = rows // 4
    four_h = 4 * hidden_size

    w_hr_arr = None
    output_size = hidden_size
    if w_hr is not None:
        w_hr_arr = as_array("w_hr", w_hr)
        _check_real("w_hr", w_hr_arr.dtype)
        if w_hr_arr.ndim != 2 or w_hr_arr.shape[0] == 0 or w_hr_arr.shape[1] != hidden_size:
            raise ValueError(
                f"w_hr must have shape (proj_size, hidden_size) = (P, {hidden_size}) with P >= 1, "
                f"got shape {w_hr_arr.shape}"
            )
        output_size = w_hr_arr.shape[0]
    out_name = "proj_size" if w_hr is not None else "hidden_size"
    # Before any conversion: x or a weight may be a zero-stride view of a huge shape.
    if max(steps * batch, four_h, input_size, output_size) > BLAS_INT_MAX:
        check_blas_sizes(
            {
                "seq_len*batch": steps * batch,
                "4*hidden_size": four_h,
                "input_size": input_size,
                out_name: output_size,
                "hidden_size": hidden_size,
            }
        )

    x_arr = np.ascontiguousarray(x_arr, dtype=dtype)
    w_ih_arr = np.ascontiguousarray(w_ih_arr, dtype=dtype)
    if w_hr_arr is not None:
        w_hr_arr = np.ascontiguousarray(w_hr_arr, dtype=dtype)
    w_hh_arr = as_float_array("w_hh", w_hh, dtype, (four_h, output_size), f"(4*hidden_size, {out_name})")
    peephole_arr = (
        None
        if peephole is None
        else as_float_array("peephole", peephole, dtype, (3, hidden_size), "(3, hidden_size)")
    )

    biases = [
        as_float_array(name, value, dtype, (four_h,), "(4*hidden_size,)")
        for name, value in (("b_ih", b_ih), ("b_hh", b_hh))
        if value is not None
    ]
    # A new array in every case (b_ih + b_hh, a copy, or zeros): never the caller's.
    if len(biases) == 2:
        bias = np.add(biases[0], biases[1])
    else:
        bias = biases[0].copy() if biases else np.zeros(four_h, dtype=dtype)

    h0_arr = (
        np.zeros((batch, output_size), dtype)
        if h0 is None
        else as_float_array("h0", h0, dtype, (batch, output_size), f"(batch, {out_name})")
    )
    c0_arr = (
        np.zeros((batch, hidden_size), dtype)
        if c0 is None
        else as_float_array("c0", c0, dtype, (batch, hidden_size), "(batch, hidden_size)")
    )

    lengths_arr = check_lengths(lengths, steps, batch)
    return ForwardArgs(
        x_arr,
        w_ih_arr,
        w_hh_arr,
        bias,
        w_hr_arr,
        peephole_arr,
        h0_arr,
        c0_arr,
        lengths_arr,
        batch_first,
        steps,
        batch,
        input_size,
        hidden_size,
        output_size,
    )


def check_lengths(lengths: Any, steps: int, batch: int) -> np.ndarray:
    """`lengths` as a new intp array of `batch` values in [0, steps] (all `steps` if None).

    Always a copy: the kernels index memory with these values, so a caller who
    changes its own array between forward and backward must not change them.
    """
    if lengths is None:
        full = np.empty(batch, np.intp)
        full.fill(steps)  # np.full takes twice as long, as much as a small layer's step
        return full
    array = as_array("lengths", lengths)
    if array.size == 0 and array.dtype.kind == "f":
        array = array.astype(np.intp)  # an empty list: NumPy gives it its default dtype, float64
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"lengths must have shape (batch,) = ({batch},), got {array.shape}")
    if batch and (array.min() < 0 or array.max() > steps):
        raise ValueError(
            f"lengths must lie in [0, seq_len] = [0, {steps}], got values from {array.min()} to {array.max()}"
        )
    return np.array(array, dtype=np.intp, order="C", copy=True)


def check_blas_sizes(sizes: Mapping[str, int]) -> None:
    """Refuse sizes that SciPy's 32-bit BLAS integers cannot address.

    `sizes` maps a name to every matrix dimension and leading dimension the
    kernels pass to BLAS: seq_len*batch (the rows of the large GEMMs, and their
    inner dimension for the weight gradients), 4*hidden_size, input_size,
    hidden_size and the output size (proj_size or hidden_size).
    """
    for name, size in sizes.items():
        if size > BLAS_INT_MAX:
            hint = (
                "split the batch or the sequence into several calls"
                if name == "seq_len*batch"
                else "use a smaller size"
            )
            raise ValueError(
                f"{name} = {size} exceeds {BLAS_INT_MAX} (2**31 - 1), the largest matrix dimension "
                f"SciPy's 32-bit BLAS can address; {hint}"
            )


def check_output_grad(
    name: str, value: Any, dtype: np.dtype, shape: tuple[int, ...], layout: str
) -> np.ndarray | None:
    """A gradient of an output (dy, dh_n, dc_n): None stays None (meaning zeros)."""
    if value is None:
        return None
    common_dtype(**{name: value, "the forward inputs": np.empty(0, dtype)})
    return as_float_array(name, value, dtype, shape, layout)


def check_checkpoint_every(checkpoint_every: Any) -> int | None:
    """None (keep every step's activations) or an int >= 1 (a checkpoint every so many steps)."""
    if checkpoint_every is None:
        return None
    if isinstance(checkpoint_every, (bool, np.bool_)) or not isinstance(checkpoint_every, (int, np.integer)):
        raise TypeError(
            f"checkpoint_every must be None or an int >= 1 (about sqrt(seq_len), e.g. "
            f"int(math.sqrt(T)) or 1), got {checkpoint_every!r} of type {type(checkpoint_every).__name__}"
        )
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be None or an int >= 1, got {checkpoint_every}")
    return int(checkpoint_every)


def segment_count(lengths: np.ndarray, every: int) -> int:
    """Segments of `every` steps that cover the longest row (0 when no row has a step)."""
    return -(-int(lengths.max(initial=0)) // every)


def check_cache_checkpoints(
    producer: str, args: ForwardArgs, reverse: Any, every: Any, h: Any, c: Any
) -> None:
    """The checkpoints of a `CheckpointCache` match its forward call: (S, B, P) and (S, B, H)
    arrays of its dtype, S the number of segments of `every` steps."""
    check_flag("cache.reverse", reverse)
    if isinstance(every, (bool, np.bool_)) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"cache.every must be the int >= 1 {producer} was given, got {every!r}")
    count = segment_count(args.lengths, int(every))
    dtype = args.bias.dtype
    for name, array, features in (("h", h, args.output_size), ("c", c, args.hidden_size)):
        shape = (count, args.batch, features)
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
            raise ValueError(
                f"cache.{name} must be the {shape} {dtype} array of checkpoints {producer} made, "
                f"got {_described(array)}; use the cache as returned, unchanged"
            )


def check_num_threads(num_threads: Any) -> int | None:
    """None or an int in [1, MAX_THREADS]."""
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if num_threads > MAX_THREADS:
        raise ValueError(
            f"num_threads must be <= {MAX_THREADS} (4 per CPU of this machine, at least 64), "
            f"got {num_threads}"
        )
    return int(num_threads)


def check_backward_grads(
    dy: Any, dh_n: Any, dc_n: Any, forward: ForwardArgs
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """dy, dh_n and dc_n checked against the forward call they belong to."""
    out_name = "proj_size" if forward.w_hr is not None else "hidden_size"
    y_layout = f"(batch, seq_len, {out_name})" if forward.batch_first else f"(seq_len, batch, {out_name})"
    dtype, batch = forward.dtype, forward.batch
    return (
        check_output_grad("dy", dy, dtype, forward.y_shape, y_layout),
        check_output_grad("dh_n", dh_n, dtype, (batch, forward.output_size), f"(batch, {out_name})"),
        check_output_grad("dc_n", dc_n, dtype, (batch, forward.hidden_size), "(batch, hidden_size)"),
    )


def check_cache(cache: Any, cache_type: type | tuple[type, ...], producer: str) -> None:
    """`cache` must be what `producer` returned in training mode, and still match it.

    `cache_type` is the type (or a tuple of the types) `producer` returns.

    A cache references the forward's inputs (x and the weights), not copies. An
    input resized, reshaped or re-typed in place since (``a.resize(...)``,
    ``a.shape = ...``, ``a.dtype = ...``) would make the kernels read the wrong
    memory, so it is refused here, before any kernel runs.
    """
    if cache is None:
        raise ValueError(
            f"cache is None: {producer} returns a cache only with training=True; "
            f"call it with training=True before the backward pass"
        )
    if not isinstance(cache, cache_type):
        types = cache_type if isinstance(cache_type, tuple) else (cache_type,)
        raise TypeError(
            f"cache must be the {' or '.join(t.__name__ for t in types)} returned by {producer}, "
            f"got {type(cache).__name__}"
        )
    _check_cached_inputs(getattr(cache, "args", None), producer)


def _check_cached_inputs(args: Any, producer: str) -> None:
    """The arrays a cache references have the shapes, dtype and layout the forward saw."""
    if not isinstance(args, ForwardArgs):
        raise TypeError(f"cache.args must be the ForwardArgs of {producer}, got {type(args).__name__}")
    T, B, I, H, P = args.steps, args.batch, args.input_size, args.hidden_size, args.output_size
    out_name = "proj_size" if args.w_hr is not None else "hidden_size"
    expected: dict[str, tuple[Any, tuple[int, ...], str]] = {
        "x": (
            args.x,
            (B, T, I) if args.batch_first else (T, B, I),
            "(batch, seq_len, input_size)" if args.batch_first else "(seq_len, batch, input_size)",
        ),
        "w_ih": (args.w_ih, (4 * H, I), "(4*hidden_size, input_size)"),
        "w_hh": (args.w_hh, (4 * H, P), f"(4*hidden_size, {out_name})"),
        "w_hr": (args.w_hr, (P, H), "(proj_size, hidden_size)"),
        "peephole": (args.peephole, (3, H), "(3, hidden_size)"),
    }
    dtype = args.bias.dtype  # the one array of the call made here, never the caller's
    for name, (array, shape, layout) in expected.items():
        if array is None:
            continue
        if (
            array.shape != shape
            or array.dtype != dtype
            or array.dtype not in SUPPORTED_DTYPES
            or not array.flags.c_contiguous
        ):
            raise ValueError(
                f"cache no longer matches the forward call that made it: its {name} now has shape "
                f"{array.shape} and dtype {array.dtype}, where the forward had {layout} = {shape} "
                f"in {dtype}; an input was resized, reshaped or re-typed in place after "
                f"{producer} (inputs must not change before the backward pass): run the forward again"
            )
    lengths = args.lengths
    if (
        not isinstance(lengths, np.ndarray)
        or lengths.shape != (B,)
        or lengths.dtype != np.intp
        or not lengths.flags.c_contiguous
        or (B and (lengths.min() < 0 or lengths.max() > T))
    ):
        raise ValueError(
            f"cache no longer matches the forward call that made it: its lengths must be ({B},) "
            f"intp values in [0, {T}]; they were changed after {producer}: run the forward again"
        )
    if not isinstance(args.bias, np.ndarray) or args.bias.shape != (4 * H,):
        raise ValueError(
            f"cache no longer matches the forward call that made it: its bias must be (4*hidden_size,) "
            f"= ({4 * H},); run the forward again"
        )


def check_cache_arrays(
    producer: str, args: ForwardArgs, reverse: Any, arrays: Mapping[str, tuple[Any, int, bool]]
) -> None:
    """The activations a cache holds match its forward call, so the kernels stay in bounds.

    `arrays` maps a name to (array, columns, required): each must be a
    C-contiguous (seq_len*batch, columns) array of the call's dtype, or None
    when not required. A cache assembled by hand, or whose arrays were
    replaced or resized, is refused with a ValueError rather than read.
    """
    check_flag("cache.reverse", reverse)
    rows = args.steps * args.batch
    dtype = args.bias.dtype
    for name, (array, columns, required) in arrays.items():
        if array is None and not required:
            continue
        if (
            not isinstance(array, np.ndarray)
            or array.shape != (rows, columns)
            or array.dtype != dtype
            or not array.flags.c_contiguous
        ):
            raise ValueError(
                f"cache.{name} must be the C-contiguous (seq_len*batch, {columns}) = ({rows}, {columns}) "
                f"{dtype} array {producer} made, got {_described(array)}; use the cache as returned, "
                f"unchanged"
            )


def _described(array: Any) -> str:
    """An array's shape and dtype, or the type of what is not an array, for a message."""
    if isinstance(array, np.ndarray):
        return f"shape {array.shape} and dtype {array.dtype}"
    return type(array).__name__
