"""The benchmark suite's cases, the FMA and GEMM peaks, and the machine description.

Imported by the pytest-benchmark suite (`test_bench_lstm.py`), by `conftest.py`
and by `report.py`'s readers; it does not depend on pytest. What is compared,
and how each implementation is built from the same weights (named as in
`torch.nn.LSTM.state_dict()`), FLOP counts, the check against the NumPy
reference and the thread pinning are `lstm_c._cli.peers`, which
`python -m lstm_c bench` uses too.

The main table is a grid: H × B × (inference, training) in float32 on each
thread count (and float64 training on a corner of it), against PyTorch, ONNX
Runtime (inference) and, on the largest thread count, the NumPy reference.
Around it: a few DeepBench shapes the grid lacks, a stacked bidirectional
case, the streaming step, and the coexistence cases (lstm_c right after
PyTorch and ONNX Runtime ran, against lstm_c after a pause).

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
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_c._cli.info import cpu_model
from lstm_c._cli.peers import BUILDERS, DTYPES, LABELS, Case, flops

HERE = os.path.dirname(os.path.abspath(__file__))

# The coexistence cases time each of these right after the other two ran, with no pause
# (id: the implementation's with AFTER_PEERS appended), after a pause and a warm-up call
# (the quiet time), and as the first call after a pause of PAUSE_BEFORE seconds, when
# its threads have gone to sleep (AFTER_PAUSE appended).
COEXISTING = ("lstm_c", "torch", "onnxruntime")
AFTER_PEERS = "_after_peers"
AFTER_PAUSE = "_after_pause"
PAUSE_BEFORE = 0.2


def base_impl(impl: str) -> str:
    """The implementation a column times: `impl` without AFTER_PEERS or AFTER_PAUSE."""
    return impl.removesuffix(AFTER_PEERS).removesuffix(AFTER_PAUSE)


def others(impl: str) -> tuple[str, ...]:
    """The implementations that run right before `impl` in its coexistence rounds."""
    return tuple(i for i in COEXISTING if i != impl)


# Implementation ids: those of `lstm_c._cli.peers.BUILDERS`, and the coexistence columns.
AFTER = (*(i + AFTER_PEERS for i in COEXISTING), *(i + AFTER_PAUSE for i in COEXISTING))
IMPLS = (*BUILDERS, *AFTER)
IMPL_LABELS = {
    **LABELS,
    **{
        i + AFTER_PEERS: f"{LABELS[i]} right after {' + '.join(LABELS[o] for o in others(i))}"
        for i in COEXISTING
    },
    **{i + AFTER_PAUSE: f"{LABELS[i]}, first call after a {PAUSE_BEFORE:g} s pause" for i in COEXISTING},
}


def default_threads() -> int:
    """$LSTM_C_BENCH_THREADS, else lstm_c's default: the CPUs this process may use."""
    import lstm_c

    return int(os.environ.get("LSTM_C_BENCH_THREADS") or lstm_c.get_num_threads())


def thread_counts(spec: str | None) -> tuple[int, ...]:
    """The thread counts to run, from "1,2" or "2"; default 1 and `default_threads()`."""
    if spec:
        counts = sorted({int(s) for s in spec.split(",") if s.strip()})
        if not counts or counts[0] < 1:
            raise ValueError(f"thread counts must be positive integers: {spec!r}")
        return tuple(counts)
    return tuple(sorted({1, default_threads()}))


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class BenchCase(Case):
    """A case of the suite: its thread count, which implementations run it, in which dtypes."""

    threads: int = 1
    group: str = "grid"  # grid, deepbench, stacked, step, coexist
    impls: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # dtypes of this case in the quick subset
    note: str = ""
    dtypes: tuple[str, ...] = ("float32",)

    @property
    def shape_key(self) -> tuple:
        """What the inputs and the reference's outputs depend on (not the thread count)."""
        return (self.kind, self.T, self.B, self.I, self.H, self.layers, self.bidirectional)


GRID_H = (32, 64, 128, 256, 512, 1024)
GRID_B = (1, 4, 16, 64, 256)
GRID_F64 = {(128, 4), (128, 64), (512, 4), (512, 64)}  # (H, B) of the float64 training cells
# The grid's quick cells, (kind, H, B), on every thread count.
GRID_QUICK = {("inference", 128, 4), ("inference", 512, 64), ("training", 64, 16), ("training", 512, 64)}
CALL_FLOPS = 5e9  # T is cut so that a call does at most about this much work: ~25-50 ms of lstm_c
T_MAX, T_MIN = 50, 5


def grid_T(kind: str, B: int, H: int) -> int:
    """T = 50, cut for the largest H·B so that one call stays near `CALL_FLOPS` (at least 5 steps)."""
    per_step = flops(Case("", kind, 1, B, H, H))
    return max(T_MIN, min(T_MAX, int(CALL_FLOPS // per_step)))


_SEQ = ("lstm_c", "torch")
_INFER = _SEQ + ("onnxruntime",)


def suite(threads: tuple[int, ...]) -> list[BenchCase]:
    """Every case, in running order: the grid (each shape on each thread count in turn), then the rest.

    The NumPy reference runs in the grid on the largest thread count only (the suite skips it
    where one call takes more than a second), and everywhere outside the grid. Cases outside
    the grid run on the largest thread count.
    """
    top = max(threads)
    cases: list[BenchCase] = []
    for H in GRID_H:
        for B in GRID_B:
            for kind, impls in (("inference", _INFER), ("training", _SEQ)):
                T = grid_T(kind, B, H)
                dtypes = ("float32", "float64") if kind == "training" and (H, B) in GRID_F64 else ("float32",)
                quick = ("float32",) if (kind, H, B) in GRID_QUICK else ()
                if kind == "training" and (H, B) == (128, 4):
                    quick = ("float64",)
                for n in threads:
                    name = f"grid_{kind[:5]}_H{H}_B{B}_T{T}_{n}t"
                    cases.append(
                        BenchCase(
                            name,
                            kind,
                            T,
                            B,
                            H,
                            H,
                            threads=n,
                            impls=impls + (("reference",) if n == top else ()),
                            quick=quick,
                            dtypes=dtypes,
                        )
                    )
    seq = _SEQ + ("reference",)
    # Baidu DeepBench's training shapes at B = 32 (the grid has B = 16 and 64), cut to 2 cores.
    for H in (256, 512, 1024):
        T = 150 if H == 256 else 25
        cases.append(
            BenchCase(
                f"deepbench_train_H{H}_B32_T{T}",
                "training",
                T,
                32,
                H,
                H,
                threads=top,
                group="deepbench",
                impls=seq,
                note="DeepBench training",
            )
        )
    # A stacked bidirectional model through lstm_c.LSTM, trained and run.
    for kind, prefix, peers in (("training", "train", seq), ("inference", "infer", seq + ("onnxruntime",))):
        cases.append(
            BenchCase(
                f"{prefix}_2L_bidir_H256_B32_T25",
                kind,
                25,
                32,
                256,
                256,
                layers=2,
                bidirectional=True,
                threads=top,
                group="stacked",
                impls=peers,
                note="stacked bidirectional",
            )
        )
    # The streaming step: one time step per call, state carried over.
    cases.append(
        BenchCase(
            "step_H128_B1",
            "step",
            1,
            1,
            128,
            128,
            threads=top,
            group="step",
            impls=("lstm_c", "lstm_c_forward_t1", "reference", "torch", "onnxruntime"),
            quick=("float32",),
            note="LSTM.step",
            dtypes=DTYPES,
        )
    )
    # Coexistence: each implementation after a pause against it right after the other two
    # ran, and as the first call after a pause.
    coexist = (
        ("inference", 50, 2, 96, 384, True),
        ("training", 60, 32, 64, 64, True),
        ("inference", grid_T("inference", 16, 256), 16, 256, 256, False),
        ("training", grid_T("training", 64, 512), 64, 512, 512, False),
    )
    for kind, T, B, I, H, quick_case in coexist:
        name = f"coexist_{kind[:5]}_H{H}_B{B}_T{T}" + (f"_I{I}" if I != H else "")
        cases.append(
            BenchCase(
                name,
                kind,
                T,
                B,
                I,
                H,
                threads=top,
                group="coexist",
                impls=(*COEXISTING, *AFTER),
                quick=("float32",) if quick_case else (),
                note="coexistence",
            )
        )
    return cases


# --------------------------------------------------------------------------- peaks


class FmaPeak:
    """The machine's FMA peak: bench/fma_peak.c, compiled at run time, run on N threads.

    `FmaPeak.build()` compiles it with gcc (-O3 -mavx2 -mfma -fopenmp) into a temporary
    directory; it returns None, with the reason in `FmaPeak.unavailable`, when gcc is
    absent, the compile fails or the CPU lacks AVX2/FMA (the suite then falls back to the
    GEMM peak). `measure` runs it with OMP_NUM_THREADS = threads and returns GFLOP/s.
    """

    unavailable: str | None = None

    def __init__(self, exe: str, tmpdir: str) -> None:
        self.exe = exe
        self.tmpdir = tmpdir

    @classmethod
    def build(cls) -> FmaPeak | None:
        gcc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("gcc")
        if gcc is None:
            cls.unavailable = "gcc is not installed"
            return None
        tmpdir = tempfile.mkdtemp(prefix="lstm_c_fma_peak_")
        exe = os.path.join(tmpdir, "fma_peak")
        cmd = [gcc, "-O3", "-mavx2", "-mfma", "-fopenmp", os.path.join(HERE, "fma_peak.c"), "-o", exe]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            error = proc.stderr.strip() if proc.returncode != 0 else None
        except (OSError, subprocess.SubprocessError) as exc:
            error = str(exc)
        if error is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
            cls.unavailable = f"bench/fma_peak.c did not compile: {error}"
            return None
        peak = cls(exe, tmpdir)
        try:
            peak.measure("float32", 1, million_iterations=1, repeats=1)
        except RuntimeError as exc:  # e.g. SIGILL: no AVX2/FMA on this CPU
            peak.close()
            cls.unavailable = str(exc)
            return None
        return peak

    def measure(self, dtype: str, threads: int, million_iterations: float = 50, repeats: int = 3) -> float:
        """GFLOP/s of the FMA loop on `threads` threads: the best of `repeats` runs."""
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "false"}
        arg = "f32" if dtype == "float32" else "f64"
        proc = subprocess.run(
            [self.exe, arg, str(million_iterations), str(repeats)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"the FMA peak loop failed (exit {proc.returncode}): {proc.stderr.strip()}"
                " — does this CPU have AVX2 and FMA?"
            )
        return float(proc.stdout.split()[0])

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


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
        _GEMM_OPERANDS[key] = (
            np.asfortranarray(rng.standard_normal((n, n)).astype(dtype)),
            np.asfortranarray(rng.standard_normal((n, n)).astype(dtype)),
            np.zeros((n, n), dtype, order="F"),
        )
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
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}
        ).stdout
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
                blas.append(
                    f"{lib.get('internal_api')} {lib.get('version')} "
                    f"({lib.get('architecture')}, {os.path.basename(lib.get('filepath', ''))})"
                )
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
        "thread_env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith(("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MKL_", "LSTM_C_"))
        },
    }
