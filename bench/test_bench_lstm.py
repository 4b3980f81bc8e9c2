"""pytest-benchmark suite: lstm_c against the NumPy reference, PyTorch and ONNX Runtime.

One test per (case, dtype, pass, implementation). The implementations of a
case are interleaved: pass 0 runs each of them for a third of its rounds, pass
1 runs each again, then pass 2 (`--bench-passes`, default 3), so that a burst
of load on the machine is shared rather than landing on one implementation;
the report pools the rounds of all passes. The first test of an implementation
checks that it agrees with the NumPy reference (so the peers really got the
same weights) before anything is timed. Nothing here asserts a time.

    pytest bench/test_bench_lstm.py --bench-quick          # the quick subset
    pytest bench/test_bench_lstm.py --benchmark-json=out.json
"""

from __future__ import annotations

import math
import time

import pytest

pytest.importorskip("pytest_benchmark")

from lstm_bench import CASES, CASES_BY_NAME  # noqa: E402  (put on sys.path by conftest.py)

from lstm_c._cli import peers  # noqa: E402
from lstm_c._cli.peers import BUILDERS, LABELS, Unavailable  # noqa: E402


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" not in metafunc.fixturenames:
        return
    passes = max(1, metafunc.config.getoption("--bench-passes"))
    params = []
    for case in CASES:
        for dtype in case.dtypes:
            marks = [pytest.mark.quick] if dtype in case.quick else []
            for pass_index in range(passes):
                for impl in case.impls:
                    test_id = f"{case.name}-{dtype}-{impl}" + (f"-pass{pass_index}" if passes > 1 else "")
                    params.append(pytest.param(case.name, dtype, pass_index, impl, id=test_id, marks=marks))
    metafunc.parametrize("case_name, dtype, pass_index, impl", params)


# The current case: its inputs, the reference's outputs, the GEMM rate sampled before it, and
# each implementation's runner and round plan (built by its first test, reused by later passes).
_current: dict = {}


def _case_state(case, dtype, settings) -> dict:
    key = (case.name, dtype)
    if _current.get("key") != key:
        _current.clear()
        data = peers.make_data(case, dtype)
        _current.update(key=key, data=data, expected=peers.oracle(case, data),
                        gemm_rate=settings["sample_peak"](dtype), impls={})
    return _current


def _seconds_per_call(run, first: float) -> float:
    """Time a few untimed calls (the warm-up) until 0.1 s have passed; a slow first call suffices."""
    if first >= 0.25:
        return first
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= 0.1:
            return elapsed / calls


def _build(case, dtype, impl, state, settings) -> dict:
    """Build the runner, check it against the reference, warm it up and plan its rounds."""
    try:
        runner = BUILDERS[impl](case, state["data"], settings["threads"])
    except Unavailable as exc:
        return {"skip": str(exc)}
    start = time.perf_counter()
    first = runner.run()
    first_seconds = time.perf_counter() - start
    problem = peers.mismatch(runner.normalize(first), state["expected"], dtype)
    if problem is not None:
        return {"fail": f"{LABELS[impl]} disagrees with the NumPy reference on {case.name} {dtype}: {problem}"}
    del first
    per_call = _seconds_per_call(runner.run, first_seconds)
    # Rounds of at least 1 ms (several calls for the streaming step), enough to fill the budget,
    # spread over the passes.
    iterations = max(1, math.ceil(1e-3 / per_call))
    rounds = math.ceil(settings["budget"] / (per_call * iterations))
    rounds = min(settings["max_rounds"], max(settings["min_rounds"], rounds))
    return {"runner": runner, "per_call": per_call, "iterations": iterations,
            "rounds_per_pass": max(1, math.ceil(rounds / settings["passes"])), "fresh": True}


def test_lstm(benchmark, bench_settings, case_name, dtype, pass_index, impl):
    case = CASES_BY_NAME[case_name]
    state = _case_state(case, dtype, bench_settings)
    plan = state["impls"].get(impl)
    if plan is None:
        plan = state["impls"][impl] = _build(case, dtype, impl, state, bench_settings)
    if "skip" in plan:
        pytest.skip(plan["skip"])
    if "fail" in plan:
        pytest.fail(plan["fail"])
    runner = plan["runner"]
    if not plan.pop("fresh", False) and plan["per_call"] < 0.25:
        runner.run()  # warm up again: the other implementations ran since this one's last pass

    benchmark.group = f"{case.name} {dtype}"
    benchmark.extra_info.update(
        case=case.name, kind=case.kind, dtype=dtype, impl=impl, impl_label=LABELS[impl],
        T=case.T, B=case.B, I=case.I, H=case.H, layers=case.layers,
        bidirectional=case.bidirectional, shape=case.shape, note=case.note,
        flops=peers.flops(case), threads=1 if impl == "lstm_c_1thread" else bench_settings["threads"],
        gemm_gflops_before_case=state["gemm_rate"], pass_index=pass_index,
        passes=bench_settings["passes"],
    )
    benchmark.pedantic(runner.run, rounds=plan["rounds_per_pass"], iterations=plan["iterations"],
                       warmup_rounds=0)
