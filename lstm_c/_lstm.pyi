# Type stubs for the compiled kernels (src/_lstm.pyx). Only lstm_c.functional
# calls forward/backward: they take preallocated, validated C-contiguous arrays
# (float32 or float64, all one dtype) and write their results into them, so they
# are typed loosely here; see their docstrings in src/_lstm.pyx for the layout.

from typing import Any

def openmp_enabled() -> bool:
    """Whether this build of lstm_c was compiled with OpenMP."""

def omp_max_threads() -> int:
    """OpenMP's default thread count (follows OMP_NUM_THREADS); 1 without OpenMP."""

def forward(*args: Any, **kwargs: Any) -> None:
    """Run one layer and direction over the sequence (results written into the outputs)."""

def backward(*args: Any, **kwargs: Any) -> None:
    """Backpropagate through one layer and direction (gradients written into the outputs)."""

def step(*args: Any, **kwargs: Any) -> None:
    """One time step of one layer for streaming inference (results written into the outputs)."""

def set_blas_thread_functions(get_address: int, set_address: int) -> None:
    """Use the BLAS's `int get(void)` and `void set(int)` at these addresses."""

def blas_threads() -> int:
    """The BLAS thread count, through the functions given to set_blas_thread_functions."""

def set_blas_threads(n: int) -> None:
    """Set the BLAS thread count, through the functions given to set_blas_thread_functions."""

def panel_width(dtype_size: int) -> int:
    """Values per packed panel row for this itemsize, or 0 where panels are not built."""

def set_interrupt_checks(enabled: bool) -> None:
    """Turn the kernels' checks for pending signals (Ctrl-C) on or off; for benchmarking."""

def interrupt_checks() -> bool:
    """Whether the kernels check for pending signals (see set_interrupt_checks)."""

def ensure_threads(n: int) -> None:
    """Check that a team of `n` threads can be created, before OpenMP tries (RuntimeError if not)."""
