"""`lstm_c.LSTM`: a stacked, bidirectional, projected, peephole LSTM layer with PyTorch's API.

The layer only wires layers and directions together: every layer and direction
is one call of the compiled kernels (`lstm_c.lstm_forward` / `lstm_backward`),
so there is no Python work per time step, forward or backward.

Shapes, semantics and parameter names are those of ``torch.nn.LSTM``, so a
PyTorch ``state_dict`` converted with ``{k: v.numpy() for k, v in sd.items()}``
loads unchanged and gives the same outputs and gradients.

Notation: L = num_layers, D = 2 if bidirectional else 1, H = hidden_size,
H_out = proj_size if proj_size > 0 else H, I = input_size, T = seq_len, B = batch.

Sharing a module between threads
--------------------------------
- Every call reads the parameters; none writes them. Change parameters
  (`load_state_dict`, in-place updates of `LSTM.params`) only while no call
  runs, and not between a training-mode forward and its `backward`.
- `step` stores nothing in the module, and an eval-mode forward only drops
  the trace of an earlier training-mode forward: one module in eval mode
  may serve any number of threads at once.
- A training-mode forward stores its trace (kernel caches and dropout masks)
  in the module and draws masks from `LSTM.dropout_rng`; `backward` reads that
  trace and replaces `LSTM.grads`. So training is one thread per module: give
  each training thread its own module (``copy.deepcopy(m)``).
- Every forward allocates fresh arrays; a later forward never writes into the
  outputs or the trace of an earlier one. The trace references the input `x`
  (not a copy): do not modify `x` in place before `backward`.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from lstm_c import _lstm, _scratch, _threads, _validation, functional
from lstm_c._params import ParamNames, layer_arrays, layer_param_names, param_shapes
from lstm_c._stack import StackTrace, stack_backward, stack_forward
from lstm_c._types import CheckpointCache, LSTMCache
from lstm_c._validation import (
    as_array,
    as_dtype_array,
    check_blas_sizes,
    check_cache,
    check_checkpoint_every,
    check_dtype,
    check_flag,
    check_int,
    check_layer_config,
    check_lengths,
    check_num_threads,
)

if TYPE_CHECKING:
    from lstm_c.frozen import FrozenLSTM

__all__ = ["LSTM"]

State = tuple[np.ndarray, np.ndarray]


class _Trace(NamedTuple):
    """What a training-mode forward keeps for `LSTM.backward`."""

    caches: list[list[Any]]  # [layer][direction] -> LSTMCache or CheckpointCache
    masks: list[np.ndarray | None]  # [layer - 1]: scaled dropout mask applied to layer's input
    y_shape: tuple[int, ...]  # the shape returned to the caller
    batch: int
    unbatched: bool


class LSTM:
    """A multi-layer LSTM over NumPy arrays, computed by the compiled kernels.

    Same constructor, shapes, semantics and parameter names as ``torch.nn.LSTM``
    (gates i, f, g, o), plus optional peepholes. Forward and backward passes are
    explicit: ``y, (h_n, c_n) = m(x)``, then ``dx, (dh0, dc0) = m.backward(dy)``
    leaves the parameter gradients in ``m.grads``.

    Parameters
    ----------
    input_size : int
        I, features of each input step.
    hidden_size : int
        H, features of the cell state.
    num_layers : int
        L, stacked layers; layer k > 0 takes the D·H_out outputs of layer k-1.
    bias : bool
        With ``bias_ih_l{k}`` and ``bias_hh_l{k}``; False means none.
    batch_first : bool
        `x` and `y` are (B, T, ·) instead of (T, B, ·). The states never are.
    dropout : float
        Probability in [0, 1] of zeroing each output of every layer but the
        last, in training mode only (inverted dropout: kept values are scaled
        by 1/(1 - dropout)). Masks come from `dropout_rng`.
    bidirectional : bool
        D = 2: a second direction per layer runs each row from its last valid
        step back to the first; outputs are concatenated [forward, reverse].
    proj_size : int
        P > 0 adds a projection ``h_t = (o * tanh(c_t)) W_hr^T`` (LSTMP, as
        PyTorch's): then H_out = P. Must be < hidden_size.
    peephole : bool
        Adds ``peephole_l{k}`` (3, H), rows (i, f, o): the i and f gates see
        c_{t-1}, the o gate sees c_t (ONNX's definition). Not in PyTorch.
    dtype : numpy.float32 or numpy.float64
        Dtype of parameters and computation; inputs of another float dtype are
        refused (convert them, as PyTorch requires too).
    seed : int, optional
        Initialisation draws every parameter, in `state_dict` order, uniformly
        from ±1/sqrt(hidden_size) with ``numpy.random.default_rng(seed)``, as
        PyTorch's initialisation (peepholes included). Dropout masks come from
        an independent stream of the same seed. None: fresh OS entropy.
    checkpoint_every : int, optional
        Bounded training memory for long sequences: every layer and direction
        keeps its state only every this many steps, and `backward` recomputes
        the activations segment by segment (see `lstm_c.lstm_forward`). Extra
        memory per layer O((T/k + k)·B·H) instead of O(T·B·H), for about one
        more forward pass of compute; k ≈ sqrt(T) minimises it. None (the
        default) keeps every step's activations.

    Attributes
    ----------
    training : bool
        Training mode (the default): forwards keep what `backward` needs and
        apply dropout. Set by `train` and `eval`.
    grads : dict of str to ndarray
        Gradients of the last `backward`, keyed and shaped as `state_dict`.
        Each `backward` replaces them (nothing accumulates); empty before the
        first `backward`. ``bias_ih_l{k}`` and ``bias_hh_l{k}`` get equal values.
    dropout_rng : numpy.random.Generator
        Source of the dropout masks; replace it to repeat or vary them.
    num_threads : int or None
        Threads per kernel call, passed on to `lstm_c.lstm_forward` and
        `lstm_c.lstm_backward`; None uses OpenMP's default.
    checkpoint_every : int or None
        As given; may be changed between calls (it applies to the next forward).
    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size, peephole, dtype
        As given (dtype as a numpy.dtype).
    num_directions : int
        D, 1 or 2.
    output_size : int
        H_out: proj_size if > 0 else hidden_size.

    Notes
    -----
    See the module docstring of `lstm_c.layer` for what may be shared between threads.
    """

    # The functional API the forward runs on: a frozen module's reads packed weights.
    _api: Any = functional

    # torch.nn.LSTM's constructor, as lstm_c.torch.LSTM's is too (on purpose: the same
    # arguments in both places; check_layer_config checks them once for both).
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
        *,
        peephole: bool = False,
        dtype: DTypeLike = np.float32,
        seed: int | None = None,
        checkpoint_every: int | None = None,
    ) -> None:
        config = check_layer_config(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, peephole, checkpoint_every,
        )  # fmt: skip
        (
            self.input_size, self.hidden_size, self.num_layers, self.bias, self.batch_first,
            self.dropout, self.bidirectional, self.proj_size, self.peephole, self.checkpoint_every,
        ) = config  # fmt: skip
        self.dtype = check_dtype("dtype", dtype)
        if seed is not None:
            seed = check_int("seed", seed, 0)
        self.num_directions = 2 if self.bidirectional else 1
        self.output_size = self.proj_size or self.hidden_size
        self._check_sizes()
        self.training = True
        self.num_threads: int | None = None
        self.grads: dict[str, np.ndarray] = {}
        self._trace: _Trace | None = None
        # The compiled plan of `step`, and the parameter arrays it was built on.
        self._step_plan: tuple[list[np.ndarray], _lstm.Stepper] | None = None
        # The usual step's way past every check: (num_threads, _threads.forks, the plan's
        # try_run, its threads), made for an int num_threads; dropped with the plan.
        self._step_shortcut: tuple[int, int, Callable[..., Any], int] | None = None

        # Index layer * D + direction.
        self._names: list[ParamNames] = layer_param_names(
            self.num_layers,
            self.num_directions,
            bias=self.bias,
            projection=self.proj_size > 0,
            peephole=self.peephole,
        )
        self._shapes = param_shapes(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.num_directions,
            bias=self.bias,
            proj_size=self.proj_size,
            peephole=self.peephole,
        )

        init_rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.hidden_size)
        self._params: dict[str, np.ndarray] = {
            name: _scratch.aligned_copy(init_rng.uniform(-bound, bound, shape), self.dtype)
            for name, shape in self._shapes.items()
        }
        self.dropout_rng: np.random.Generator = np.random.default_rng(
            np.random.SeedSequence(seed).spawn(1)[0]
        )

    def _check_sizes(self) -> None:
        """Refuse sizes the kernels cannot run, or whose parameters cannot fit in memory,
        before anything is allocated."""
        L, D, H, P, I = (
            self.num_layers,
            self.num_directions,
            self.hidden_size,
            self.proj_size,
            self.input_size,
        )
        H_out = self.output_size
        check_blas_sizes(
            {
                "4*hidden_size": 4 * H,
                "input_size": I,
                "num_directions*output_size (the input_size of layers > 0)": D * H_out,
            }
        )
        per_layer = 4 * H * H_out + (8 * H if self.bias else 0) + P * H + (3 * H if self.peephole else 0)
        count = D * (4 * H * I + (L - 1) * 4 * H * D * H_out + L * per_layer)
        needed = count * self.dtype.itemsize
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not POSIX, or not told
            return
        if memory > 0 and needed > memory:
            raise ValueError(
                f"{self!r} has {count} parameters ({needed / 2**30:.1f} GiB in {self.dtype}), more "
                f"than this machine's {memory / 2**30:.1f} GiB of memory; check num_layers, "
                f"hidden_size and input_size"
            )

    # ------------------------------------------------------------------ modes

    def train(self, mode: bool = True) -> LSTM:
        """Set training mode (or eval mode with ``mode=False``).

        Parameters
        ----------
        mode : bool
            True: forwards apply dropout and keep a trace for `backward`.

        Returns
        -------
        LSTM
            self, for chaining.
        """
        self.training = check_flag("mode", mode)
        return self

    def eval(self) -> LSTM:
        """Set eval mode: no dropout, no trace for `backward`.

        Returns
        -------
        LSTM
            self, for chaining.
        """
        return self.train(False)

    # ------------------------------------------------------------- parameters

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The live parameter arrays (not copies), keyed and ordered as `state_dict`.

        Update them in place to train (``p -= lr * m.grads[name]``), after a
        `backward` and before the next forward, never in between. Each is a view
        of memory that starts on a 64-byte cache line (faster for the kernels).
        """
        return dict(self._params)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, keyed by PyTorch's names.

        Returns
        -------
        dict of str to ndarray
            Per layer k and direction (suffix ``_reverse`` for the second), in
            this order: ``weight_ih_l{k}`` (4H, I or D·H_out), ``weight_hh_l{k}``
            (4H, H_out), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,) when `bias`,
            ``weight_hr_l{k}`` (P, H) when ``proj_size > 0``, ``peephole_l{k}``
            (3, H) when `peephole`. Copies: changing them changes nothing here.
        """
        return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike], strict: bool = True) -> None:
        """Copy parameters in from a mapping of `state_dict`'s names to array-likes.

        A ``torch.nn.LSTM`` state_dict converted with ``.numpy()`` (or its CPU
        tensors as they are) loads unchanged. Nothing changes unless every
        entry is valid.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Shapes as `state_dict`'s; values are converted to `dtype` (copied).
        strict : bool
            True: the keys must be exactly `state_dict`'s. False: missing keys
            keep their current values and unexpected keys are ignored.

        Raises
        ------
        ValueError
            Missing or unexpected keys (with ``strict``, all named), or a wrong shape.
        TypeError
            Not a mapping, or values that are not real numbers.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of parameter names to arrays, got {type(state_dict).__name__}"
            )
        strict = check_flag("strict", strict)
        missing = [name for name in self._params if name not in state_dict]
        unexpected = [key for key in state_dict if key not in self._params]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            hints = []
            if any(k.startswith("weight_hr") for k in missing + unexpected):
                hints.append("weight_hr_l* exist only with proj_size > 0")
            if any(k.startswith("peephole") for k in missing):
                hints.append("peephole_l* exist only with peephole=True (torch.nn.LSTM has none)")
            if any(k.startswith("bias") for k in missing + unexpected):
                hints.append("bias_* exist only with bias=True")
            hint = f" ({'; '.join(hints)})" if hints else ""
            raise ValueError(
                f"load_state_dict: {' and '.join(parts)} for {self!r}{hint}; "
                f"pass strict=False to load only the matching keys"
            )
        loaded = {}
        for name in self._params:
            if name not in state_dict:
                continue
            value = as_array(f"state_dict[{name!r}]", state_dict[name])
            if value.dtype.kind not in "fiub":
                raise TypeError(f"state_dict[{name!r}] must hold real numbers, got dtype {value.dtype}")
            if value.shape != self._shapes[name]:
                raise ValueError(
                    f"state_dict[{name!r}] must have shape {self._shapes[name]}, got {value.shape}"
                )
            loaded[name] = _scratch.aligned_copy(value, self.dtype)
        self._params.update(loaded)
        self._step_shortcut = None  # it skips the check that the plan's arrays are these

    # ---------------------------------------------------------------- checks

    def _array(self, name: str, value: Any) -> np.ndarray:
        """`value` as an array in the module's dtype, by the package's conversion rule."""
        return as_dtype_array(name, value, self.dtype, owner="this LSTM")

    def _states(
        self, name: str, pair: Any, layers: int, batch: int, unbatched: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A pair (h, c) of (layers, B, H_out) and (layers, B, H) arrays, either may be None."""
        if pair is None:
            return None, None
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(
                f"{name} must be a tuple (h, c) of two arrays or None, got {type(pair).__name__}"
                + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else "")
            )
        out: list[np.ndarray | None] = []
        expected = (
            (pair[0], self.output_size, "proj_size or hidden_size"),
            (pair[1], self.hidden_size, "hidden_size"),
        )
        for k, (value, features, what) in enumerate(expected):
            if value is None:
                out.append(None)
                continue
            shape = (layers, features) if unbatched else (layers, batch, features)
            if type(value) is np.ndarray and value.dtype == self.dtype and value.shape == shape:
                out.append(value[:, None] if unbatched else value)  # the common case, checked cheaply
                continue
            array = self._array(f"{name}[{k}]", value)
            layout = f"(num_layers*num_directions, {what})"
            if not unbatched:
                layout = f"(num_layers*num_directions, batch, {what})"
            if array.shape != shape:
                extra = " (unbatched 2-D input takes 2-D states)" if unbatched and array.ndim == 3 else ""
                raise ValueError(f"{name}[{k}] must have shape {layout} = {shape}, got {array.shape}{extra}")
            out.append(array[:, None] if unbatched else array)
        return out[0], out[1]

    # --------------------------------------------------------------- forward

    def forward(
        self, x: ArrayLike, hx: tuple[ArrayLike, ArrayLike] | None = None, *, lengths: ArrayLike | None = None
    ) -> tuple[np.ndarray, State]:
        """Run the LSTM over a batch of sequences (same as calling the module).

        Parameters
        ----------
        x : array_like, (T, B, I), or (B, T, I) with `batch_first`, or (T, I) unbatched
            Input sequences in `dtype` (integers are converted).
        hx : tuple (h0, c0), optional
            h0 (L·D, B, H_out) and c0 (L·D, B, H), ordered layer-major,
            direction-minor (index ``layer * D + direction``); 2-D
            (L·D, H_out) and (L·D, H) for unbatched `x`. None (or a None
            element) means zeros.
        lengths : array_like of int, (B,), optional
            Valid steps per row, each in [0, T] (PyTorch's packed sequences,
            without sorting or packing): row b runs over t < lengths[b], the
            reverse direction starts at its last valid step, `y` is 0 past it,
            h_n and c_n are the states after its last valid step. Batched `x` only.

        Returns
        -------
        y : ndarray, (T, B, D·H_out), or (B, T, D·H_out) with `batch_first`, or (T, D·H_out)
            Outputs of the last layer, [forward, reverse] features.
        (h_n, c_n) : tuple of ndarray, (L·D, B, H_out) and (L·D, B, H)
            Final states of every layer and direction (2-D for unbatched `x`).

        Notes
        -----
        In training mode the forward keeps what `backward` needs (replacing
        the previous trace) and applies dropout between layers; in eval mode
        it drops any previous trace, so `backward` always refers to the most
        recent forward.
        """
        array = as_dtype_array("x", x, self.dtype, owner="this LSTM", convert=False)
        if array.ndim == 3:
            unbatched = False
            batch_first = self.batch_first
            batch, steps = array.shape[:2] if batch_first else array.shape[1::-1]
        elif array.ndim == 2:
            unbatched, batch_first, steps, batch = True, False, array.shape[0], 1
        else:
            layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
            raise ValueError(
                f"x must be 3-D {layout} or 2-D (seq_len, input_size) unbatched, "
                f"got {array.ndim}-D shape {array.shape}"
            )
        if array.shape[-1] != self.input_size:
            raise ValueError(
                f"x has {array.shape[-1]} features (shape {array.shape}) but this LSTM has "
                f"input_size={self.input_size}"
            )
        # Before converting x (it may be a zero-stride view of a huge shape) or allocating.
        check_blas_sizes({"seq_len*batch": steps * batch})
        array = array.astype(self.dtype, copy=False)
        if unbatched:
            if lengths is not None:
                raise ValueError(
                    "lengths needs batched 3-D x; unbatched 2-D x is one sequence of its full length"
                )
            array = array[:, None]
        elif lengths is not None:
            lengths = check_lengths(lengths, steps, batch)

        L, D = self.num_layers, self.num_directions
        h0, c0 = self._states("hx", hx, L * D, batch, unbatched)
        training = self.training
        self._trace = None
        y, h_n, c_n, trace = stack_forward(
            self._api,
            self._params,
            self._names,
            D,
            array,
            h0,
            c0,
            lengths=lengths,
            batch_first=batch_first,
            training=training,
            dropout_mask=self._dropout_mask,
            num_threads=self.num_threads,
            checkpoint_every=check_checkpoint_every(self.checkpoint_every),
        )
        if unbatched:
            y, h_n, c_n = y[:, 0], h_n[:, 0], c_n[:, 0]
        if trace is not None:
            self._trace = _Trace(trace.caches, trace.masks, y.shape, batch, unbatched)
        return y, (h_n, c_n)

    __call__ = forward

    def _dropout_mask(self, layer: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """A scaled inverted-dropout mask (0 or 1/(1-p)), or None without dropout."""
        p = self.dropout
        if p == 0:
            return None
        if p == 1:
            return np.zeros(shape, self.dtype)
        keep = self.dropout_rng.random(shape, dtype=self.dtype) >= p
        return keep * self.dtype.type(1 / (1 - p))

    # -------------------------------------------------------------- backward

    def backward(
        self, dy: ArrayLike | None, dhx: tuple[ArrayLike | None, ArrayLike | None] | None = None
    ) -> tuple[np.ndarray, State]:
        """Gradients through the most recent (training-mode) forward.

        Runs layer by layer, from the last, one `lstm_c.lstm_backward` call per
        layer and direction, with the forward's dropout masks. Parameter
        gradients replace `grads`. May be called more than once per forward.

        Parameters
        ----------
        dy : array_like or None, y's shape: (T, B, D·H_out), (B, T, D·H_out) or (T, D·H_out)
            Gradient of the loss with respect to `y`; entries past a row's
            length are ignored. None means zeros.
        dhx : tuple (dh_n, dc_n), optional
            Gradients with respect to h_n (L·D, B, H_out) and c_n (L·D, B, H)
            (2-D when unbatched). None (or a None element) means zeros.

        Returns
        -------
        dx : ndarray, x's shape
            Gradient with respect to x (0 past each row's length).
        (dh0, dc0) : tuple of ndarray, (L·D, B, H_out) and (L·D, B, H)
            Gradients with respect to h0 and c0 (2-D when unbatched).

        Raises
        ------
        ValueError
            No training-mode forward precedes (none ran, or the most recent
            ran in eval mode), or shapes that do not match that forward.
        """
        trace = self._trace
        if trace is None:
            raise ValueError(
                "LSTM.backward needs the trace of a training-mode forward, and the most recent "
                "forward either never ran or ran in eval mode: call m.train() (the default mode), "
                "then y, (h_n, c_n) = m(x, ...), then m.backward(dy, ...)"
            )
        L, D = self.num_layers, self.num_directions
        # Every layer's cache before any kernel runs: a parameter resized in place since
        # the forward would otherwise be found only after the later layers ran.
        for layer, caches in enumerate(trace.caches):
            for direction, cache in enumerate(caches):
                try:
                    check_cache(cache, (LSTMCache, CheckpointCache), "LSTM.forward")
                except ValueError as error:
                    where = f"layer {layer}" + (" (reverse direction)" if direction else "")
                    raise ValueError(f"LSTM.backward, {where}: {error}") from error
        batch, unbatched = trace.batch, trace.unbatched
        d_out = None
        if dy is not None:
            d_out = self._array("dy", dy)
            if d_out.shape != trace.y_shape:
                raise ValueError(
                    f"dy must have the shape of y from the forward, {trace.y_shape}, got {d_out.shape}"
                )
            if unbatched:
                d_out = d_out[:, None]
        dh_n, dc_n = self._states("dhx", dhx, L * D, batch, unbatched)

        dx, dh0, dc0, grads = stack_backward(
            functional,
            self._names,
            D,
            StackTrace(trace.caches, trace.masks),
            d_out,
            dh_n,
            dc_n,
            num_threads=self.num_threads,
        )
        if unbatched:
            dx, dh0, dc0 = dx[:, 0], dh0[:, 0], dc0[:, 0]
        self.grads = {name: grads[name] for name in self._params}
        return dx, (dh0, dc0)

    # ------------------------------------------------------------------ step

    def step(self, x_t: ArrayLike, hx: tuple[ArrayLike, ArrayLike] | None = None) -> tuple[np.ndarray, State]:
        """One time step of every layer, for streaming inference.

        Stepping through a sequence, feeding back the returned state, gives
        what one forward call over it gives, to rounding (the two compute the
        recurrent product in a different order: differences of about 1e-16
        in float64 and 1e-7 in float32). Always runs as inference: no
        dropout, no trace (it neither feeds nor disturbs `backward`).
        Unidirectional only.

        Parameters
        ----------
        x_t : array_like, (B, I), or (I,) unbatched
            The inputs of one time step.
        hx : tuple (h, c), optional
            State from the previous step: (L, B, H_out) and (L, B, H), or
            (L, H_out) and (L, H) unbatched. None means zeros.

        Returns
        -------
        y_t : ndarray, (B, H_out), or (H_out,) unbatched
            Output of the last layer.
        (h, c) : tuple of ndarray, (L, B, H_out) and (L, B, H)
            The new state (2-D unbatched): pass it to the next step. Once
            nothing refers to a returned state any more (nor to ``y_t``, a
            view of ``h``), a later step may write its new state into that
            memory: an array still in use is never written.
        """
        shortcut = self._step_shortcut
        if shortcut is not None and shortcut[0] is self.num_threads and shortcut[1] == _threads.forks:
            # The usual call (arrays as the last step returned them, a small batch) in one go.
            done = shortcut[2](x_t, hx, shortcut[3])
            if done is not None:
                return done
        if self.num_directions != 1:
            raise ValueError(
                "step needs a unidirectional LSTM: the reverse direction needs the whole sequence"
            )
        num_threads = check_num_threads(self.num_threads)
        plan = self._stepper()
        threads = _threads.team(num_threads) if plan.split else 1
        if _threads.single_threaded_blas.compiled:  # the plan holds SciPy's BLAS at one thread itself
            if type(self.num_threads) is int:  # None follows set_num_threads: resolved per call
                self._step_shortcut = (self.num_threads, _threads.forks, plan.try_run, threads)
            done = plan.try_run(x_t, hx, threads)
            if done is not None:
                return done
        x = x_t if type(x_t) is np.ndarray and x_t.dtype == self.dtype else self._array("x_t", x_t)
        unbatched = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"x_t must be 2-D (batch, input_size) or 1-D (input_size,) with input_size="
                f"{self.input_size}, got shape {x.shape}"
            )
        batch = 1 if unbatched else x.shape[0]
        if batch > _validation.BLAS_INT_MAX:  # before x is copied (it may be a zero-stride view)
            check_blas_sizes({"batch": batch})
        L = self.num_layers
        h0, c0 = self._states("hx", hx, L, batch, unbatched)
        h_n = np.empty((L, batch, self.output_size), self.dtype)
        c_n = np.empty((L, batch, self.hidden_size), self.dtype)
        layer_input = np.ascontiguousarray(x.reshape(batch, self.input_size))
        if batch <= plan.max_batch:
            # A step of microseconds: every layer in one compiled call.
            h0 = None if h0 is None else np.ascontiguousarray(h0)
            c0 = None if c0 is None else np.ascontiguousarray(c0)
            if _threads.single_threaded_blas.compiled:
                plan.run(layer_input, h0, c0, h_n, c_n, threads)  # holds SciPy's BLAS at one thread
            else:
                with _threads.single_threaded_blas:
                    plan.run(layer_input, h0, c0, h_n, c_n, threads)
            y_t = h_n[L - 1]
            if unbatched:
                return y_t[0], (h_n[:, 0], c_n[:, 0])
            return y_t, (h_n, c_n)
        for layer, names in enumerate(self._names):
            a = layer_arrays(self._params, names)
            # One kernel call per layer and no re-validation: this is the streaming hot path.
            functional._step_unchecked(
                layer_input,
                a.w_ih,
                a.w_hh,
                self._step_bias(names),
                a.w_hr,
                a.peephole,
                self._zeros_or(h0, layer, h_n),
                self._zeros_or(c0, layer, c_n),
                h_n[layer],
                c_n[layer],
                num_threads,
            )
            layer_input = h_n[layer]
        y_t = layer_input
        if unbatched:
            return y_t[0], (h_n[:, 0], c_n[:, 0])
        return y_t, (h_n, c_n)

    def _stepper(self) -> _lstm.Stepper:
        """`step`'s compiled plan, rebuilt when a parameter array was replaced.

        It reads the module's own arrays, so in-place updates need no rebuild.
        """
        plan = self._step_plan
        if plan is None or not all(map(operator.is_, self._params.values(), plan[0])):
            _threads.single_threaded_blas.bind()
            layers: list[tuple[np.ndarray | None, ...]] = [
                layer_arrays(self._params, names) for names in self._names
            ]
            largest, split = _threads.lone_step_plan(self.hidden_size, self.output_size)
            stepper = _lstm.Stepper(
                layers,
                self.input_size,
                self.hidden_size,
                self.output_size,
                self.dtype.itemsize,
                max_batch=largest,
                split=split,
            )
            plan = self._step_plan = (list(self._params.values()), stepper)
            self._step_shortcut = None
        return plan[1]

    def freeze(self) -> FrozenLSTM:
        """An inference-only snapshot of this LSTM, its weights packed once.

        Returns
        -------
        FrozenLSTM
            Called as this module in eval mode (``y, (h_n, c_n) = frozen(x, hx)``),
            with the same results for the parameters as they are now (bit for bit
            when each W_ih takes at most 4 MiB; to rounding above, where the module
            hands W_ih's products to BLAS), but without packing the weights at every
            call. It keeps its own copy of them: freeze again after changing the
            parameters.
        """
        from lstm_c.frozen import FrozenLSTM  # it builds on this module

        return FrozenLSTM(self)

    def __getstate__(self) -> dict[str, Any]:
        # The step plan holds addresses of this module's arrays: a copy builds its own.
        # A frozen module's packed weights are found by array identity: likewise.
        state = self.__dict__.copy()
        state["_step_plan"] = state["_step_shortcut"] = None
        state.pop("_api", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_step_shortcut", None)  # not in a module pickled by lstm_c 0.1.0
        self.__dict__.update(state)

    def _step_bias(self, names: ParamNames) -> np.ndarray:
        """b_ih + b_hh of one layer (zeros without biases), computed per call so that
        in-place parameter updates are seen."""
        if names.b_ih is None or names.b_hh is None:
            return np.zeros(4 * self.hidden_size, self.dtype)
        return self._params[names.b_ih] + self._params[names.b_hh]

    @staticmethod
    def _zeros_or(states: np.ndarray | None, layer: int, like: np.ndarray) -> np.ndarray:
        """Layer `layer` of `states` as a C-contiguous array, or zeros shaped as like[layer]."""
        if states is None:
            return np.zeros(like.shape[1:], like.dtype)
        return np.ascontiguousarray(states[layer])

    # ------------------------------------------------------------------ misc

    def __repr__(self) -> str:
        parts = [str(self.input_size), str(self.hidden_size)]
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
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value}")
        if self.dtype != np.float32:
            parts.append(f"dtype={self.dtype}")
        if self.checkpoint_every is not None:
            parts.append(f"checkpoint_every={self.checkpoint_every}")
        return f"LSTM({', '.join(parts)})"
