"""``python -m lstm_c``: each command, its --help, and the exit codes scripts rely on.

The CLI runs in a subprocess whose working directory is a temporary folder, so the
source tree is not on sys.path and the installed package is what runs.
"""

import io
import json
import os
import subprocess
import sys

import pytest

import lstm_c
from lstm_c import __main__ as cli
from lstm_c import _demo


def run(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "lstm_c", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_commands_and_exit_codes(tmp_path):
    result = run(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for word in ("info", "demo", "exit codes", "usage error"):
        assert word in result.stdout


@pytest.mark.parametrize("command, words", [
    ("info", ["OpenMP", "BLAS", "threadpoolctl", "dtypes", "--json"]),
    ("demo", ["day 1", "day 5"]),
])
def test_each_command_has_its_own_help(tmp_path, command, words):
    result = run(tmp_path, command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m lstm_c {command}")
    for word in words:
        assert word in result.stdout


def test_version(tmp_path):
    result = run(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lstm_c {lstm_c.__version__}"


@pytest.mark.parametrize("args", [(), ("nonsense",), ("info", "--nonsense"), ("demo", "extra")])
def test_usage_errors_exit_2(tmp_path, args):
    result = run(tmp_path, *args)
    assert result.returncode == cli.EXIT_USAGE == 2
    assert "usage: python -m lstm_c" in result.stderr
    assert result.stdout == ""


def test_info_text(tmp_path):
    result = run(tmp_path, "info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"lstm_c {lstm_c.__version__}")
    for label in ("Python", "NumPy", "CPU", "OpenMP", "BLAS", "dtypes"):
        assert f"  {label} " in out
    assert "float32, float64" in out
    assert ("OpenMP   on," if lstm_c.openmp_enabled() else "OpenMP   off") in out


def test_info_json_is_what_the_library_reports(tmp_path):
    result = run(tmp_path, "info", "--json", env={"OMP_NUM_THREADS": "3"})
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["lstm_c"] == lstm_c.__version__
    assert info["openmp"]["enabled"] is lstm_c.openmp_enabled()
    assert info["openmp"]["omp_num_threads"] == "3"
    assert info["openmp"]["max_threads"] == (3 if lstm_c.openmp_enabled() else 1)
    assert info["dtypes"] == ["float32", "float64"]
    assert info["cpu"]["logical_cpus"] == os.cpu_count()
    assert isinstance(info["cpu"]["model"], str) and info["cpu"]["model"]
    for pool in info["blas"]:
        assert pool["user_api"] == "blas" and pool["num_threads"] >= 1
    if sys.platform.startswith("linux"):
        # SciPy's wheels bundle OpenBLAS; threadpoolctl finds it once lstm_c is imported.
        assert info["blas"], "threadpoolctl found no BLAS"


def test_demo_prints_the_seed_example(tmp_path):
    result = run(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    expected = io.StringIO()
    _demo.run(expected)
    assert result.stdout == expected.getvalue()
    assert result.stderr == ""


def test_a_failing_command_exits_1_with_the_error_on_stderr(monkeypatch, capsys):
    from lstm_c import _info

    def broken():
        raise RuntimeError("no CPU today")

    monkeypatch.setattr(_info, "gather", broken)
    assert cli.main(["info"]) == cli.EXIT_FAILURE == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "python -m lstm_c info: error: RuntimeError: no CPU today" in captured.err


def test_bench_prints_a_table_against_the_reference(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lstm_c", "bench", "--budget", "0.05", "--threads", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("lstm_c quick benchmark: float32, 1 threads")
    header = next(line for line in lines if line.startswith("shape"))
    assert "lstm_c" in header and "NumPy reference" in header and "x NumPy reference" in header
    rows = [line for line in lines if line.startswith(("training", "inference"))]
    assert len(rows) == 4
    assert all(" ms" in row or " s " in row for row in rows)


def test_bench_rejects_bad_options(tmp_path):
    for args in (["--threads", "0"], ["--dtype", "float16"], ["--budget", "-1"]):
        done = subprocess.run([sys.executable, "-m", "lstm_c", "bench", *args],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2, args
        assert "usage" in done.stderr
