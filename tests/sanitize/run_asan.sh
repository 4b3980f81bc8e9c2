#!/usr/bin/env bash
# Memory safety: build lstm_c with AddressSanitizer and Cython bounds checks, then run
# the kernel tests against that build. Any out-of-bounds read or write, use after free
# or double free in the compiled code stops the run with the sanitizer's report.
#
# Usage:
#   bash tests/sanitize/run_asan.sh [PYTEST ARGS...]     e.g.  bash tests/sanitize/run_asan.sh -x -k layer
#   LSTM_C_RUN_SANITIZER=1 pytest tests/test_memory.py -m sanitizer    (the same, from pytest)
#
# What it does:
#   1. Copies the sources of the repository this script lives in (setup.py,
#      pyproject.toml, README.md, CHANGELOG.md, MANIFEST.in, src/, lstm_c/; no build/,
#      no generated C, no compiled modules) into a new temporary directory, so neither
#      the working tree nor its build/ folder ever holds sanitized objects.
#   2. Builds and installs that copy into the temporary directory (pip --target, no
#      dependencies; no build isolation when the Python has Cython, setuptools, numpy and
#      scipy, else pip fetches the build requirements of pyproject.toml) with
#        LSTM_C_DEBUG=1     Cython's boundscheck and initializedcheck on, -O0 -g (setup.py)
#        CFLAGS/LDFLAGS     -fsanitize=address -fno-omit-frame-pointer
#   3. Runs pytest, from the temporary directory, on the kernel tests: test_kernels.py,
#      test_functional.py, test_numerics.py, test_reference.py, test_validation.py,
#      test_validation_layer.py, test_blas_guard.py, test_layer.py, test_layer_edges.py,
#      test_stack.py, test_properties.py, test_threads.py and test_blas.py (helpers.py beside them), with
#        LD_PRELOAD=$(gcc -print-file-name=libasan.so)   the Python host is not built with
#                          ASan, so its runtime must be loaded first
#        ASAN_OPTIONS      detect_leaks=0 (CPython keeps objects alive at exit on purpose),
#                          exitcode=86 (tells a sanitizer report from a failed test),
#                          log_path (the report goes to a file, printed at the end: pytest
#                          captures stderr, and a stopped process never shows it)
#        LSTM_C_UNDER_SANITIZER=1   RSS tests skip themselves, and so do tests
#                          that import torch (its C++ exceptions and a preloaded ASan runtime
#                          do not mix: "CHECK failed ... real___cxa_throw")
#
# Needs: Linux, gcc with libasan, bash, and a Python (PYTHON, default python3) that has
# numpy, scipy, threadpoolctl, pytest and hypothesis installed (".[test]" does that).
# Environment: PYTHON selects the interpreter; LSTM_C_SOURCE builds another checkout;
# KEEP=1 keeps the temporary directory.
#
# Exit code: 0 when every test passed; pytest's code when a test failed; 86 when
# AddressSanitizer reported an error; 2 when the build failed.
# Time: about 40 s on 2 cores (10 s to build, 30 s to test), plus up to 60 s for each
# test that hangs or times out.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
source_dir="${LSTM_C_SOURCE:-$(cd "$here/../.." && pwd)}"
py="${PYTHON:-python3}"
started=$SECONDS

libasan="$(gcc -print-file-name=libasan.so)"
if [ ! -e "$libasan" ] || [ "$libasan" = "libasan.so" ]; then
    echo "run_asan.sh: gcc has no libasan.so (install libasan for this gcc)" >&2
    exit 2
fi
libasan="$(readlink -f "$libasan")"

work="$(mktemp -d "${TMPDIR:-/tmp}/lstm_c-asan.XXXXXX")"
cleanup() { if [ "${KEEP:-0}" = "0" ]; then rm -rf "$work"; else echo "kept $work"; fi; }
trap cleanup EXIT

echo "== [asan ${SECONDS}s] copying the sources of $source_dir"
mkdir -p "$work/src"
(
    cd "$source_dir"
    for f in setup.py pyproject.toml README.md CHANGELOG.md MANIFEST.in LICENSE NOTICE.md; do
        [ -e "$f" ] && cp "$f" "$work/src/"
    done
    mkdir -p "$work/src/src"
    cp src/*.pyx src/*.pxd src/*.h "$work/src/src/" 2>/dev/null || true
    # The package with its subpackages: sources and type information, nothing compiled.
    find lstm_c \( -name "*.py" -o -name "*.pyi" -o -name py.typed \) -not -path "*/__pycache__/*" \
        -exec cp --parents {} "$work/src/" \;
    mkdir -p "$work/tests"
    cp tests/*.py "$work/tests/"
)

echo "== [asan $((SECONDS - started))s] building with -fsanitize=address and LSTM_C_DEBUG=1"
sanitize="-fsanitize=address -fno-omit-frame-pointer"
isolation=()
if "$py" -c "import Cython, setuptools, numpy, scipy" 2>/dev/null; then
    isolation=(--no-build-isolation)  # build with what this Python has: fast, and offline
fi
if ! LSTM_C_DEBUG=1 CFLAGS="$sanitize ${CFLAGS:-}" LDFLAGS="$sanitize ${LDFLAGS:-}" \
    "$py" -m pip install "${isolation[@]}" --no-deps --quiet --target "$work/site" "$work/src" \
    >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    echo "run_asan.sh: the build failed" >&2
    exit 2
fi
compiled="$(ls "$work"/site/lstm_c/_lstm*.so)"
# ldd's output is captured before it is searched: with pipefail, `ldd | grep -q` fails
# whenever grep stops reading before ldd has finished writing (SIGPIPE).
dependencies="$(ldd "$compiled")"
if ! grep -q libasan <<<"$dependencies"; then
    echo "run_asan.sh: $compiled is not linked with libasan: CFLAGS/LDFLAGS did not reach the build" >&2
    exit 2
fi
echo "built $compiled"

echo "== [asan $((SECONDS - started))s] the kernel tests under AddressSanitizer"
cd "$work"
status=0
env \
    PYTHONPATH="$work/site" \
    LD_PRELOAD="$libasan${LD_PRELOAD:+:$LD_PRELOAD}" \
    ASAN_OPTIONS="detect_leaks=0:exitcode=86:abort_on_error=0:halt_on_error=1:log_path=$work/asan:${ASAN_OPTIONS:-}" \
    LSTM_C_UNDER_SANITIZER=1 \
    LSTM_C_RUN_SANITIZER=0 \
    "$py" -m pytest -p no:cacheprovider -p no:faulthandler -q \
        -m "not sanitizer" \
        tests/test_kernels.py tests/test_functional.py tests/test_numerics.py tests/test_reference.py \
        tests/test_validation.py tests/test_validation_layer.py tests/test_blas_guard.py \
        tests/test_layer.py tests/test_layer_edges.py tests/test_stack.py tests/test_properties.py \
        tests/test_threads.py tests/test_blas.py \
        "$@" || status=$?

shopt -s nullglob
reports=("$work"/asan.*)
if [ "${#reports[@]}" -gt 0 ]; then
    # pytest captures the tests' stderr, and a process the sanitizer stops never prints
    # it: the reports go to files (log_path), shown here.
    cat "${reports[@]}" >&2
    [ "$status" -ne 0 ] || status=86
fi
if [ "$status" -eq 86 ]; then
    echo "run_asan.sh: AddressSanitizer found an error (report above)" >&2
elif [ "$status" -ne 0 ]; then
    echo "run_asan.sh: tests failed (exit code $status)" >&2
fi
echo "== [asan $((SECONDS - started))s] done, exit code $status"
exit "$status"
