"""What ``python -m lstm_c info`` reports: this build, its threads, the BLAS and the CPU.

`gather()` collects everything into a JSON-serialisable dict; `format_text()`
lays it out for people. Nothing here changes any state: thread counts are read,
never set.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# Candidate dtypes; `supported_dtypes()` keeps those the kernels compute natively.
_CANDIDATE_DTYPES = ("float16", "float32", "float64")


def gather() -> dict[str, Any]:
    """Everything `info` reports, as plain JSON-serialisable values.

    Returns
    -------
    dict
        Keys ``lstm_c`` (version), ``location`` (the imported package),
        ``python``, ``platform``, ``numpy``, ``scipy``, ``openmp``
        (``enabled``, ``max_threads``, ``omp_num_threads``, ``runtimes``),
        ``blas`` (one dict per BLAS library threadpoolctl finds loaded),
        ``cpu`` (``model``, ``machine``, ``logical_cpus``, ``usable_cpus``)
        and ``dtypes`` (the dtypes the kernels compute in).
    """
    import numpy
    import scipy

    import lstm_c
    from lstm_c import _lstm

    pools = _threadpools()
    return {
        "lstm_c": lstm_c.__version__,
        "location": str(Path(lstm_c.__file__).parent),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "openmp": {
            "enabled": bool(_lstm.openmp_enabled()),
            "max_threads": int(_lstm.omp_max_threads()),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "runtimes": [p for p in pools if p.get("user_api") == "openmp"],
        },
        # SciPy's first: lstm_c's kernels call BLAS through scipy.linalg.cython_blas.
        "blas": sorted(
            (p for p in pools if p.get("user_api") == "blas"), key=lambda p: p.get("package") != "scipy"
        ),
        "cpu": {
            "model": cpu_model(),
            "machine": platform.machine(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": usable_cpus(),
        },
        "dtypes": supported_dtypes(),
    }


def supported_dtypes() -> list[str]:
    """The dtypes a forward pass runs in natively, found by running a tiny one in each."""
    import numpy as np

    from lstm_c.functional import lstm_forward

    supported = []
    for name in _CANDIDATE_DTYPES:
        dtype = np.dtype(name)
        x = np.ones((1, 1, 1), dtype)
        w = np.ones((4, 1), dtype)
        try:
            y = lstm_forward(x, w, w, None, None, training=False)[0]
        except (TypeError, ValueError):
            continue
        if y.dtype == dtype:
            supported.append(name)
    return supported


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it, else the architecture."""
    model = None
    try:
        if sys.platform.startswith("linux"):
            model = _linux_cpu_model()
        elif sys.platform == "darwin":
            model = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        elif sys.platform == "win32":
            import winreg

            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
            model = str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()
    except (OSError, subprocess.SubprocessError):
        model = None
    return model or platform.processor() or platform.machine() or "unknown"


def _linux_cpu_model() -> str | None:
    fields: dict[str, str] = {}
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
    # x86 has "model name"; other architectures use other keys, or none at all.
    for key in ("model name", "cpu model", "hardware", "cpu", "processor"):
        value = fields.get(key, "")
        if value and not value.isdigit():
            return value
    return None


def usable_cpus() -> int | None:
    """CPUs this process may run on (affinity masks, cgroup-limited containers)."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count()
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def _threadpools() -> list[dict[str, Any]]:
    """threadpoolctl's view of the native thread pools loaded in this process.

    Each pool also gets ``package``: the Python package whose wheel ships the
    library (``scipy``, ``numpy``, ``lstm_c``), or None (a system or conda library).
    """
    from threadpoolctl import threadpool_info

    keep = (
        "user_api",
        "internal_api",
        "prefix",
        "version",
        "num_threads",
        "threading_layer",
        "architecture",
        "filepath",
    )
    pools = []
    for pool in threadpool_info():
        entry = {k: pool[k] for k in keep if k in pool}
        entry["package"] = _shipped_by(str(pool.get("filepath", "")))
        pools.append(entry)
    return pools


def _shipped_by(filepath: str) -> str | None:
    """The package whose folder (or its wheel's ``.libs``/``.dylibs`` folder) holds a library."""
    parts = Path(filepath).parts
    for package in ("scipy", "numpy", "lstm_c"):
        if any(part in (package, f"{package}.libs") for part in parts):
            return package
    return None


def format_text(info: dict[str, Any]) -> str:
    """`gather()`'s result laid out for a terminal."""
    omp = info["openmp"]
    cpu = info["cpu"]
    if omp["enabled"]:
        env = omp["omp_num_threads"]
        threads = (
            f"{omp['max_threads']} threads (OMP_NUM_THREADS={env})"
            if env
            else (f"{omp['max_threads']} threads (OMP_NUM_THREADS unset)")
        )
        runtimes = ", ".join(_pool_name(p) for p in omp["runtimes"])
        openmp = f"on, {threads}" + (f"; runtime {runtimes}" if runtimes else "")
    else:
        openmp = "off (built without OpenMP: the pointwise kernels run on one thread)"
    usable = cpu["usable_cpus"]
    cpus = f"{cpu['logical_cpus']} logical CPUs" + (
        f", {usable} usable by this process" if usable not in (None, cpu["logical_cpus"]) else ""
    )
    lines = [
        f"lstm_c {info['lstm_c']}  ({info['location']})",
        f"  Python   {info['python']} on {info['platform']}",
        f"  NumPy    {info['numpy']}, SciPy {info['scipy']}",
        f"  CPU      {cpu['model']} ({cpu['machine']}), {cpus}",
        f"  OpenMP   {openmp}",
    ]
    if info["blas"]:
        for k, pool in enumerate(info["blas"]):
            label = "  BLAS     " if k == 0 else "           "
            owner = f"{pool['package']}'s " if pool.get("package") else ""
            lines.append(
                f"{label}{owner}{_pool_name(pool)}, {pool.get('num_threads')} threads"
                f"  ({pool.get('filepath')})"
            )
    else:
        lines.append("  BLAS     not detected by threadpoolctl")
    lines.append(f"  dtypes   {', '.join(info['dtypes']) or 'none (the kernels failed to run)'}")
    return "\n".join(lines)


def _pool_name(pool: dict[str, Any]) -> str:
    name = pool.get("internal_api") or pool.get("prefix") or "?"
    if pool.get("prefix") and pool.get("prefix") != name:
        name = f"{pool['prefix']} ({name})"
    details = [str(pool[k]) for k in ("version", "threading_layer", "architecture") if pool.get(k)]
    return name + (" " + " ".join(details) if details else "")
