"""The benchmark suite's cases, the GEMM peak and the machine description.

Imported by the pytest-benchmark suite (`test_bench_lstm.py`), by `conftest.py`
and by `run.py`; it does not depend on pytest. What is compared, and how each
implementation is built from the same weights (named as in
`torch.nn.LSTM.state_dict()`), FLOP counts, the check against the NumPy
reference and the thread pinning are `lstm_c._cli.peers`, which
`python -m lstm_c bench` uses too.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_c._cli.info import cpu_model
from lstm_c._cli.peers import BUILDERS, DTYPES, Case

# Implementation ids, of `lstm_c._cli.peers.BUILDERS`.
IMPLS = tuple(BUILDERS)


def default_threads() -> int:
    """$LSTM_C_BENCH_THREADS, else lstm_c's default: the CPUs this process may use."""
    import lstm_c

    return int(os.environ.get("LSTM_C_BENCH_THREADS") or lstm_c.get_num_threads())


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class BenchCase(Case):
    """A case of the suite: which implementations run it, in which dtypes, in the quick subset."""

    impls: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # dtypes of this case in the quick subset
    note: str = ""
    dtypes: tuple[str, ...] = DTYPES


_SEQ = ("lstm_c", "reference", "torch")
_INFER = _SEQ + ("onnxruntime",)


def _cases() -> list[BenchCase]:
    cases: list[BenchCase] = []
    # Baidu DeepBench training set (I = H, one layer), cut to 2 cores.
    for H in (256, 512, 1024):
        for B in (16, 32, 64):
            T = 150 if H == 256 else 25
            impls = _SEQ + (("lstm_c_1thread",) if (H, B) == (512, 64) else ())
            quick = DTYPES if (H, B) == (512, 32) else ()
            cases.append(BenchCase(f"train_H{H}_B{B}_T{T}", "training", T, B, H, H, impls=impls,
                                   quick=quick, note="DeepBench training"))
    # DeepBench inference (server) set, the device case, a small-batch case.
    for H in (512, 1024):
        for B in (1, 4):
            quick = ("float32",) if (H, B) == (512, 4) else ()
            cases.append(BenchCase(f"infer_H{H}_B{B}_T25", "inference", 25, B, H, H, impls=_INFER,
                                   quick=quick, note="DeepBench inference"))
    cases.append(BenchCase("infer_H256_B1_T150", "inference", 150, 1, 256, 256, impls=_INFER,
                           note="DeepBench device"))
    cases.append(BenchCase("infer_H128_B1_T100", "inference", 100, 1, 128, 128, impls=_INFER,
                           quick=("float32",), note="small batch"))
    # The streaming step: one time step per call, state carried over.
    cases.append(BenchCase("step_H128_B1", "step", 1, 1, 128, 128,
                           impls=("lstm_c", "lstm_c_forward_t1", "reference", "torch", "onnxruntime"),
                           quick=DTYPES, note="LSTM.step"))
    # One stacked bidirectional case (through lstm_c.LSTM).
    cases.append(BenchCase("train_2L_bidir_H256_B32_T25", "training", 25, 32, 256, 256, layers=2,
                           bidirectional=True, impls=_SEQ, quick=("float32",), note="stacked bidirectional"))
    cases.append(BenchCase("infer_2L_bidir_H256_B32_T25", "inference", 25, 32, 256, 256, layers=2,
                           bidirectional=True, impls=_INFER, note="stacked bidirectional"))
    return cases


CASES: list[BenchCase] = _cases()
CASES_BY_NAME = {c.name: c for c in CASES}


# --------------------------------------------------------------------------- threads, peak, machine


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
        "cpu_model": cpu_model(),
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
