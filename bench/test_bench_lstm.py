"""pytest-benchmark suite: lstm_c against PyTorch, ONNX Runtime and the NumPy reference.

One test per (case, dtype, pass, implementation); a case has one thread count
(the grid repeats each shape on each of `--bench-threads`). The
implementations of a case are interleaved: pass 0 runs each of them for a
third of its rounds, pass 1 runs each again, then pass 2 (`--bench-passes`,
default 3), so that a burst of load on the machine is shared rather than
landing on one implementation; the report pools the rounds of all passes.
Before each implementation's rounds the suite sleeps `--bench-pause` seconds
(default 0.2), so that the previous implementation's idle threads have
stopped spinning — except in the coexistence column, which measures lstm_c
right after PyTorch and ONNX Runtime ran. The first test of an implementation
checks that it agrees with the NumPy reference (so the peers really got the
same weights) before anything is timed. Nothing here asserts a time.

    pytest bench/test_bench_lstm.py --bench-quick          # the quick subset
    pytest bench/test_bench_lstm.py --benchmark-json=out.json -k "grid and 2t"
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict

import pytest

pytest.importorskip("pytest_benchmark")

from lstm_bench import (  # noqa: E402  (see conftest.py)
    AFTER_PAUSE,
    AFTER_PEERS,
    IMPL_LABELS,
    PAUSE_BEFORE,
    base_impl,
    others,
    suite,
    thread_counts,
)

from lstm_c._cli import peers  # noqa: E402
from lstm_c._cli.peers import BUILDERS, Unavailable  # noqa: E402

CASES_BY_NAME: dict = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" not in metafunc.fixturenames:
        return
    config = metafunc.config
    passes = max(1, config.getoption("--bench-passes"))
    params = []
    for case in suite(thread_counts(config.getoption("--bench-threads"))):
        CASES_BY_NAME[case.name] = case
        for dtype in case.dtypes:
            marks = [pytest.mark.quick] if dtype in case.quick else []
            for pass_index in range(passes):
                for impl in case.impls:
                    test_id = f"{case.name}-{dtype}-{impl}" + (f"-pass{pass_index}" if passes > 1 else "")
                    params.append(pytest.param(case.name, dtype, pass_index, impl, id=test_id, marks=marks))
    metafunc.parametrize("case_name, dtype, pass_index, impl", params)


# Inputs and the reference's outputs of the last few shapes (shared by a shape's thread counts).
_oracles: OrderedDict = OrderedDict()
# The current case: the peak sampled before it, and each implementation's runner and round plan
# (built by its first test, reused by later passes).
_current: dict = {}


def _case_state(case, dtype, settings) -> dict:
    key = (case.name, dtype)
    if _current.get("key") != key:
        _current.clear()
        shape = (case.shape_key, dtype)
        if shape not in _oracles:
            data = peers.make_data(case, dtype)
            start = time.perf_counter()
            expected = peers.oracle(case, data)
            _oracles[shape] = (data, expected, time.perf_counter() - start)
            while len(_oracles) > 4:
                _oracles.popitem(last=False)
        data, expected, reference_seconds = _oracles[shape]
        _current.update(
            key=key,
            data=data,
            expected=expected,
            reference_seconds=reference_seconds,
            peak_sample=settings["sample_peak"](dtype, case.threads),
            impls={},
        )
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


def _checked(case, dtype, impl, state) -> tuple[peers.Runner, float]:
    """The implementation's runner and its first call's seconds, after a check of that call's outputs."""
    runner = BUILDERS[impl](case, state["data"], case.threads)
    start = time.perf_counter()
    first = runner.run()
    seconds = time.perf_counter() - start
    problem = peers.mismatch(runner.normalize(first), state["expected"], dtype)
    if problem is not None:
        raise AssertionError(
            f"{IMPL_LABELS[impl]} disagrees with the NumPy reference on {case.name} {dtype}: {problem}"
        )
    return runner, seconds


def _peers_before(case, state, impl) -> tuple[list[str], object, float]:
    """The implementations that coexist with `impl` (lstm_bench.others) on the case's shape
    (ONNX Runtime: its inference), run one after the other.

    Returns the peers found, a function that runs each of them once, and that function's seconds.
    """
    runs, names = [], []
    for peer in others(impl):
        peer_case = dataclasses.replace(case, kind="inference") if peer == "onnxruntime" else case
        try:
            runner = BUILDERS[peer](peer_case, state["data"], case.threads)
        except Unavailable:
            continue
        runner.run()
        runs.append(runner.run)
        names.append(peer)

    def run_peers() -> None:
        for run in runs:
            run()

    start = time.perf_counter()
    run_peers()
    return names, run_peers, time.perf_counter() - start


# Rounds of a first call after a pause (each round one pause and one call).
AFTER_PAUSE_ROUNDS = 12


def _build(case, dtype, impl, state, settings) -> dict:
    """Build the runner, check it against the reference, warm it up and plan its rounds."""
    if impl == "reference" and state["reference_seconds"] > settings["reference_limit"]:
        return {
            "skip": f"the NumPy reference takes {state['reference_seconds']:.2g} s per call here "
            f"(over the {settings['reference_limit']:g} s limit)"
        }
    try:
        runner, first_seconds = _checked(case, dtype, base_impl(impl), state)
    except Unavailable as exc:
        return {"skip": str(exc)}
    except AssertionError as exc:
        return {"fail": str(exc)}
    per_call = _seconds_per_call(runner.run, first_seconds)
    plan = {"runner": runner, "per_call": per_call, "fresh": True}
    if impl.endswith(AFTER_PEERS):
        names, run_peers, peers_seconds = _peers_before(case, state, impl.removesuffix(AFTER_PEERS))
        if not names:
            return {"skip": "neither PyTorch nor ONNX Runtime is installed"}
        # One call per round, right after the peers' calls (pytest-benchmark's setup).
        plan.update(iterations=1, peers_before=names, setup=run_peers, round_seconds=per_call + peers_seconds)
    elif impl.endswith(AFTER_PAUSE):
        # One call per round, after the pause (pytest-benchmark's setup); a fixed number of
        # rounds, since the pauses, not the calls, take the time.
        plan.update(iterations=1, setup=lambda: time.sleep(PAUSE_BEFORE), round_seconds=None)
        plan["rounds_per_pass"] = max(1, math.ceil(AFTER_PAUSE_ROUNDS / settings["passes"]))
        return plan
    else:
        # Rounds of at least 1 ms (several calls for the streaming step).
        iterations = max(1, math.ceil(1e-3 / per_call))
        plan.update(iterations=iterations, setup=None, round_seconds=per_call * iterations)
    rounds = math.ceil(settings["budget"] / plan["round_seconds"])
    rounds = min(settings["max_rounds"], max(settings["min_rounds"], rounds))
    plan["rounds_per_pass"] = max(1, math.ceil(rounds / settings["passes"]))
    return plan


def test_lstm(benchmark, bench_settings, case_name, dtype, pass_index, impl):
    case = CASES_BY_NAME[case_name]
    bench_settings["pin"](case.threads)
    state = _case_state(case, dtype, bench_settings)
    plan = state["impls"].get(impl)
    if plan is None:
        plan = state["impls"][impl] = _build(case, dtype, impl, state, bench_settings)
    if "skip" in plan:
        pytest.skip(plan["skip"])
    if "fail" in plan:
        pytest.fail(plan["fail"])
    runner = plan["runner"]
    if not impl.endswith((AFTER_PEERS, AFTER_PAUSE)):
        # Let the previous implementation's threads go idle, then warm up again (unless just built).
        time.sleep(bench_settings["pause"])
        if not plan.pop("fresh", False) and plan["per_call"] < 0.25:
            runner.run()

    benchmark.group = f"{case.name} {dtype}"
    benchmark.extra_info.update(
        case=case.name,
        group=case.group,
        kind=case.kind,
        dtype=dtype,
        impl=impl,
        impl_label=IMPL_LABELS[impl],
        T=case.T,
        B=case.B,
        I=case.I,
        H=case.H,
        layers=case.layers,
        bidirectional=case.bidirectional,
        shape=case.shape,
        note=case.note,
        flops=peers.flops(case),
        threads=1 if impl == "lstm_c_1thread" else case.threads,
        pass_index=pass_index,
        passes=bench_settings["passes"],
        peak_sample_before_case=state["peak_sample"],
        peak_kind=bench_settings["peak_kind"],
        peers_before=plan.get("peers_before"),
    )
    benchmark.pedantic(
        runner.run,
        setup=plan["setup"],
        rounds=plan["rounds_per_pass"],
        iterations=plan["iterations"],
        warmup_rounds=0,
    )
