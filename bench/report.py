"""Turn a pytest-benchmark JSON from the suite into bench/RESULTS.md and bench/results.png.

    python bench/report.py bench/results.json [--md bench/RESULTS.md] [--png bench/results.png]

The Markdown opens with the targets (does each hold, from the numbers), then,
per (kind, dtype, thread count) of the grid, lstm_c's speed ratio to the best
peer per (H, B) and a table of medians, GFLOP/s, % of the FMA peak measured in
the same run and the ratio to each peer; then thread scaling, the coexistence
cases and the cases outside the grid. The chart is one heatmap per (kind,
dtype, thread count) of the ratio to the best peer (matplotlib, optional:
without it only the Markdown is written).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

# What each implementation is called: the suite's labels; where lstm_c is not importable,
# `load` takes them from the JSON (impl_label).
try:
    sys.path.insert(0, HERE)
    from lstm_bench import IMPL_LABELS as _SUITE_LABELS
    from lstm_bench import PAUSE_BEFORE as _PAUSE_BEFORE
except ImportError:
    _SUITE_LABELS, _PAUSE_BEFORE = {}, None
LABELS: dict[str, str] = dict(_SUITE_LABELS)

# Column order.
IMPLS = ("lstm_c", "lstm_c_forward_t1", "torch", "onnxruntime", "reference", "lstm_c_1thread")
SHORT = {
    "reference": "reference",
    "torch": "PyTorch",
    "onnxruntime": "ORT",
    "lstm_c_forward_t1": "lstm_forward T=1",
}
INITIALS = {"reference": "ref", "torch": "PT", "onnxruntime": "ORT"}
PEERS = ("torch", "onnxruntime", "reference")  # the contenders of the grid ("best peer": the fastest)
KINDS = ("inference", "training")
KIND_TITLES = {
    "training": "Training (forward + backward with input and weight gradients)",
    "inference": "Inference (forward only)",
    "step": "Streaming step (B = 1, one time step per call)",
}
NOISY = 0.10  # IQR / median above this gets a mark
BUSY = 0.75  # a case whose preceding peak sample ran below this fraction of the peak gets a mark


# --------------------------------------------------------------------------- loading


def _quartiles(data: list[float]) -> tuple[float, float, float]:
    if len(data) == 1:
        return data[0], data[0], data[0]
    q1, q2, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return q1, q2, q3


def load(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (one per case, dtype and implementation; the rounds of all passes pooled) and the machine info."""
    with open(path) as f:
        doc = json.load(f)
    machine = dict(doc.get("machine_info", {}).get("lstm_c_bench") or {})
    pooled: dict[tuple[str, str, str], dict[str, Any]] = {}
    for bench in doc.get("benchmarks", []):
        info = dict(bench.get("extra_info") or {})
        if "impl" not in info:
            continue
        stats = bench["stats"]
        LABELS.setdefault(info["impl"], info.get("impl_label") or info["impl"])
        row = pooled.setdefault(
            (info["case"], info["dtype"], info["impl"]), {**info, "data": [], "medians": []}
        )
        row["data"] += stats.get("data") or []
        row["medians"].append(stats["median"])
    rows = []
    for row in pooled.values():
        data = row.pop("data") or row["medians"]  # without raw data: the passes' medians
        q1, median, q3 = _quartiles(sorted(data))
        row.update(median=median, iqr=q3 - q1, rounds=len(data), gflops=row["flops"] / median / 1e9)
        row.setdefault("group", "other")
        row["peak"], row["peak_name"] = peak_of(machine, row["threads"], row["dtype"])
        rows.append(row)
    machine.setdefault("date", doc.get("datetime"))
    commit = doc.get("commit_info") or {}
    if all(c in "0123456789abcdef" for c in str(commit.get("id") or "x")):
        machine["commit"] = commit["id"][:10] + (" + uncommitted changes" if commit.get("dirty") else "")
    return rows, machine


def peak_of(machine: dict, threads: int, dtype: str) -> tuple[float | None, str]:
    """The peak GFLOP/s a figure is a fraction of: the FMA peak, else (no gcc) the GEMM peak."""
    for key, name in (("fma_peak_gflops", "FMA"), ("gemm_peak_gflops", "GEMM")):
        value = ((machine.get(key) or {}).get(str(threads)) or {}).get(dtype)
        if value:
            return value, name
    return None, "FMA"


def index(rows: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """{(case, dtype): {impl: row}} in first-seen (suite) order."""
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        out.setdefault((r["case"], r["dtype"]), {})[r["impl"]] = r
    return out


def grid_sections(rows: list[dict]) -> dict[tuple[str, str, int], dict[tuple[int, int], dict[str, dict]]]:
    """The grid: {(kind, dtype, threads): {(H, B): {impl: row}}}, in the report's order."""
    found: dict[tuple[str, str, int], dict[tuple[int, int], dict[str, dict]]] = {}
    for (_, dtype), impls in index([r for r in rows if r["group"] == "grid"]).items():
        any_row = next(iter(impls.values()))
        key = (any_row["kind"], dtype, any_row["threads"])
        found.setdefault(key, {})[(any_row["H"], any_row["B"])] = impls
    order = sorted(found, key=lambda k: (KINDS.index(k[0]) if k[0] in KINDS else 9, k[1], -k[2]))
    return {k: dict(sorted(found[k].items())) for k in order}


def ratio(peer: dict | None, ours: dict | None) -> float | None:
    """Peer's median over lstm_c's: above 1, lstm_c is faster."""
    if peer is None or ours is None:
        return None
    return peer["median"] / ours["median"]


def best_peer(impls: dict[str, dict]) -> tuple[str | None, float | None]:
    """The fastest peer of a cell and lstm_c's speed ratio to it."""
    present = [p for p in PEERS if p in impls]
    if not present or "lstm_c" not in impls:
        return None, None
    best = min(present, key=lambda p: impls[p]["median"])
    return best, ratio(impls[best], impls["lstm_c"])


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


# --------------------------------------------------------------------------- formatting


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_cell(row: dict | None) -> str:
    if row is None:
        return "—"
    mark = "\\*" if row["median"] > 0 and row["iqr"] / row["median"] > NOISY else ""
    return fmt_time(row["median"]) + mark


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def fmt_rate(row: dict | None) -> str:
    """GFLOP/s and the fraction of the peak: "45.1 (39%)"."""
    if row is None:
        return "—"
    share = f" ({100 * row['gflops'] / row['peak']:.0f}%)" if row.get("peak") else ""
    return f"{row['gflops']:.3g}{share}"


def busy(row: dict) -> bool:
    """Whether the peak sampled just before the case ran well below the peak: a busy machine."""
    sample, peak = row.get("peak_sample_before_case"), row.get("peak")
    return bool(sample and peak and sample < BUSY * peak)


def machine_lines(m: dict) -> list[str]:
    cores, cpus = m.get("cores"), m.get("cpus")
    cpu = f"**{m.get('cpu_model', 'unknown CPU')}**"
    if cores or cpus:
        cpu += f", {cores} cores / {cpus} hardware threads"
    if m.get("hypervisor"):
        cpu += f" ({m['hypervisor']} guest)"
    caches = ", ".join(f"{k.upper()} {m[k]}" for k in ("l2", "l3") if m.get(k))
    lines = [f"- Machine: {cpu}" + (f"; {caches}" if caches else "")]
    date = (m.get("date") or "")[:16].replace("T", " ")
    threads = m.get("bench_threads")
    shown = ", ".join(map(str, threads)) if isinstance(threads, list) else str(threads)
    lines.append(
        f"- Date: {date}; thread counts **{shown}**, each used by every implementation"
        + ("; **quick subset**" if m.get("quick") else "; full suite")
        + (f"; commit {m['commit']}" if m.get("commit") else "")
    )
    fma, gemm = m.get("fma_peak_gflops") or {}, m.get("gemm_peak_gflops") or {}
    for n in sorted(set(fma) | set(gemm), key=int):
        parts = []
        if fma.get(n):
            parts.append(
                f"FMA peak {fma[n].get('float32', 0):.0f} (float32) / {fma[n].get('float64', 0):.0f} "
                "(float64) GFLOP/s"
            )
        if gemm.get(n):
            parts.append(
                f"SciPy SGEMM {gemm[n].get('float32', 0):.0f} / DGEMM {gemm[n].get('float64', 0):.0f} GFLOP/s"
            )
        lines.append(f"- {n} thread{'s' if int(n) > 1 else ''}: " + "; ".join(parts))
    if fma:
        lines.append(
            "- The FMA peak is measured by the suite in the same run: register-only FMA loops "
            "(`bench/fma_peak.c`, 256-bit and, where the CPU has AVX-512, 512-bit, the faster counting; "
            "compiled with gcc at run time), best of the runs at the start and the end. "
            "`% peak` is a figure's share of it."
        )
    else:
        lines.append(
            "- **No FMA peak was measured** ("
            + (m.get("fma_peak_note") or "unknown reason")
            + "): `% peak` is a share of the GEMM peak instead (SciPy's 2048×2048 GEMM, itself below "
            "the FMA peak, so these percentages read high)."
        )
    if m.get("blas"):
        lines.append("- BLAS: " + "; ".join(m["blas"]))
    versions = m.get("versions") or {}
    if versions:
        lines.append(
            "- Versions: "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + (f", Python {m['python']}" if m.get("python") else "")
        )
    env = m.get("thread_env") or {}
    lines.append(
        "- Thread environment: "
        + (
            ", ".join(f"`{k}={v}`" for k, v in env.items())
            or "none set (OMP_WAIT_POLICY etc. at their defaults)"
        )
    )
    loads = [m.get("load_average_start"), m.get("load_average")]
    if any(loads):
        shown = " → ".join(f"{la[0]:.1f}" for la in loads if la)
        lines.append(
            f"- Load average (1 min) at start → end: {shown}"
            + (
                " — **the machine was busy: treat these numbers as noisy**"
                if max(la[0] for la in loads if la) > 0.5 * (cpus or 1) + 0.5
                else ""
            )
        )
    return lines


def table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(r) + " |" for r in body
    ]


# --------------------------------------------------------------------------- targets


def _threads_label(n: int) -> str:
    return f"{n} thread" + ("s" if n > 1 else "")


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("yes" if ok else "**no**")


def targets(rows: list[dict]) -> list[list[str]]:
    """[target, measured, holds?] for each target and thread count, from the numbers."""
    grid = grid_sections(rows)
    out: list[list[str]] = []

    def vs_peer(
        kind: str,
        dtype: str,
        peer: str,
        *,
        every: float | None = None,
        mean: float | None = None,
        where=lambda H, B: True,
        what: str = "",
    ) -> None:
        for (k, dt, n), cells in grid.items():
            if (k, dt) != (kind, dtype):
                continue
            found = [
                (ratio(c.get(peer), c.get("lstm_c")), H, B) for (H, B), c in cells.items() if where(H, B)
            ]
            found = [f for f in found if f[0] is not None]
            label = f"{kind.capitalize()}, {dtype}, {_threads_label(n)}{what}: "
            if every is not None:
                worst = min(found, default=None)
                measured = (
                    "—" if worst is None else f"slowest shape {worst[0]:.2f}× (H={worst[1]} B={worst[2]})"
                )
                goal = (
                    f"at least {every:g}× {LABELS[peer]}'s speed"
                    if every != 1
                    else f"at least as fast as {LABELS[peer]}"
                )
                out.append(
                    [
                        label + goal + " on every shape",
                        measured,
                        _verdict(None if worst is None else worst[0] >= every),
                    ]
                )
            if mean is not None:
                g = geomean([f[0] for f in found])
                out.append(
                    [
                        label
                        + f"on average (geometric mean over {len(found)} shape{'s' if len(found) > 1 else ''}) at least {mean:g}× "
                        f"{LABELS[peer]}'s speed",
                        "—" if g is None else f"{g:.2f}×",
                        _verdict(None if g is None else g >= mean),
                    ]
                )

    vs_peer("inference", "float32", "onnxruntime", every=1.0, mean=1.2)
    vs_peer("inference", "float32", "torch", mean=1.5)
    vs_peer("training", "float32", "torch", every=1.0, mean=1.15)
    vs_peer(
        "training", "float32", "torch", mean=1.5, where=lambda H, B: H <= 128, what=", small models (H ≤ 128)"
    )
    vs_peer("training", "float64", "torch", mean=2.0)
    for (k, dt, n), cells in grid.items():
        if (k, dt) != ("training", "float32"):
            continue
        big = [
            (c["lstm_c"]["gflops"] / c["lstm_c"]["peak"], H, B, c["lstm_c"]["peak_name"])
            for (H, B), c in cells.items()
            if H >= 512 and B >= 32 and "lstm_c" in c and c["lstm_c"]["peak"]
        ]
        worst = min(big, default=None)
        name = worst[3] if worst else "FMA"
        out.append(
            [
                f"Training, float32, {_threads_label(n)}, large shapes (H ≥ 512, B ≥ 32): at least 85% of "
                f"the {name} peak",
                "—" if worst is None else f"lowest {100 * worst[0]:.0f}% (H={worst[1]} B={worst[2]})",
                _verdict(None if worst is None else worst[0] >= 0.85),
            ]
        )
    step = [
        r
        for r in rows
        if r["impl"] == "lstm_c"
        and r["kind"] == "step"
        and r["dtype"] == "float32"
        and r["B"] == 1
        and r["H"] == 128
    ]
    out.append(
        [
            "Streaming step, `LSTM.step` at B=1, H=128, float32: at most 5 µs per step",
            "—" if not step else fmt_time(step[0]["median"]),
            _verdict(None if not step else step[0]["median"] <= 5e-6),
        ]
    )
    for n, speedups in thread_scaling(rows).items():
        target = [(s, H, B) for (H, B), (s, _, _) in speedups.items() if H >= 256 and B >= 16]
        worst = min(target, default=None)
        out.append(
            [
                f"Training, float32, H ≥ 256 and B ≥ 16: {_threads_label(n)} at least 1.85× as fast as 1 thread "
                "on every such shape",
                "—" if worst is None else f"lowest {worst[0]:.2f}× (H={worst[1]} B={worst[2]})",
                _verdict(None if worst is None else worst[0] >= 1.85),
            ]
        )
    shares = [s for s, _, _ in coexistence(rows)]
    peers = {LABELS.get(p, p): coexistence_shares(rows, p).values() for p in ("torch", "onnxruntime")}
    peers_note = "; ".join(f"{name} lowest {100 * min(v):.0f}%" for name, v in peers.items() if v)
    out.append(
        [
            "Coexistence: lstm_c right after PyTorch and ONNX Runtime ran keeps at least 80% of its speed "
            "on a quiet process, on every coexistence shape",
            "—"
            if not shares
            else f"lowest {100 * min(shares):.0f}%"
            + (f" (each peer right after the other two: {peers_note})" if peers_note else ""),
            _verdict(None if not shares else min(shares) >= 0.8),
        ]
    )
    return out


def thread_scaling(rows: list[dict]) -> dict[int, dict[tuple[int, int], tuple[float, dict, dict]]]:
    """Training float32 in the grid: {threads: {(H, B): (speed-up over 1 thread, 1-thread row, row)}}."""
    grid = grid_sections(rows)
    one = grid.get(("training", "float32", 1), {})
    out: dict[int, dict[tuple[int, int], tuple[float, dict, dict]]] = {}
    for (k, dt, n), cells in grid.items():
        if (k, dt) != ("training", "float32") or n == 1:
            continue
        for hb, c in cells.items():
            single = one.get(hb, {}).get("lstm_c")
            if single and "lstm_c" in c:
                out.setdefault(n, {})[hb] = (single["median"] / c["lstm_c"]["median"], single, c["lstm_c"])
    return out


def coexistence(rows: list[dict], impl: str = "lstm_c") -> list[tuple[float, dict, dict]]:
    """(share of the quiet speed, quiet row, row right after the others) of `impl` per
    coexistence case where both ran."""
    out = []
    for impls in index([r for r in rows if r["group"] == "coexist"]).values():
        quiet, after = impls.get(impl), impls.get(impl + "_after_peers")
        if quiet and after:
            out.append((quiet["median"] / after["median"], quiet, after))
    return out


def after_pause(rows: list[dict]) -> list[tuple[dict, dict[str, tuple[dict, dict]]]]:
    """Per coexistence case, one of its rows and {impl: (quiet row, row of its first calls
    after a pause)} of each implementation for which both ran."""
    out = []
    for impls in index([r for r in rows if r["group"] == "coexist"]).values():
        pairs = {
            i: (impls[i], impls[i + "_after_pause"])
            for i in ("lstm_c", "torch", "onnxruntime")
            if i in impls and i + "_after_pause" in impls
        }
        if pairs:
            out.append((next(iter(pairs.values()))[0], pairs))
    return out


def coexistence_shares(rows: list[dict], impl: str) -> dict[str, float]:
    """{case name: share of the quiet speed} of `impl` in the coexistence cases."""
    return {q["case"]: s for s, q, _ in coexistence(rows, impl)}


# --------------------------------------------------------------------------- markdown


def grid_matrix(cells: dict[tuple[int, int], dict[str, dict]]) -> list[str]:
    """H × B: lstm_c's ratio to the best peer (which one in brackets)."""
    Hs = sorted({H for H, _ in cells})
    Bs = sorted({B for _, B in cells})
    body = []
    for H in Hs:
        line = [f"**H={H}**"]
        for B in Bs:
            peer, r = best_peer(cells.get((H, B), {}))
            line.append(
                "—" if r is None else (f"**{r:.2f}×**" if r < 1 else f"{r:.2f}×") + f" {INITIALS[peer]}"
            )
        body.append(line)
    return table(["lstm_c ÷ best peer"] + [f"B={B}" for B in Bs], body)


def grid_table(cells: dict[tuple[int, int], dict[str, dict]]) -> list[str]:
    present = [i for i in IMPLS if any(i in c for c in cells.values())]
    peers = [i for i in present if i in PEERS]
    peak_name = next(iter(next(iter(cells.values())).values()))["peak_name"]
    head = (
        ["H", "B", "T"]
        + [LABELS[i] for i in present]
        + [f"{SHORT.get(i, i)} GFLOP/s (% {peak_name} peak)" for i in present]
        + [f"× {SHORT[p]}" for p in peers]
    )
    body = []
    for (H, B), c in cells.items():
        any_row = next(iter(c.values()))
        ours = c.get("lstm_c")
        body.append(
            [str(H), str(B), str(any_row["T"]) + (" †" if busy(any_row) else "")]
            + [fmt_cell(c.get(i)) for i in present]
            + [fmt_rate(c.get(i)) for i in present]
            + [fmt_ratio(ratio(c.get(p), ours)) for p in peers]
        )
    return table(head, body)


def other_table(cases: list[dict[str, dict]]) -> list[str]:
    """The cases outside the grid: one row a case."""
    present = [i for i in IMPLS if any(i in c for c in cases)]
    peers = [i for i in present if i in PEERS or i == "lstm_c_forward_t1"]
    head = ["case", "dtype", "threads"] + [LABELS[i] for i in present] + ["lstm_c GFLOP/s (% peak)"]
    head += [f"× {SHORT[p]}" for p in peers]
    body = []
    for c in cases:
        r = next(iter(c.values()))
        ours = c.get("lstm_c")
        body.append(
            [
                f"{r['note'] or r['kind']}: {r['shape']}" + (" †" if busy(r) else ""),
                r["dtype"],
                str(r["threads"]),
            ]
            + [fmt_cell(c.get(i)) for i in present]
            + ["—" if r["kind"] == "step" else fmt_rate(ours)]
            + [fmt_ratio(ratio(c.get(p), ours)) for p in peers]
        )
    return table(head, body)


def markdown(rows: list[dict], machine: dict, png_name: str | None) -> str:
    passes = max((r.get("passes", 1) for r in rows), default=1)
    pause = machine.get("pause")
    lines = (
        ["# lstm_c benchmark results", ""]
        + machine_lines(machine)
        + [
            "",
            "Medians over all rounds; the implementations of a shape ran "
            + (f"interleaved in {passes} passes" if passes > 1 else "back to back")
            + " in the same run"
            + (f", with a {pause:g} s pause before each one's rounds" if pause else "")
            + ", each after a check that it computes the same outputs as the NumPy reference from the same weights. "
            "GFLOP/s count forward 8·T·B·H·(I+H) per layer and direction, training 3× that. "
            "`× peer` is the peer's median over lstm_c's: above 1× lstm_c is faster. "
            f"\\* marks a noisy measurement (interquartile range above {NOISY:.0%} of the median); "
            f"† marks a shape during which the machine was busy (the peak loop run just before it reached less "
            f"than {BUSY:.0%} of the peak). "
            "— means not run (not installed, not supported, or the NumPy reference over its time limit).",
            "",
        ]
    )
    goals = targets(rows)
    if goals:
        lines += [
            "## Targets",
            "",
            "Each target, the number that decides it, and whether it holds in this run.",
            "",
        ]
        lines += table(["target", "measured", "holds?"], goals) + [""]
    grid = grid_sections(rows)
    if grid:
        lines += [
            "## The grid: lstm_c against the best peer",
            "",
            "One layer, I = H, T = 50 (less for the largest H·B: about 5 GFLOP of work per call at most). "
            "Each cell is lstm_c's speed over the fastest peer's on that shape (PT PyTorch, ORT ONNX "
            "Runtime, ref the NumPy reference): above 1× lstm_c is faster; below 1× in bold.",
            "",
        ]
        if png_name:
            lines += [f"![lstm_c's speed over the best peer's]({png_name})", ""]
        for (kind, dtype, n), cells in grid.items():
            lines += [f"### {KIND_TITLES[kind]}, {dtype}, {_threads_label(n)}", ""]
            lines += grid_matrix(cells) + [""] + grid_table(cells) + [""]
    scaling = thread_scaling(rows)
    for n, speedups in scaling.items():
        lines += [f"## Thread scaling: training, float32, {_threads_label(n)} against 1", ""]
        lines += table(
            ["H", "B", "1 thread", _threads_label(n), "speed-up"],
            [
                [str(H), str(B), fmt_cell(one), fmt_cell(many), fmt_ratio(s)]
                for (H, B), (s, one, many) in speedups.items()
            ],
        ) + [""]
    coex = coexistence(rows)
    if coex:
        lines += [
            "## Coexistence: lstm_c right after PyTorch and ONNX Runtime",
            "",
            "Each round of the second column calls PyTorch and ONNX Runtime on the same shape (ONNX "
            "Runtime: its inference) and times lstm_c right after them, with no pause: their thread pools "
            "have just gone idle and may still spin. The first column is lstm_c on a quiet process (after "
            "a pause). The share is quiet time over the time after the peers. The last two columns are "
            "the same share for PyTorch (right after lstm_c and ONNX Runtime) and ONNX Runtime (right "
            "after lstm_c and PyTorch; inference only).",
            "",
        ]
        peer_shares = {p: coexistence_shares(rows, p) for p in ("torch", "onnxruntime")}
        lines += table(
            [
                "shape",
                "kind",
                "threads",
                "lstm_c, quiet",
                "lstm_c right after the peers",
                "share of quiet speed",
                "PyTorch's share",
                "ONNX Runtime's share",
            ],
            [
                [q["shape"], q["kind"], str(q["threads"]), fmt_cell(q), fmt_cell(a), f"{100 * s:.0f}%"]
                + [
                    f"{100 * peer_shares[p][q['case']]:.0f}%" if q["case"] in peer_shares[p] else "—"
                    for p in ("torch", "onnxruntime")
                ]
                for s, q, a in coex
            ],
        ) + [""]
    pauses = after_pause(rows)
    if pauses:
        lines += [
            "## A first call after a pause",
            "",
            f"Each round sleeps {f'{_PAUSE_BEFORE:g} s' if _PAUSE_BEFORE else 'a while'}, then times "
            "one call: by then the threads of every implementation have gone to sleep, and in a virtual "
            "machine their idle virtual CPUs may take milliseconds to come back. Back to back is the "
            "quiet time of the table above.",
            "",
        ]
        present = [i for i in ("lstm_c", "torch", "onnxruntime") if any(i in p for _, p in pauses)]
        lines += table(
            ["shape", "kind", "threads"]
            + [f"{LABELS[i]}: back to back / first call after a pause" for i in present],
            [
                [q["shape"], q["kind"], str(q["threads"])]
                + [f"{fmt_cell(p[i][0])} / {fmt_cell(p[i][1])}" if i in p else "—" for i in present]
                for q, p in pauses
            ],
        ) + [""]
    others = [c for c in index([r for r in rows if r["group"] not in ("grid", "coexist")]).values()]
    if others:
        lines += [
            "## Other cases",
            "",
            "DeepBench's training shapes at B = 32, a stacked bidirectional model (through `lstm_c.LSTM`) "
            "and the streaming step (`LSTM.step`, one time step per call with the state carried over; "
            "times per step). `lstm_forward T=1` is the step through the functional API.",
            "",
        ]
        lines += other_table(others) + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- chart


def chart(rows: list[dict], machine: dict, path: str) -> bool:
    """One heatmap per (kind, dtype, threads): lstm_c's ratio to the best peer. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.colors
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return False
    grid = grid_sections(rows)
    if not grid:
        return False
    kinds = list(dict.fromkeys((k, dt) for k, dt, _ in grid))
    threads = sorted({n for _, _, n in grid}, reverse=True)
    fig, axes = plt.subplots(
        len(kinds),
        len(threads),
        figsize=(5.2 * len(threads) + 1.2, 4.0 * len(kinds) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    norm = matplotlib.colors.TwoSlopeNorm(vmin=-2.0, vcenter=0.0, vmax=2.0)  # log2 of the ratio: 1/4× .. 4×
    cmap = plt.get_cmap("RdYlGn")
    image = None
    for i, (kind, dtype) in enumerate(kinds):
        for j, n in enumerate(threads):
            ax = axes[i, j]
            cells = grid.get((kind, dtype, n))
            if not cells:
                ax.axis("off")
                continue
            Hs = sorted({H for H, _ in cells})
            Bs = sorted({B for _, B in cells})
            values = np.full((len(Hs), len(Bs)), np.nan)
            for (H, B), c in cells.items():
                peer, r = best_peer(c)
                if r is None:
                    continue
                values[Hs.index(H), Bs.index(B)] = math.log2(r)
                ax.text(
                    Bs.index(B),
                    Hs.index(H),
                    f"{r:.2f}×\n{INITIALS[peer]}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(math.log2(r)) > 1.3 else "black",
                )
            image = ax.imshow(np.clip(values, -2.0, 2.0), cmap=cmap, norm=norm, origin="lower", aspect="auto")
            ax.set_xticks(range(len(Bs)), [str(B) for B in Bs])
            ax.set_yticks(range(len(Hs)), [str(H) for H in Hs])
            ax.set_xlabel("batch B")
            ax.set_ylabel("hidden size H (= I)")
            ax.set_title(f"{kind}, {dtype}, {_threads_label(n)}", fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.6, ticks=[-2, -1, 0, 1, 2])
        bar.ax.set_yticklabels(["¼×", "½×", "1×", "2×", "4×"])
        bar.set_label("lstm_c's speed over the best peer's (above 1×: lstm_c faster)")
    m = machine
    fig.suptitle(
        f"lstm_c ÷ fastest of PyTorch, ONNX Runtime, NumPy reference — {m.get('cpu_model', '')}, "
        f"{m.get('cores')} cores, {(m.get('date') or '')[:10]}"
        + (" (quick subset)" if m.get("quick") else ""),
        fontsize=11,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- CLI


def write_report(json_path: str, md_path: str, png_path: str | None) -> list[str]:
    """Write the Markdown (and the chart when matplotlib is there); return the paths written."""
    rows, machine = load(json_path)
    if not rows:
        raise SystemExit(f"{json_path}: no lstm_c benchmark results in it")
    written = []
    png_ok = bool(png_path) and chart(rows, machine, png_path)
    if png_ok:
        written.append(png_path)
    png_rel = os.path.relpath(png_path, os.path.dirname(os.path.abspath(md_path))) if png_ok else None
    with open(md_path, "w") as f:
        f.write(markdown(rows, machine, png_rel))
    written.insert(0, md_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "json",
        nargs="?",
        default=os.path.join(HERE, "results.json"),
        help="pytest-benchmark JSON from the suite (default bench/results.json)",
    )
    parser.add_argument("--md", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--png", default=os.path.join(HERE, "results.png"), help="chart path; empty to skip")
    args = parser.parse_args(argv)
    written = write_report(args.json, args.md, args.png or None)
    if args.png and args.png not in written:
        print("matplotlib is not installed: no chart written", file=sys.stderr)
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
