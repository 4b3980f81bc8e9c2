"""Thread counts for the kernels: OpenMP for the pointwise passes, BLAS for the GEMMs.

The kernels call BLAS only outside their parallel regions, so both pools may
use all the threads asked for, one after the other, never at the same time.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

from lstm_c import _lstm

_controller: Any = None


def resolve(num_threads: int | None) -> int:
    """The OpenMP thread count for a call: `num_threads`, else OpenMP's default."""
    return num_threads if num_threads is not None else _lstm.omp_max_threads()


def blas_limit(num_threads: int | None) -> ContextManager[Any]:
    """Limit SciPy's BLAS to `num_threads` for the duration of a call (no-op for None)."""
    global _controller
    if num_threads is None:
        return contextlib.nullcontext()
    if _controller is None:
        # Inspecting the loaded libraries is slow; do it once.
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=num_threads, user_api="blas")
