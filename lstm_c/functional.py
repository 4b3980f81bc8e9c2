"""The functional API: one LSTM layer and direction, forward and backward, in the compiled kernels."""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import numpy as np

from lstm_c import _lstm, _scratch, _threads
from lstm_c._types import CheckpointCache, LSTMCache, LSTMGrads
from lstm_c._validation import (
    ForwardArgs,
    check_backward_grads,
    check_cache,
    check_cache_arrays,
    check_cache_checkpoints,
    check_checkpoint_every,
    check_flag,
    check_forward,
    check_num_threads,
)


def lstm_forward(
    x: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any = None,
    b_hh: Any = None,
    h0: Any = None,
    c0: Any = None,
    *,
    w_hr: Any = None,
    peephole: Any = None,
    lengths: Any = None,
    reverse: bool = False,
    batch_first: bool = False,
    training: bool = True,
    num_threads: int | None = None,
    checkpoint_every: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, LSTMCache | CheckpointCache | None]:
    """Run an LSTM layer (one direction) over a batch of sequences.

    Gates follow PyTorch's order i, f, g, o::

        gates = x_t W_ih^T + h_{t-1} W_hh^T + b_ih + b_hh
        c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)

    With a projection (LSTMP, PyTorch's ``proj_size``) h_t = (o * tanh(c_t)) W_hr^T
    has P features. With peepholes i and f also see p_i * c_{t-1} and p_f * c_{t-1},
    and o sees p_o * c_t (the ONNX/oneDNN definition).

    Parameters
    ----------
    x : array_like, (T, B, I), or (B, T, I) when `batch_first`
        Input sequences. float32 or float64 decides the dtype of everything.
    w_ih : array_like, (4H, I)
        Input-to-hidden weights, gates stacked i, f, g, o.
    w_hh : array_like, (4H, P)
        Hidden-to-hidden weights; P = H without a projection.
    b_ih, b_hh : array_like, (4H,), optional
        Biases; None means zero.
    h0 : array_like, (B, P), optional
        Initial hidden state; None means zeros.
    c0 : array_like, (B, H), optional
        Initial cell state; None means zeros.
    w_hr : array_like, (P, H), optional
        Projection of the hidden state (LSTMP); None means none.
    peephole : array_like, (3, H), optional
        Peephole weights for gates i, f, o; None means none.
    lengths : array_like of int, (B,), optional
        Valid steps per row, each in [0, T]. Row b runs over t < lengths[b]
        and its state then freezes; y is 0 past it. None means all T.
    reverse : bool
        Run each row from its last valid step back to t = 0.
    batch_first : bool
        x and y are (B, T, ·) instead of (T, B, ·).
    training : bool
        Keep what the backward pass needs; False returns ``cache=None``.
    num_threads : int, optional
        Threads for this call; None uses OpenMP's default (OMP_NUM_THREADS,
        or a threadpoolctl limit on "openmp"). Each thread calls BLAS on its
        own tile, single-threaded; calls too small to split run on one thread.
    checkpoint_every : int, optional
        Bounded memory for long sequences: run the sequence in segments of
        this many steps and keep only the state entering each segment; the
        backward pass recomputes each segment's activations from it. Extra
        memory O((T/k + k)·B·H) instead of O(T·B·H), for about one more
        forward pass of compute; k ≈ sqrt(T) (``int(math.sqrt(T)) or 1``)
        minimises it. Also bounds an inference call's scratch to k steps.
        None (the default) keeps every step's activations.

    Returns
    -------
    y : ndarray, x's layout with P features: (T, B, P) or (B, T, P)
    h_n : ndarray, (B, P)
    c_n : ndarray, (B, H)
        The state after each row's last valid step (h0, c0 for length 0).
    cache : LSTMCache, CheckpointCache or None
        Input of `lstm_backward`; None when ``training=False``; a
        CheckpointCache with `checkpoint_every`.
    """
    args = check_forward(
        x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, batch_first, w_hr=w_hr, peephole=peephole
    )
    num_threads = check_num_threads(num_threads)
    reverse = check_flag("reverse", reverse)
    training = check_flag("training", training)
    every = check_checkpoint_every(checkpoint_every)
    if every is not None:
        from lstm_c import _checkpoint  # it calls this module

        return _checkpoint.forward(args, reverse, every, training, num_threads)
    return _forward(args, reverse, training, num_threads)


class PackedWeights(NamedTuple):
    """W_hh and W_ih of one layer and direction packed once (`pack_weights`), None for a
    weight whose products go to BLAS."""

    panels: np.ndarray | None
    ih_panels: np.ndarray | None


def pack_weights(w_ih: np.ndarray, w_hh: np.ndarray) -> PackedWeights:
    """W_ih (4H, I) and W_hh (4H, P), C-contiguous float arrays, packed as the forward
    kernel packs them at every call; `_forward` reads them from there when given them.

    W_ih is packed at any size (with at least one input): packed once, its panels beat
    BLAS's GEMM, which packs W_ih anew at every call, even where W_ih is too large to be
    packed at every call (see _INPUT_PANELS_MAX_BYTES).
    """
    H, I = w_ih.shape[0] // 4, w_ih.shape[1]
    P, dtype = w_hh.shape[1], w_hh.dtype
    width = _lstm.panel_width(dtype.itemsize)
    if width == 0:
        return PackedWeights(None, None)
    panels = _scratch.empty(_packed(H, P, width), dtype)
    _lstm.pack_weights(w_hh, panels)
    ih_panels = None
    if H and I:
        ih_panels = _scratch.empty(_packed(H, I, width), dtype)
        _lstm.pack_weights(w_ih, ih_panels)
    return PackedWeights(panels, ih_panels)


def _forward(
    args: ForwardArgs,
    reverse: bool,
    training: bool,
    num_threads: int | None,
    packed: PackedWeights | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, LSTMCache | None]:
    """lstm_forward of checked arguments; W_hh and W_ih read from `packed` (pack_weights of
    args.w_ih and args.w_hh) where the call uses panels, instead of packed at this call."""
    y, h, c, outputs = ForwardCall(args, reverse, training, num_threads, packed)(args.x, args.h0, args.c0)
    if not training:
        return y, h, c, None
    cache = LSTMCache(
        args, reverse, outputs["gates"], outputs["c_prev"], outputs["h_prev"], outputs.get("m_all")
    )
    return y, h, c, cache


class ForwardCall:
    """A forward call of checked arguments, made ready for any number of calls with other
    inputs of the same shape: everything is decided once but the new state and outputs.

    Parameters
    ----------
    args, reverse, training, num_threads, packed
        As `_forward` takes them; args.x, args.h0 and args.c0 give only their shapes.
    """

    def __init__(
        self,
        args: ForwardArgs,
        reverse: bool,
        training: bool,
        num_threads: int | None,
        packed: PackedWeights | None = None,
    ) -> None:
        self.rows = args.steps * args.batch
        self.dtype = args.dtype
        self.phase = "training" if training else "inference"
        self.x_rows = (self.rows, args.input_size)
        self.y_rows = (self.rows, args.output_size)
        self.y_shape = args.y_shape
        output_shapes, self.scratch_shapes = _workspace(args, self.phase)
        # The outputs a call allocates; the kernel gets None for the others.
        self.output_shapes: _scratch.Shapes = {
            name: shape for name, shape in output_shapes.items() if shape is not None
        }
        given: dict[str, np.ndarray | None] = {}
        if packed is not None:
            # The kernel packs nothing: W_hh comes packed where the call would pack it (BLAS
            # for the largest steps), W_ih wherever it was packed.
            given = {
                "panels": None if self.scratch_shapes["panels"] is None else packed.panels,
                "ih_panels": packed.ih_panels if self.rows else None,
            }
            self.scratch_shapes = {k: v for k, v in self.scratch_shapes.items() if k not in _PANELS}
        panels = {
            name: self.scratch_shapes.get(name) is not None or given.get(name) is not None for name in _PANELS
        }
        self.blas = _threads.single_threaded_blas if _calls_blas(args, **panels) else _NO_BLAS
        threads = (
            _threads.plan(num_threads, args.batch, args.hidden_size, args.output_size) if self.rows else 1
        )
        self.kernel_args: dict[str, Any] = {
            "w_ih": args.w_ih,
            "w_hh": args.w_hh,
            "bias": args.bias,
            "w_hr": args.w_hr,
            "peephole": args.peephole,
            "lengths": args.lengths,
            "reverse": reverse,
            "batch_first": args.batch_first,
            "steps": args.steps,
            "num_threads": threads,
            "split_batch": _split_batch(threads, args.batch, args.w_hh, False),
            "packed": packed is not None,
            **given,
            **{name: None for name in output_shapes if name not in self.output_shapes},
        }

        # Made by `prepare`, for repeated inference calls.
        self.plan: _lstm.ForwardPlan | None = None

    def prepare(self) -> None:
        """Take the kernel's arguments but the input, state and output once, with scratch
        of this call's own (an inference call that runs a position): see `run_prepared`."""
        assert self.phase == "inference" and self.rows
        scratch = _scratch.allocate(self.dtype, self.scratch_shapes)
        self.plan = _lstm.ForwardPlan(**self.kernel_args, **scratch)

    def run_prepared(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(y, h_n, c_n) as from `__call__`, through the prepared kernel call (`prepare`):
        about 5 us less per call; None, having done nothing, while another thread's call
        runs on it."""
        assert self.plan is not None
        h = h0.copy()
        c = c0.copy()
        y = _scratch.output(self.y_rows, self.dtype)
        with self.blas:
            if not self.plan.run(x.reshape(self.x_rows), h, c, y):
                return None
        return y.reshape(self.y_shape), h, c

    def __call__(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """(y, h_n, c_n, outputs) for x, h0 and c0 of the prepared shapes, C-contiguous in the
        prepared dtype (checked by the kernel); `outputs` holds every output the kernel wrote."""
        h = h0.copy()
        c = c0.copy()
        outputs = _outputs(self.output_shapes, self.dtype)
        if self.rows:  # with T·B = 0 there is no position to run: the state stays h0, c0
            scratch = _scratch.take(self.phase, self.dtype, self.scratch_shapes)
            with self.blas:
                _lstm.forward(
                    x=x.reshape(self.x_rows), h=h, c=c, **self.kernel_args, **outputs, **scratch.arrays
                )
            _scratch.give(scratch)
        return outputs["y"].reshape(self.y_shape), h, c, outputs


def _outputs(shapes: _scratch.Shapes, dtype: np.dtype) -> dict[str, Any]:
    """New arrays for a kernel call's outputs of `shapes` (None where unused)."""
    return {name: None if shape is None else _scratch.output(shape, dtype) for name, shape in shapes.items()}


# The recurrent product reads W_hh from panels packed once per call (measured
# faster than BLAS's GEMM, which repacks W_hh every step, at every batch size up
# to 256 and H up to 1024; at B = 1 also faster than reading W_hh as stored, four
# of its rows at a time: 1.0-1.5x from H = 20 to 512 on 2 cores, Zen 4, T = 50).
# Only a step of more flops than this goes to BLAS, whose GEMM runs in pieces
# between which the kernel can answer Ctrl-C.
_PANEL_MAX_STEP_FLOPS = 4e9


# Holding SciPy's BLAS at one thread costs about a microsecond per call: a forward
# call whose products all run on the kernels' own loops skips it.
_NO_BLAS = contextlib.nullcontext()


_PANELS = ("panels", "ih_panels")  # the kernels' arguments for W_hh and W_ih in panels


def _calls_blas(args: ForwardArgs, panels: bool, ih_panels: bool) -> bool:
    """Whether a forward call's kernel calls BLAS: for the input projection without W_ih
    in panels, the recurrent product without W_hh in panels, and a projection's product."""
    return args.w_hr is not None or not ih_panels or not panels


# The threads of a call share its time steps by hidden units (each its units of
# every row, all meeting at every step) or by rows of the batch (each runs every
# unit of the blocks of rows it takes through all the steps: it never waits for the
# others, but every thread reads all of W_hh at every step). Measured on 2 cores
# (Zen 4), by rows against by units: 1.1-1.7x faster from 4 rows per thread up to a
# W_hh of 4 MiB (H = 512 in float32), and 0.97x at H = 1024 (16 MiB, which then
# streams from L3 on both cores). With fewer rows, by rows wins where a step is
# little work (_threads.is_barrier_bound_step) and, in the backward pass, up to a W_hh
# of 512 KiB. Measured in training on 2 cores of an Intel Xeon with AVX-512 (KVM
# guest), T = 50, both passes by rows: 1.14-1.3x at H = 64-128, B = 2-6 in float32
# and 1.07-1.26x in float64 (H = 128 is 512 KiB); in float32 at H = 256 (1 MiB)
# 1.06x at B = 4 but 0.96-0.97x at B = 2 and 6; 0.7x at H = 512, B = 4. A forward pass shares its steps as inference does, training or
# not, so that the two give the same bits (see guarantees.rst; by rows and by units
# differ in the last bits when H is not a multiple of 16): with only the backward
# pass by rows, training took 1.09-1.12x less time at H = 96-128, B = 2-6 and 1.29x
# at H = 64, B = 4.
_SPLIT_BATCH_MIN_ROWS = 4
_SPLIT_BATCH_MAX_WEIGHT_BYTES = 4 << 20
_SPLIT_BATCH_BACKWARD_MAX_WEIGHT_BYTES = 512 << 10


def _split_batch(threads: int, batch: int, w_hh: np.ndarray, backward: bool) -> bool:
    """Whether a call on `threads` threads shares its time steps by rows of the batch
    (a backward pass when `backward`): from _SPLIT_BATCH_MIN_ROWS rows per thread, from
    one row per thread when a step is too little work to share by units (see above),
    and always when a step is too small to share by hidden units at all
    (`_threads.plan` gives such a step threads for its rows only)."""
    if threads <= 1 or w_hh.nbytes > _SPLIT_BATCH_MAX_WEIGHT_BYTES:
        return False
    hidden, output = w_hh.shape[0] // 4, w_hh.shape[1]
    if batch >= _SPLIT_BATCH_MIN_ROWS * threads or _threads.is_small_step(batch, hidden, output):
        return True
    if batch < threads:
        return False
    if backward and w_hh.nbytes <= _SPLIT_BATCH_BACKWARD_MAX_WEIGHT_BYTES:
        return True
    return _threads.is_barrier_bound_step(batch, hidden, output)


def _workspace(args: ForwardArgs, phase: str) -> tuple[_scratch.Shapes, _scratch.Shapes]:
    """Every array a kernel call writes, keyed by the kernel's argument names: the shapes
    of its outputs (new arrays at each call: see _outputs) and of its scratch.

    `phase` is "inference" or "training" (a forward call: outputs, the
    training cache, scratch) or "backward" (the gradients and scratch). The
    kernel's inputs come from `args`; its states (h, c, dc0) from the caller.
    Unused arrays are None, as the kernels expect (the panels too when no position
    runs).
    """
    dtype, B, I, H, P = args.dtype, args.batch, args.input_size, args.hidden_size, args.output_size
    rows, G = args.steps * B, 4 * H
    projected = args.w_hr is not None

    def shape_if(shape: tuple[int, ...], used: bool = True) -> tuple[int, ...] | None:
        return shape if used else None

    if phase == "backward":
        outputs = {
            "dx": shape_if((rows, I)),
            "dh0": shape_if((B, P)),
            "dw_ih": shape_if((G, I)),
            "dw_hh": shape_if((G, P)),
            "db": shape_if((G,)),
            "dw_hr": shape_if((P, H), projected),
            "dpeephole": shape_if((3, H), args.peephole is not None),
        }
        return outputs, {
            "dgates": (rows, G),
            "dgates_step": (2 * B, G),
            "dh_all": shape_if((rows, P), projected),
            "dh_step": shape_if((B, P), projected),
            "dm_step": shape_if((B, H), projected),
            "panels": _panels(B, P, H, dtype) if rows else None,
            "ih_panels": _input_panels(I, H, dtype) if rows else None,
        }
    training = phase == "training"
    outputs = {
        "y": shape_if((rows, P)),
        "h_prev": shape_if((rows, P), training),
        "c_prev": shape_if((rows, H), training),
        "m_all": shape_if((rows, H), training and projected),
    }
    # Training keeps every step's gates; inference projects the input in chunks of steps,
    # so that its scratch does not grow with T.
    if training:
        outputs["gates"] = shape_if((rows, G))
        chunked_gates = {}
    else:
        chunk = _lstm.inference_chunk_steps(args.steps, B, H, I, dtype.itemsize)
        chunked_gates = {"gates": (chunk * B, G)}
    return outputs, {
        **chunked_gates,
        "rec": (B, G),
        "h_next": shape_if((B, P), not projected),
        "m_step": shape_if((B, H), projected),
        "proj": shape_if((B, P), projected),
        "panels": _panels(B, H, P, dtype) if rows else None,
        "ih_panels": _input_panels(H, I, dtype) if rows else None,
    }


def _panels(batch: int, blocked: int, other: int, dtype: np.dtype) -> tuple[int] | None:
    """The shape of the scratch for a packed-panel recurrent product, or None to use BLAS.

    The panels cover 4 * ceil(blocked / W) * other values of W_hh (W values
    per panel row): forward packs blocks of hidden units (blocked = H,
    other = P), backward blocks of its columns (blocked = P, other = H).
    """
    width = _lstm.panel_width(dtype.itemsize)
    if width == 0 or 8 * batch * blocked * other > _PANEL_MAX_STEP_FLOPS:
        return None
    return _packed(blocked, other, width)


# The input projection x W_ih^T and the input gradient dgates W_ih over all
# positions read W_ih from panels too (packed once per call, each thread its
# part) when W_ih takes at most this many bytes; a larger W_ih goes to BLAS's
# GEMM, which packs it a cache-sized block at a time. Measured on 2 cores (Zen
# 4, 32 MiB L3): panels 2-12% faster up to H = I = 256, even at H = 512 (4
# MiB), 10-20% slower at H = 1024 (16 MiB), whose packing at every call then
# costs more than it saves. Packed once (pack_weights), W_ih's panels win at
# every size: at H = 1024, T = 50, 1.18x (B = 1) and 1.07x (B = 4) on 2 threads.
_INPUT_PANELS_MAX_BYTES = 4 << 20


def _input_panels(blocked: int, other: int, dtype: np.dtype) -> tuple[int] | None:
    """The shape of the scratch for W_ih in panels (forward: blocked = H, other = I;
    backward: blocked = I, other = H), or None to use BLAS."""
    width = _lstm.panel_width(dtype.itemsize)
    size = 4 * blocked * other * dtype.itemsize
    if width == 0 or size == 0 or size > _INPUT_PANELS_MAX_BYTES:  # no input: BLAS's empty product
        return None
    return _packed(blocked, other, width)


def _packed(blocked: int, other: int, width: int) -> tuple[int]:
    """The shape of a (4·blocked, other) weight packed in panels of `width` values (its
    blocked axis rounded up to whole panels per gate), as the kernels check it."""
    return (4 * -(-blocked // width) * other * width,)


def _finite_padding(args: ForwardArgs) -> np.ndarray:
    """x, or a copy with its padding zeroed when the padding holds NaN or inf.

    The dW_ih GEMM runs over all positions with zero gate gradients past each
    row's length; 0 * NaN would still poison it, and padding must not matter.
    """
    x = args.x
    if args.steps == 0 or args.lengths.min(initial=args.steps) == args.steps:
        return x
    padding = np.arange(args.steps)[:, None] >= args.lengths[None, :]  # (T, B)
    if args.batch_first:
        padding = padding.T
    if np.isfinite(x[padding]).all():
        return x
    x = x.copy()
    x[padding] = 0
    return x


def lstm_backward(
    cache: LSTMCache | CheckpointCache,
    dy: Any = None,
    dh_n: Any = None,
    dc_n: Any = None,
    *,
    num_threads: int | None = None,
) -> LSTMGrads:
    """Gradients of a scalar loss through the `lstm_forward` call that made `cache`.

    Parameters
    ----------
    cache : LSTMCache or CheckpointCache
        From `lstm_forward(..., training=True)`; it may be used more than once.
        A CheckpointCache (from ``checkpoint_every=k``) recomputes the
        activations segment by segment, in bounded memory.
    dy : array_like, y's shape, optional
        Gradient of the loss with respect to y; values past a row's length
        are ignored. None means zeros.
    dh_n : array_like, (B, P), optional
        Gradient with respect to h_n; None means zeros.
    dc_n : array_like, (B, H), optional
        Gradient with respect to c_n; None means zeros.
    num_threads : int, optional
        As in `lstm_forward`.

    Returns
    -------
    LSTMGrads
        dx (x's shape), dh0 (B, P), dc0 (B, H), dw_ih (4H, I), dw_hh (4H, P),
        db (4H,) -- the gradient of b_ih and equally of b_hh --, dw_hr (P, H)
        and dpeephole (3, H), the last two None when unused; all in x's dtype.
    """
    check_cache(cache, (LSTMCache, CheckpointCache), "lstm_c.lstm_forward")
    if isinstance(cache, CheckpointCache):
        check_cache_checkpoints(
            "lstm_c.lstm_forward", cache.args, cache.reverse, cache.every, cache.h, cache.c
        )
        dy, dh_n, dc_n = check_backward_grads(dy, dh_n, dc_n, cache.args)
        from lstm_c import _checkpoint  # it calls this module

        return _checkpoint.backward(cache, dy, dh_n, dc_n, check_num_threads(num_threads))
    args = cache.args
    hidden, out = args.hidden_size, args.output_size
    check_cache_arrays(
        "lstm_c.lstm_forward",
        args,
        cache.reverse,
        {
            "act": (cache.act, 4 * hidden, True),
            "c_prev": (cache.c_prev, hidden, True),
            "h_prev": (cache.h_prev, out, True),
            "m": (cache.m, hidden, args.w_hr is not None),
        },
    )
    dy, dh_n, dc_n = check_backward_grads(dy, dh_n, dc_n, args)
    num_threads = check_num_threads(num_threads)
    dtype, rows = args.dtype, args.steps * args.batch
    batch, inputs = args.batch, args.input_size
    if rows == 0:  # no position ran: the gradients pass straight through or are zero
        return _empty_grads(args, dh_n, dc_n)
    dc0 = np.zeros((batch, hidden), dtype) if dc_n is None else dc_n.copy()
    output_shapes, scratch_shapes = _workspace(args, "backward")
    work = _outputs(output_shapes, dtype)
    threads = _threads.plan(num_threads, batch, hidden, out)
    scratch = _scratch.take("backward", dtype, scratch_shapes)
    scratch.arrays["dgates_step"].fill(0)  # read past a row's length, never written there
    with _threads.single_threaded_blas:
        _lstm.backward(
            x=_finite_padding(args).reshape(rows, inputs),
            w_ih=args.w_ih,
            w_hh=args.w_hh,
            w_hr=args.w_hr,
            peephole=args.peephole,
            act=cache.act,
            c_prev=cache.c_prev,
            h_prev=cache.h_prev,
            m_all=cache.m,
            lengths=args.lengths,
            reverse=cache.reverse,
            batch_first=args.batch_first,
            steps=args.steps,
            dy=None if dy is None else dy.reshape(rows, out),
            dh_n=np.zeros((batch, out), dtype) if dh_n is None else dh_n,
            dc0=dc0,
            num_threads=threads,
            split_batch=_split_batch(threads, batch, args.w_hh, True),
            **work,
            **scratch.arrays,
        )
    _scratch.give(scratch)
    return LSTMGrads(
        work["dx"].reshape(args.x.shape),
        work["dh0"],
        dc0,
        work["dw_ih"],
        work["dw_hh"],
        work["db"],
        work["dw_hr"],
        work["dpeephole"],
    )


def _empty_grads(args: ForwardArgs, dh_n: np.ndarray | None, dc_n: np.ndarray | None) -> LSTMGrads:
    """The gradients of a call that ran no position (seq_len or batch 0)."""
    dtype, batch, hidden, out = args.dtype, args.batch, args.hidden_size, args.output_size
    return LSTMGrads(
        np.zeros(args.x.shape, dtype),
        np.zeros((batch, out), dtype) if dh_n is None else dh_n.copy(),
        np.zeros((batch, hidden), dtype) if dc_n is None else dc_n.copy(),
        np.zeros((4 * hidden, args.input_size), dtype),
        np.zeros((4 * hidden, out), dtype),
        np.zeros(4 * hidden, dtype),
        None if args.w_hr is None else np.zeros((out, hidden), dtype),
        None if args.peephole is None else np.zeros((3, hidden), dtype),
    )


def _step_unchecked(
    x: np.ndarray,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    bias: np.ndarray,
    w_hr: np.ndarray | None,
    peephole: np.ndarray | None,
    h0: np.ndarray,
    c0: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    num_threads: int | None,
) -> None:
    """One inference time step of one layer, writing the new state into `h` and `c`.

    For `LSTM.step`, whose per-call cost is the point: nothing is checked.
    Every array must be C-contiguous, of one dtype and of the right shape:
    x (B, I), w_ih (4H, I), w_hh (4H, P), bias (4H,) (b_ih + b_hh),
    w_hr (P, H) or None, peephole (3, H) or None, h0 and h (B, P),
    c0 and c (B, H); `c` may be `c0` itself. `num_threads` as in `lstm_forward`,
    already checked.
    """
    batch, hidden = c.shape
    dtype = x.dtype
    if c is not c0:
        np.copyto(c, c0)
    threads = _threads.plan(num_threads, batch, hidden, h.shape[1])
    projected = w_hr is not None
    layer: dict[str, Any] = dict(x=x, w_ih=w_ih, w_hh=w_hh, bias=bias, w_hr=w_hr, peephole=peephole)
    gates = np.empty((batch, 4 * hidden), dtype)
    rec = np.empty((batch, 4 * hidden), dtype)
    with _threads.single_threaded_blas:
        if threads == 1:
            m = np.empty((batch, hidden), dtype) if projected else None
            _lstm.step(**layer, h0=h0, c=c, h=h, gates=gates, rec=rec, m=m)
            return
        # A step big enough to split: the sequence kernel with T = 1 runs it on all threads.
        np.copyto(h, h0)
        _lstm.forward(
            **layer,
            h=h,
            c=c,
            lengths=np.ones(batch, np.intp),
            reverse=False,
            batch_first=False,
            steps=1,
            gates=gates,
            y=np.empty_like(h),
            h_prev=None,
            c_prev=None,
            m_all=None,
            rec=rec,
            h_next=None if projected else np.empty_like(h),
            m_step=np.empty((batch, hidden), dtype) if projected else None,
            proj=np.empty_like(h) if projected else None,
            panels=None,
            ih_panels=None,
            num_threads=threads,
            split_batch=_split_batch(threads, batch, w_hh, False),
        )
