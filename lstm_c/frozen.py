"""Inference on weights packed once: `LSTM.freeze` and the `FrozenLSTM` it returns.

Every forward call packs W_ih and W_hh into the panels its products read (a
copy laid out in the order of reading). For inference with fixed weights that
is repeated work: measured on 2 cores (Zen 4), T = 50, it is 2-4% of a call at
most shapes and up to a tenth at small batches of large layers (B = 4,
H = 512). A `FrozenLSTM` packs its own copy of the weights once, as an ONNX
Runtime session does, and its calls read the packed copy, W_ih at any size
(a call packs it only up to 4 MiB and leaves a larger one to BLAS).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from lstm_c import _scratch, _threads, functional
from lstm_c._params import layer_arrays
from lstm_c._validation import check_forward, check_num_threads

if TYPE_CHECKING:
    from lstm_c.layer import LSTM, State


class _PackedApi:
    """The functional API of `stack_forward` over packed weights: lstm_forward (inference)
    reads the packed W_ih and W_hh of the layer whose W_hh array it is given."""

    def __init__(self, packs: dict[int, functional.PackedWeights]) -> None:
        self._packs = packs  # by id() of the W_hh arrays, which the frozen module owns

    def lstm_forward(
        self,
        x: np.ndarray,
        w_ih: np.ndarray,
        w_hh: np.ndarray,
        b_ih: np.ndarray | None = None,
        b_hh: np.ndarray | None = None,
        h0: np.ndarray | None = None,
        c0: np.ndarray | None = None,
        *,
        w_hr: np.ndarray | None = None,
        peephole: np.ndarray | None = None,
        lengths: Any = None,
        reverse: bool = False,
        batch_first: bool = False,
        training: bool = False,
        num_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, None]:
        assert not training  # a frozen module is always in eval mode
        args = check_forward(
            x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, batch_first, w_hr=w_hr, peephole=peephole
        )
        y, h, c, _ = functional._forward(
            args, reverse, False, check_num_threads(num_threads), self._packs[id(w_hh)]
        )
        return y, h, c, None


class _Ready(NamedTuple):
    """A one-layer FrozenLSTM's call of one input shape, made ready (see FrozenLSTM.__call__)."""

    shape: tuple[int, ...]  # x's
    dtype: np.dtype
    threads: tuple[int, int]  # the thread count asked for and _threads.forks
    call: functional.ForwardCall
    h0: np.ndarray  # zeros (B, H_out)
    c0: np.ndarray  # zeros (B, H)


class FrozenLSTM:
    """An inference-only snapshot of an `LSTM`, its weights packed once.

    Made by `LSTM.freeze`. It copies the module's parameters and packs them in
    the layout the kernels read, once; each call then gives what the module in
    eval mode gives for those parameters, without packing the weights again: bit
    for bit when each W_ih takes at most 4 MiB, to rounding above (the module
    then hands W_ih's products to BLAS, which packs it at every call). Changes
    made to the module later are not seen: freeze it again. A FrozenLSTM never
    changes, so threads may call it at once.

    Attributes
    ----------
    num_threads : int or None
        Threads per kernel call, as the module's at freezing; may be changed.
    input_size, hidden_size, num_layers, num_directions, output_size, batch_first, dtype
        The module's.
    """

    def __init__(self, module: LSTM) -> None:
        # Its own attributes, through LSTM.__getstate__ (no step plan); the arrays are copied below.
        frozen = copy.copy(module)
        frozen._params = {name: _scratch.aligned_copy(value) for name, value in module._params.items()}
        frozen.grads, frozen._trace = {}, None
        frozen.checkpoint_every = None  # inference keeps no activations anyway
        frozen.eval()
        packs = {}
        for names in frozen._names:
            w_hh = frozen._params[names.w_hh]
            packs[id(w_hh)] = functional.pack_weights(frozen._params[names.w_ih], w_hh)
        frozen._api = _PackedApi(packs)
        self._module = frozen
        # The last call's preparation, for the next calls with the same kind of input.
        self._ready: _Ready | None = None

    def __call__(
        self, x: ArrayLike, hx: tuple[ArrayLike, ArrayLike] | None = None, *, lengths: ArrayLike | None = None
    ) -> tuple[np.ndarray, State]:
        """Run over a batch of sequences, as `LSTM.forward` in eval mode.

        Parameters
        ----------
        x : array_like, (T, B, I), or (B, T, I) with `batch_first`, or (T, I) unbatched
            Input sequences in `dtype`.
        hx : tuple (h0, c0), optional
            (L·D, B, H_out) and (L·D, B, H), 2-D for unbatched `x`; None means zeros.
        lengths : array_like of int, (B,), optional
            Valid steps per row, as in `LSTM.forward`.

        Returns
        -------
        y : ndarray, (T, B, D·H_out), or (B, T, D·H_out) with `batch_first`, or (T, D·H_out)
        (h_n, c_n) : tuple of ndarray, (L·D, B, H_out) and (L·D, B, H)
        """
        ready = self._ready
        if (
            ready is not None
            and hx is None
            and lengths is None
            and type(x) is np.ndarray
            and x.shape == ready.shape
            and x.dtype == ready.dtype
            and x.flags.c_contiguous
            and self._asks_for(ready.threads)
        ):
            # The usual call (a one-layer module, an input as the last one, no state)
            # skips the checks and the preparation that the last call made.
            done = ready.call.run_prepared(x, ready.h0, ready.c0)
            if done is None:  # another thread's call runs on the prepared one
                done = ready.call(x, ready.h0, ready.c0)[:3]
            y, h, c = done
            return y, (h[None], c[None])
        out = self._module.forward(x, hx, lengths=lengths)
        self._ready = self._prepare(x) if hx is None and lengths is None else None
        return out

    def _asks_for(self, threads: tuple[int, int]) -> bool:
        """Whether a call now asks for `threads` (as `_threads` gives them); an int
        num_threads, checked when the call was made ready, is not checked again."""
        asked = self._module.num_threads
        if type(asked) is int:
            return (asked, _threads.forks) == threads
        return self._threads() == threads

    def _threads(self) -> tuple[int, int]:
        """The thread count a call asks for (checked), and the forks this process descends
        from: a call made ready is ready for these only."""
        asked = self._module.num_threads
        return (_threads.resolve(check_num_threads(asked)), _threads.forks)

    def _prepare(self, x: Any) -> _Ready | None:
        """The call of a one-layer module on inputs like `x` (an array of the module's dtype,
        batched and C-contiguous, as the module just took without error), made ready; None
        for other modules and inputs."""
        m = self._module
        if not (
            m.num_layers == 1
            and m.num_directions == 1
            and type(x) is np.ndarray
            and x.ndim == 3
            and x.dtype == m.dtype
            and x.flags.c_contiguous
        ):
            return None
        a = layer_arrays(m._params, m._names[0])
        threads = self._threads()
        args = check_forward(
            x,
            a.w_ih,
            a.w_hh,
            a.b_ih,
            a.b_hh,
            None,
            None,
            None,
            m.batch_first,
            w_hr=a.w_hr,
            peephole=a.peephole,
        )
        packed = m._api._packs[id(a.w_hh)]
        call = functional.ForwardCall(args, False, False, threads[0], packed)
        if not call.rows:
            return None  # no position to run: nothing to make ready
        call.prepare()
        return _Ready(x.shape, x.dtype, threads, call, args.h0, args.c0)

    @property
    def num_threads(self) -> int | None:
        return self._module.num_threads

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        self._module.num_threads = value

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__.get("_module")
        if module is None or name not in _CONFIG:
            raise AttributeError(f"'FrozenLSTM' object has no attribute '{name}'")
        return getattr(module, name)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the frozen parameters, keyed as `LSTM.state_dict`."""
        return self._module.state_dict()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # The packed copy is found by array identity: an unpickled one packs anew.
        return (FrozenLSTM, (self._module,))

    def __repr__(self) -> str:
        return f"FrozenLSTM({self._module!r})"


_CONFIG = frozenset(
    ("input_size", "hidden_size", "num_layers", "num_directions", "output_size", "batch_first", "dtype")
)
