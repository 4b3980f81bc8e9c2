"""``python -m lstm_c``: each command, its --help, its usage errors, and the exit codes scripts rely on.

The CLI runs in a subprocess whose working directory is a temporary folder, so the
source tree is not on sys.path and the installed package is what runs. No test here
asserts how long anything takes: the bench tests check what it prints and counts.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from helpers import assert_identical

import lstm_c
from lstm_c._cli import demo, info, peers, quickbench
from lstm_c._cli import main as cli
from lstm_c._validation import MAX_THREADS

COMMANDS = ("info", "demo", "bench")


def run(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "lstm_c", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def assert_no_internal_words(text):
    """Nothing a user reads names our code or our plans: no _private names, no tracebacks."""
    assert "Traceback" not in text
    assert not re.search(r"(?<![\w-])_[a-z]\w*", text), text  # e.g. _positive_int
    assert not re.search(r"\bissue \d|\bseed doc|\bthe seed\b|\btargets?\b", text, re.IGNORECASE), text


def test_help_lists_the_commands_and_exit_codes(tmp_path):
    result = run(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for word in (*COMMANDS, "exit codes", "usage error", "130"):
        assert word in result.stdout
    assert_no_internal_words(result.stdout)


@pytest.mark.parametrize(
    "command, words",
    [
        ("info", ["OpenMP", "BLAS", "threadpoolctl", "dtypes", "--json"]),
        ("demo", ["day 1", "day 5", "StatQuest", "Long Short-Term Memory (LSTM), Clearly Explained"]),
        ("bench", ["--threads", "--budget", "--dtype", "the CPUs this process may use"]),
    ],
)
def test_each_command_has_its_own_help(tmp_path, command, words):
    result = run(tmp_path, command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m lstm_c {command}")
    for word in words:
        assert word in " ".join(result.stdout.split())  # help text wraps lines
    assert_no_internal_words(result.stdout)


def test_version(tmp_path):
    result = run(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lstm_c {lstm_c.__version__}"


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "args, words",
    [
        ((), ["required: COMMAND"]),
        (("nonsense",), ["invalid choice: 'nonsense'"]),
        (("INFO",), ["invalid choice: 'INFO'"]),
        (("--nonsense",), ["required: COMMAND"]),
        (("--nonsense", "info"), ["unrecognized arguments: --nonsense"]),
        (("info", "--bogus"), ["unrecognized arguments: --bogus"]),
        (("info", "--json", "extra"), ["unrecognized arguments: extra"]),
        (("info", "--json=yes"), ["--json"]),
        (("demo", "extra"), ["unrecognized arguments: extra"]),
        (("demo", "--json"), ["unrecognized arguments: --json"]),
        (("bench", "--threads", "abc"), ["--threads: expected a whole number of threads", "got 'abc'"]),
        (("bench", "--threads", "0"), ["--threads: expected a whole number of threads", "got '0'"]),
        (("bench", "--threads", "1.5"), ["--threads: expected a whole number of threads", "got '1.5'"]),
        (
            ("bench", "--threads", str(MAX_THREADS + 1)),
            [
                f"--threads: expected a whole number of threads from 1 to {MAX_THREADS}, got '{MAX_THREADS + 1}'"
            ],
        ),
        (("bench", "--threads"), ["--threads: expected one argument"]),
        (("bench", "--dtype", "float16"), ["--dtype: invalid choice: 'float16'"]),
        (("bench", "--budget", "-1"), ["--budget: expected a positive number of seconds, got '-1'"]),
        (("bench", "--budget", "soon"), ["--budget: expected a positive number of seconds, got 'soon'"]),
        (("bench", "--budget", "inf"), ["--budget: expected a positive number of seconds, got 'inf'"]),
        (("bench", "--budget", "nan"), ["--budget: expected a positive number of seconds, got 'nan'"]),
    ],
)
def test_usage_errors_exit_2_with_the_commands_own_usage(tmp_path, args, words):
    result = run(tmp_path, *args)
    assert result.returncode == cli.EXIT_USAGE == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    command = args[0] if args and args[0] in COMMANDS else None
    if command:
        assert result.stderr.startswith(f"usage: python -m lstm_c {command} [-h]"), result.stderr
        assert f"python -m lstm_c {command}: error: " in result.stderr
    else:
        assert result.stderr.startswith("usage: python -m lstm_c [-h]"), result.stderr
        assert "python -m lstm_c: error: " in result.stderr
    for word in words:
        assert word in result.stderr
    assert_no_internal_words(result.stderr)


# ----------------------------------------------------------------------------- info, demo


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
    gathered = json.loads(result.stdout)
    assert gathered["lstm_c"] == lstm_c.__version__
    assert gathered["openmp"]["enabled"] is lstm_c.openmp_enabled()
    assert gathered["openmp"]["omp_num_threads"] == "3"
    assert gathered["openmp"]["max_threads"] == (3 if lstm_c.openmp_enabled() else 1)
    assert gathered["dtypes"] == ["float32", "float64"]
    assert gathered["cpu"]["logical_cpus"] == os.cpu_count()
    assert gathered["cpu"]["model"] == info.cpu_model() != ""
    for pool in gathered["blas"]:
        assert pool["user_api"] == "blas" and pool["num_threads"] >= 1
    if sys.platform.startswith("linux"):
        # SciPy's wheels bundle OpenBLAS; threadpoolctl finds it once lstm_c is imported.
        assert gathered["blas"], "threadpoolctl found no BLAS"


def test_demo_prints_the_stock_example_and_cites_its_source(tmp_path):
    result = run(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    expected = io.StringIO()
    demo.run(expected)
    assert result.stdout == expected.getvalue()
    assert result.stderr == ""
    assert (
        "Hand-set weights from StatQuest's video \"Long Short-Term Memory (LSTM), Clearly "
        'Explained" (Josh Starmer)'
    ) in result.stdout
    assert "seed doc" not in result.stdout
    assert "StatQuest" in demo.__doc__


def test_a_failing_command_exits_1_with_the_error_on_stderr(monkeypatch, capsys):
    def broken():
        raise RuntimeError("no CPU today")

    monkeypatch.setattr(info, "gather", broken)
    assert cli.main(["info"]) == cli.EXIT_FAILURE == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "python -m lstm_c info: error: RuntimeError: no CPU today" in captured.err


# ----------------------------------------------------------------------------- bench

ROW = re.compile(r"^(training|inference) H=\d+ B=\d+ T=\d+ ")
CALLS = re.compile(r"(\d+) timed calls in all")


def default_threads(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import lstm_c; print(lstm_c.get_num_threads())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_bench_prints_each_row_as_soon_as_its_shape_is_done(tmp_path):
    """Piped, with the default threads: the title first, then each row while the others still run."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lstm_c", "bench", "--budget", "0.001"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if ROW.match(line):
                # Three more shapes to go: the process has not finished.
                assert process.poll() is None
                break
        rest, err = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert err == ""  # no progress bar: stderr is not a terminal
    lines += rest.splitlines()
    threads = default_threads(tmp_path)
    assert lines[0].startswith(f"lstm_c quick benchmark: float32, {threads} thread{'s' * (threads > 1)}, ")
    header = next(line for line in lines if line.startswith("shape"))
    assert "lstm_c" in header and "NumPy reference" in header and "x NumPy reference" in header
    rows = [line for line in lines if ROW.match(line)]
    assert len(rows) == len(quickbench.CASES) == 4
    assert all(" ms" in row or " s " in row for row in rows)
    # Every implementation of every shape was timed at least once (ONNX Runtime: inference only).
    installed = [i for i in quickbench.IMPLS if i not in peers.not_installed(quickbench.IMPLS)]
    cells = sum(
        1
        for case in quickbench.CASES
        for i in installed
        if not (i == "onnxruntime" and case.kind == "training")
    )
    assert int(CALLS.search(rest).group(1)) >= cells
    assert_no_internal_words("\n".join(lines))


def test_an_onnx_runtime_session_that_does_not_spin_gives_the_same_outputs():
    """bench/spinning.py's setting: the session option is set, and the results do not change."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    case = peers.Case("small", "inference", 5, 3, 4, 6)
    data = peers.make_data(case, "float32")
    spinning = peers.build_onnxruntime(case, data, 1)
    quiet = peers.build_onnxruntime(case, data, 1, spinning=False)
    (session,) = quiet.keep
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    expected = spinning.normalize(spinning.run())
    got = quiet.normalize(quiet.run())
    assert expected.keys() == got.keys()
    assert_identical([got[name] for name in expected], list(expected.values()), list(expected))


def test_bench_names_the_peers_that_are_not_installed(tmp_path):
    """Without PyTorch and ONNX Runtime: a line says so (CPU-only advice), and no column pretends."""
    shadow = tmp_path / "shadow"
    for name in ("torch", "onnxruntime"):
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by the test')\n")
    result = run(tmp_path, "bench", "--budget", "0.001", "--threads", "1", env={"PYTHONPATH": str(shadow)})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "PyTorch: not installed (for the CPU build: pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu)"
    ) in out
    assert "ONNX Runtime: not installed (pip install onnx onnxruntime)" in out
    assert "cuda" not in out.lower()
    header = next(line for line in out.splitlines() if line.startswith("shape"))
    assert "PyTorch" not in header and "ONNX Runtime" not in header
    assert len([line for line in out.splitlines() if ROW.match(line)]) == 4


class Terminal(io.StringIO):
    def isatty(self):
        return True


TINY = (peers.Case("tiny", "inference", 5, 1, 8, 8),)


def test_bench_progress_shows_only_what_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out, progress = io.StringIO(), Terminal()
    quickbench.run(out, progress, threads=1, budget=0.001, cases=TINY)
    assert "NumPy reference" in progress.getvalue()
    assert "PyTorch" not in progress.getvalue() and "ONNX Runtime" not in progress.getvalue()
    assert "PyTorch: not installed" in out.getvalue()


def test_bench_budget_sets_how_many_calls_are_timed():
    """Ten times the budget, many more timed calls (the count, not the seconds, is checked)."""
    counts = []
    for budget in (0.01, 0.1):
        out = io.StringIO()
        counts.append(
            quickbench.run(
                out, io.StringIO(), threads=1, budget=budget, cases=TINY, impls=("lstm_c", "reference")
            )
        )
        assert f"{counts[-1]} timed calls in all" in out.getvalue()
    assert counts[1] > 3 * counts[0] >= 3 * 2


def test_a_call_slower_than_the_budget_is_timed_once():
    calls = []
    timing = quickbench.time_calls(lambda: calls.append(1) or len(calls), 1e-12)
    assert (timing.calls, timing.first, len(calls)) == (1, 1, 1)
    calls.clear()
    timing = quickbench.time_calls(lambda: calls.append(1) or len(calls), 0.01)
    assert timing.calls >= 1 and timing.first == 1 and len(calls) == timing.calls + 1


def test_bench_ctrl_c_exits_130_with_one_line(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "lstm_c", "bench"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("lstm_c quick benchmark")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == cli.EXIT_INTERRUPTED == 130
    assert err == "python -m lstm_c: interrupted\n"
