"""The scratch arrays of kernel calls, kept by each thread for its next call of the same sizes.

Freshly allocated, a call's scratch (a chunk of gate pre-activations, the
packed weights, per-step buffers) is new memory at every call: glibc's malloc
gives large freed blocks back to the system, so the next call pays a page
fault for every 4 KiB it touches. Whether it does depends on what the process
allocated before; when it does, small and medium calls run up to 1.8x slower
(measured on 2 cores, Zen 4: 255 faults per call in inference at T=50, B=4,
H=128). So each thread keeps the scratch of its recent calls, up to
`MAX_BYTES` and `MAX_SETS` in all, oldest dropped first. Larger scratch is
allocated per call: there the faults are small next to the arithmetic.

A set of arrays is taken out while its call runs, so a call that starts
meanwhile on the same thread (from a signal handler) gets arrays of its own.
Scratch comes with any content: a caller zeroes what a kernel needs zeroed.

Outputs (`output`) are new arrays, and the same faults hit them: a training
loop frees the last step's outputs and allocates the next ones, which glibc may
map afresh each time (1000-1500 faults per call at T=24, B=64, H=256, whose
training ran 1.17x faster without them; 145 at T=50, B=16, H=32, whose forward
pass took 485 us with them and 233 without, and 645 us on two threads, whose
faults contend). So the memory of outputs from 64 KiB up is kept once freed,
up to `OUTPUTS_MAX_BYTES` and `OUTPUTS_MAX_BLOCKS`, and a later output of the
size takes it back: a block is reused only when no array on it is alive any
more.

Every array here (scratch, packed weights, large outputs; also `lstm_c.LSTM`'s
parameters) starts on a cache line (`empty`): NumPy aligns its data to 16 bytes
only, and a vector load that straddles two lines costs two.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import numpy as np

# What one thread keeps between calls: the scratch of a few calls of a medium model
# (T = 50, B = 16, H = 256 inference needs about 5 MiB), or of one large training
# step (T = 18, B = 64, H = 512 backward: 11 MiB, whose faults cost 1.1x when it was
# not kept).
MAX_BYTES = 32 << 20
# And at most this many sets (a stacked, bidirectional model in training needs about
# six: forward and backward of its first layer and of the others).
MAX_SETS = 16

Shapes = dict[str, "tuple[int, ...] | None"]
Arrays = dict[str, Any]  # np.ndarray or None, passed to the kernels by keyword


class Scratch:
    """The scratch arrays of one call (`arrays`, keyed by the kernel's argument names)."""

    __slots__ = ("key", "arrays", "nbytes")

    def __init__(self, key: tuple, arrays: Arrays, nbytes: int) -> None:
        self.key, self.arrays, self.nbytes = key, arrays, nbytes


class _Kept(threading.local):
    def __init__(self) -> None:
        self.sets: dict[tuple, Scratch] = {}  # by (phase, dtype, shapes), oldest first
        self.nbytes = 0


_kept = _Kept()


# Where an array starts within a cache line varied from process to process with what
# the process had allocated before, and so did the kernels' speed: LSTM.step at H = 128
# on one thread (Zen 4) took 5.9 us per step with its weights at a line's start, 6.6
# at 32 bytes into one and 7.4 at 16; inference from panels 1-8% (H = 64 B = 4, H = 512
# B = 1). A line is also AVX-512's vector.
ALIGNMENT = 64


def _aligned(raw: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array of `shape` and `dtype` on `raw` (uint8, at least ALIGNMENT - 1 bytes larger),
    starting at its first multiple of ALIGNMENT bytes. Its base is `raw`."""
    nbytes = math.prod(shape) * dtype.itemsize
    start = -raw.__array_interface__["data"][0] % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """As np.empty(shape, dtype), its data starting on a multiple of ALIGNMENT bytes."""
    dtype = np.dtype(dtype)
    return _aligned(np.empty(math.prod(shape) * dtype.itemsize + ALIGNMENT - 1, np.uint8), shape, dtype)


def aligned_copy(a: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """A C-contiguous copy of `a` (converted to `dtype` if given, as np.array does) on
    memory of its own that starts on a multiple of ALIGNMENT bytes."""
    out = empty(a.shape, a.dtype if dtype is None else dtype)
    out[...] = a
    return out


def allocate(dtype: np.dtype, shapes: Shapes) -> Arrays:
    """New arrays of `shapes` (None stays None)."""
    return {name: None if shape is None else empty(shape, dtype) for name, shape in shapes.items()}


def take(phase: str, dtype: np.dtype, shapes: Shapes) -> Scratch:
    """Scratch of `shapes` for a call of `phase`: the arrays this thread kept from a call
    of the same phase and sizes, or new ones. Give them back with `give` after the call."""
    key = (phase, dtype.char, *shapes.values())
    scratch = _kept.sets.pop(key, None)
    if scratch is None:
        arrays = allocate(dtype, shapes)
        return Scratch(key, arrays, sum(a.nbytes for a in arrays.values() if a is not None))
    _kept.nbytes -= scratch.nbytes
    return scratch


def give(scratch: Scratch) -> None:
    """Keep `scratch` for this thread's next call of the same phase and sizes."""
    if scratch.nbytes > MAX_BYTES:
        return
    kept = _kept
    sets = kept.sets
    if scratch.key in sets:  # a call of the same sizes started and ended meanwhile
        kept.nbytes -= sets.pop(scratch.key).nbytes
    while sets and (kept.nbytes + scratch.nbytes > MAX_BYTES or len(sets) >= MAX_SETS):
        kept.nbytes -= sets.pop(next(iter(sets))).nbytes
    sets[scratch.key] = scratch
    kept.nbytes += scratch.nbytes


def kept_bytes() -> int:
    """Bytes of scratch this thread keeps between calls."""
    return _kept.nbytes


def clear() -> None:
    """Drop the scratch this thread keeps."""
    _kept.sets.clear()
    _kept.nbytes = 0


# Outputs of at least this many bytes take their memory from the kept blocks: the
# faults of smaller ones (a few) cost little next to the search of the blocks.
OUTPUT_MIN_BYTES = 64 << 10
# The kept blocks, those in use by live arrays included, take at most this many bytes,
# and are at most this many: an output searches them (about 0.1 us a block).
OUTPUTS_MAX_BYTES = 64 << 20
OUTPUTS_MAX_BLOCKS = 32
# A block may serve an output at most this much smaller than itself.
_OUTPUT_SLACK = 1.25

_blocks: list[np.ndarray] = []  # uint8 arrays that own the memory, oldest first
_sizes: list[int] = []  # the bytes each serves (ALIGNMENT - 1 fewer than it has)
_blocks_lock = threading.Lock()


def _refs(blocks: list[np.ndarray], i: int) -> int:
    return sys.getrefcount(blocks[i])


# Whether a block in use can be told apart (an interpreter without reference counts
# allocates every output anew), and the references to a block no array uses: the
# list's, and those of the call above.
_COUNTS_REFERENCES = hasattr(sys, "getrefcount")
_UNUSED_REFS = _refs([np.empty(0, np.uint8)], 0) if _COUNTS_REFERENCES else 0


def output(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A new array of `shape` and `dtype`, of any content as from np.empty; a large one
    on a kept block that no live array uses any more."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < OUTPUT_MIN_BYTES or not _COUNTS_REFERENCES:
        return np.empty(shape, dtype)
    with _blocks_lock:
        block = _take_block(nbytes)
    return _aligned(block, shape, dtype)


def _take_block(nbytes: int) -> np.ndarray:
    """The smallest unused kept block for nbytes to nbytes * _OUTPUT_SLACK, or a new one,
    kept if the bounds allow once unused blocks, oldest first, are dropped. A block for n
    bytes has ALIGNMENT - 1 more, for its aligned start."""
    best = -1
    for i, size in enumerate(_sizes):
        if nbytes <= size <= nbytes * _OUTPUT_SLACK and (best < 0 or size < _sizes[best]):
            if _refs(_blocks, i) == _UNUSED_REFS:
                best = i
    if best >= 0:
        _sizes.append(_sizes.pop(best))  # the most recently used last
        _blocks.append(_blocks.pop(best))
        return _blocks[-1]
    block = np.empty(nbytes + ALIGNMENT - 1, np.uint8)
    if nbytes <= OUTPUTS_MAX_BYTES:
        total = sum(_sizes) + nbytes
        i = 0
        while (total > OUTPUTS_MAX_BYTES or len(_blocks) >= OUTPUTS_MAX_BLOCKS) and i < len(_blocks):
            if _refs(_blocks, i) == _UNUSED_REFS:
                total -= _sizes.pop(i)
                del _blocks[i]
            else:
                i += 1
        if total <= OUTPUTS_MAX_BYTES and len(_blocks) < OUTPUTS_MAX_BLOCKS:
            _blocks.append(block)
            _sizes.append(nbytes)
    return block


def kept_output_bytes() -> int:
    """Bytes of the kept output blocks, in use or not."""
    with _blocks_lock:
        return sum(_sizes)


def clear_outputs() -> None:
    """Stop keeping output blocks (arrays on them stay valid)."""
    with _blocks_lock:
        _blocks.clear()
        _sizes.clear()
