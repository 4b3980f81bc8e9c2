"""The compiled extension: its sources and compiler/OpenMP flags (metadata lives in pyproject.toml).

Environment switches:
  LSTM_C_NO_OPENMP=1  build without OpenMP (kernels then run single-threaded)
  LSTM_C_DEBUG=1      turn Cython bounds checks back on and build without optimisation
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

USE_OPENMP = os.environ.get("LSTM_C_NO_OPENMP", "0") in ("", "0")
DEBUG = os.environ.get("LSTM_C_DEBUG", "0") not in ("", "0")


def openmp_flags(compiler_type: str) -> tuple[list[str], list[str]]:
    """(compile, link) flags that turn OpenMP on for this compiler."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp driver flag; libomp comes from LLVM (see [tool.cibuildwheel]).
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        # The flags depend on the environment switches, which setuptools does not
        # track: always recompile rather than reuse an object built with others.
        self.force = True
        compiler_type = self.compiler.compiler_type
        if compiler_type == "msvc":
            compile_args = ["/O2"]
        elif DEBUG:
            compile_args = ["-O0", "-g", "-fno-trapping-math"]
        else:
            # Portable code: never -march=native or -ffast-math in a wheel. The
            # pointwise kernels get wider vectors by runtime dispatch instead
            # (src/lstm_cell.h). -fno-trapping-math lets the compiler vectorise
            # their branch-free selects; it changes no result (no FP traps are
            # ever enabled), unlike -ffast-math. -g0 drops the debug information
            # Python's own CFLAGS ask for: it would quadruple the wheel.
            compile_args = ["-O3", "-fno-trapping-math", "-g0"]
        link_args: list[str] = []
        if USE_OPENMP:
            omp_compile, omp_link = openmp_flags(compiler_type)
            compile_args += omp_compile
            link_args += omp_link
        for ext in self.extensions:
            ext.extra_compile_args = compile_args
            ext.extra_link_args = link_args
        super().build_extensions()

    def run(self) -> None:
        super().run()
        # Also put the compiled modules next to the sources in lstm_c/: Python
        # started at the repository root imports that folder rather than the
        # installed copy, and it must find the kernels there too.
        if not self.inplace:
            self.copy_extensions_to_source()


extensions = [
    Extension(
        "lstm_c._lstm",
        sources=["src/_lstm.pyx"],
        include_dirs=["src"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": False,
            "initializedcheck": DEBUG,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
