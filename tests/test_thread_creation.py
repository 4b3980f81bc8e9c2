"""_lstm.ensure_threads: a team that cannot be created is a RuntimeError, not an exit.

libgomp ends the process ("libgomp: Thread creation failed") when it cannot
create a parallel region's threads; ensure_threads creates them first, the
way OpenMP would, and raises instead. The failures are provoked in a child
process under a low address-space limit (RLIMIT_AS), where thread stacks no
longer fit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from lstm_c import _lstm

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.environ.get("LSTM_C_UNDER_SANITIZER", "0") not in ("", "0"),
    reason="needs Linux's RLIMIT_AS (AddressSanitizer reserves terabytes of address space)",
)

CHILD = textwrap.dedent(
    """
    import resource, sys

    from lstm_c import _lstm

    def address_space():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))

    # 64 MiB more than the process maps now: too little for many thread stacks.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + (64 << 20), hard))
    for n in map(int, sys.argv[1:]):
        try:
            _lstm.ensure_threads(n)
            print(n, "ok", sep="\\t")
        except RuntimeError as e:
            print(n, "RuntimeError", e, sep="\\t")
    print("alive")
    """
)


def run_child(tmp_path, *counts: int, **stack_env: str) -> dict[int, list[str]]:
    """{n: ["ok"] or ["RuntimeError", message]} for ensure_threads(n) under the limit."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_STACKSIZE", "GOMP_STACKSIZE")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, counts)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, **stack_env},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert "alive" in lines, proc.stdout  # the process went on after the failures
    return {int(line.split("\t")[0]): line.split("\t")[1:] for line in lines if line and line != "alive"}


@linux_only
def test_too_many_threads_raise_and_the_process_survives(tmp_path):
    outcome = run_child(tmp_path, 60)[60]
    assert outcome[0] == "RuntimeError"
    message = outcome[1]
    assert "60 threads" in message and "set_num_threads" in message and "OMP_NUM_THREADS" in message


@linux_only
def test_the_stack_size_openmp_would_use_is_honoured(tmp_path):
    # One more thread, with OMP_STACKSIZE's stack: 1 GiB cannot fit, 256 KiB can
    # (a bare number counts KiB, as in the OpenMP specification).
    assert run_child(tmp_path, 2, OMP_STACKSIZE="1G")[2][0] == "RuntimeError"
    assert run_child(tmp_path, 2, OMP_STACKSIZE="256")[2] == ["ok"]
    assert run_child(tmp_path, 2, OMP_STACKSIZE=" 300 k ", GOMP_STACKSIZE="1G")[2] == ["ok"]
    assert run_child(tmp_path, 2, GOMP_STACKSIZE="1g")[2][0] == "RuntimeError"


def test_threads_that_can_be_created_pass():
    _lstm.ensure_threads(0)
    _lstm.ensure_threads(1)
    _lstm.ensure_threads(4)
    _lstm.ensure_threads(3)  # fewer than verified: nothing to do
