"""Turn a pytest-benchmark JSON from the suite into bench/RESULTS.md and bench/results.png.

    python bench/report.py bench/results.json [--md bench/RESULTS.md] [--png bench/results.png]

The Markdown has one table per (kind, dtype) with medians, lstm_c's GFLOP/s
and fraction of the GEMM peak measured in the same run, and the speed ratio
to each peer. The chart shows GFLOP/s by shape, one bar per implementation (matplotlib, optional:
without it only the Markdown is written).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

# What each implementation is called: the package's labels (the suite's and `python -m lstm_c
# bench`'s); where lstm_c is not importable, `load` takes them from the JSON (impl_label).
try:
    from lstm_c._cli.peers import LABELS as _PACKAGE_LABELS
except ImportError:
    _PACKAGE_LABELS = {}
LABELS: dict[str, str] = dict(_PACKAGE_LABELS)

# Column order.
IMPLS = ("lstm_c", "lstm_c_forward_t1", "reference", "torch", "onnxruntime", "lstm_c_1thread")
SHORT = {"reference": "reference", "torch": "PyTorch", "onnxruntime": "ORT",
         "lstm_c_forward_t1": "lstm_forward T=1"}
COLORS = {"lstm_c": "#d62728", "lstm_c_1thread": "#ff9896", "lstm_c_forward_t1": "#9467bd",
          "reference": "#7f7f7f", "torch": "#1f77b4", "onnxruntime": "#2ca02c"}
PEERS = ("lstm_c_forward_t1", "reference", "torch", "onnxruntime")
SECTIONS = [("training", "float32"), ("training", "float64"),
            ("inference", "float32"), ("inference", "float64"),
            ("step", "float32"), ("step", "float64")]
KIND_TITLES = {"training": "Training (forward + backward with input and weight gradients)",
               "inference": "Inference (forward only)", "step": "Streaming step (B = 1, one time step per call)"}
NOISY = 0.10  # IQR / median above this gets a mark
BUSY = 0.75  # a case whose preceding GEMM ran below this fraction of the peak gets a mark


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
    pooled: dict[tuple[str, str, str], dict[str, Any]] = {}
    for bench in doc.get("benchmarks", []):
        info = dict(bench.get("extra_info") or {})
        if "impl" not in info:
            continue
        stats = bench["stats"]
        LABELS.setdefault(info["impl"], info.get("impl_label") or info["impl"])
        row = pooled.setdefault((info["case"], info["dtype"], info["impl"]), {**info, "data": [], "medians": []})
        row["data"] += stats.get("data") or []
        row["medians"].append(stats["median"])
        row["iterations"] = stats.get("iterations", 1)
    rows = []
    for row in pooled.values():
        data = row.pop("data") or row["medians"]  # without raw data: the passes' medians
        q1, median, q3 = _quartiles(sorted(data))
        row.update(median=median, iqr=q3 - q1, rounds=len(data), gflops=row["flops"] / median / 1e9)
        rows.append(row)
    machine = dict(doc.get("machine_info", {}).get("lstm_c_bench") or {})
    machine.setdefault("date", doc.get("datetime"))
    commit = doc.get("commit_info") or {}
    if all(c in "0123456789abcdef" for c in str(commit.get("id") or "x")):
        machine["commit"] = commit["id"][:10] + (" + uncommitted changes" if commit.get("dirty") else "")
    return rows, machine


def index(rows):
    """{(case, dtype): {impl: row}} in first-seen (suite) order."""
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        out.setdefault((r["case"], r["dtype"]), {})[r["impl"]] = r
    return out


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


def ratio(peer: dict | None, ours: dict | None) -> float | None:
    if peer is None or ours is None:
        return None
    return peer["median"] / ours["median"]


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def machine_lines(m: dict, rows: list[dict]) -> list[str]:
    cores = m.get("cores")
    cpus = m.get("cpus")
    cpu = f"**{m.get('cpu_model', 'unknown CPU')}**"
    if cores or cpus:
        cpu += f", {cores} cores / {cpus} hardware threads"
    if m.get("hypervisor"):
        cpu += f" ({m['hypervisor']} guest)"
    caches = ", ".join(f"{k.upper()} {m[k]}" for k in ("l2", "l3") if m.get(k))
    lines = [f"- Machine: {cpu}" + (f"; {caches}" if caches else "")]
    date = (m.get("date") or "")[:16].replace("T", " ")
    threads = m.get("bench_threads")
    lines.append(f"- Date: {date}; **{threads} threads** for every implementation"
                 + ("; **quick subset**" if m.get("quick") else "; full suite")
                 + (f"; commit {m['commit']}" if m.get("commit") else ""))
    peaks = m.get("gemm_peak_gflops") or {}
    if peaks:
        lines.append(f"- GEMM peak measured in the same run (SciPy BLAS, 2048×2048, {threads} threads; the best of "
                     "5 calls at the start, one before each case and 5 at the end): "
                     f"SGEMM {peaks.get('float32', 0):.0f} GFLOP/s, DGEMM {peaks.get('float64', 0):.0f} GFLOP/s")
    if m.get("blas"):
        lines.append("- BLAS: " + "; ".join(m["blas"]))
    versions = m.get("versions") or {}
    if versions:
        lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
                     + (f", Python {m['python']}" if m.get("python") else ""))
    env = m.get("thread_env") or {}
    lines.append("- Thread environment: " + (", ".join(f"`{k}={v}`" for k, v in env.items()) or
                                             "none set (OMP_WAIT_POLICY etc. at their defaults)"))
    loads = [m.get("load_average_start"), m.get("load_average")]
    if any(loads):
        shown = " → ".join(f"{la[0]:.1f}" for la in loads if la)
        lines.append(f"- Load average (1 min) at start → end: {shown}"
                     + (" — **the machine was busy: treat these numbers as noisy**"
                        if max(la[0] for la in loads if la) > 0.5 * (cpus or 1) + 0.5 else ""))
    return lines


# --------------------------------------------------------------------------- markdown


def section_table(cases: list[tuple[tuple[str, str], dict[str, dict]]], kind: str, dtype: str,
                  peaks: dict) -> list[str]:
    present = [i for i in IMPLS if i != "lstm_c_1thread" and any(i in impls for _, impls in cases)]
    peers = [i for i in present if i in PEERS]
    peak_name = "SGEMM" if dtype == "float32" else "DGEMM"
    head = ["shape", "note"] + [LABELS[i] for i in present]
    if kind != "step":
        head += ["lstm_c GFLOP/s", f"% {peak_name} peak"]
    head += [f"× {SHORT[p]}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    peak = peaks.get(dtype)
    for (case, _), impls in cases:
        any_row = next(iter(impls.values()))
        ours = impls.get("lstm_c")
        shape = any_row["shape"]
        rate = any_row.get("gemm_gflops_before_case")
        if rate and peak and rate < BUSY * peak:
            shape += " †"
        cells = [shape, any_row.get("note", "")] + [fmt_cell(impls.get(i)) for i in present]
        if kind != "step":
            cells.append("—" if ours is None else f"{ours['gflops']:.3g}")
            cells.append("—" if ours is None or not peak else f"{100 * ours['gflops'] / peak:.0f}%")
        cells += [fmt_ratio(ratio(impls.get(p), ours)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict], machine: dict, png_name: str | None) -> str:
    idx = index(rows)
    peaks = machine.get("gemm_peak_gflops") or {}
    passes = max((r.get("passes", 1) for r in rows), default=1)
    lines = ["# lstm_c benchmark results", ""]
    lines += machine_lines(machine, rows)
    lines += [
        "",
        "Medians over all rounds; the implementations of a shape ran "
        + (f"interleaved in {passes} passes" if passes > 1 else "back to back")
        + " in the same run, each after a check that it computes the same outputs as the NumPy reference "
        "from the same weights. "
        "GFLOP/s count forward 8·T·B·H·(I+H) per layer and direction, training 3× that. "
        "`× peer` is the peer's median over lstm_c's: above 1× lstm_c is faster. "
        f"\\* marks a noisy measurement (interquartile range above {NOISY:.0%} of the median); "
        f"† marks a shape during which the machine was busy (the GEMM timed just before it ran below "
        f"{BUSY:.0%} of the peak). "
        "— means not run (not installed, or not supported).",
        "",
    ]
    if png_name:
        lines += [f"![GFLOP/s by shape]({png_name})", ""]
    for kind, dtype in SECTIONS:
        cases = [(k, v) for k, v in idx.items()
                 if k[1] == dtype and next(iter(v.values()))["kind"] == kind]
        if not cases:
            continue
        unit = " (time per step)" if kind == "step" else ""
        lines += [f"## {KIND_TITLES[kind]}, {dtype}{unit}", ""]
        lines += section_table(cases, kind, dtype, peaks)
        lines.append("")
    scaling = [(k, v) for k, v in idx.items() if "lstm_c_1thread" in v and "lstm_c" in v]
    if scaling:
        lines += ["## Thread scaling", "", f"| shape | dtype | {LABELS['lstm_c_1thread']} | lstm_c, "
                  f"{machine.get('bench_threads')} threads | speed-up |", "|---|---|---|---|---|"]
        for (case, dtype), v in scaling:
            lines.append(f"| {v['lstm_c']['shape']} ({v['lstm_c']['kind']}) | {dtype} | "
                         f"{fmt_cell(v['lstm_c_1thread'])} | {fmt_cell(v['lstm_c'])} | "
                         f"{fmt_ratio(ratio(v['lstm_c_1thread'], v['lstm_c']))} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- chart


def chart(rows: list[dict], machine: dict, path: str) -> bool:
    """GFLOP/s by shape, one bar per implementation; step cases in µs per step. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    idx = index(rows)
    peaks = machine.get("gemm_peak_gflops") or {}
    panels = []
    for kind, dtype in SECTIONS:
        cases = [(k, v) for k, v in idx.items() if k[1] == dtype and next(iter(v.values()))["kind"] == kind]
        if cases:
            panels.append((kind, dtype, cases))
    if not panels:
        return False
    seq = [p for p in panels if p[0] != "step"]
    steps = [p for p in panels if p[0] == "step"]
    n_rows = len(seq) + (1 if steps else 0)
    widths = [max(4, len(p[2])) for p in seq]
    fig_w = max(9.0, min(18.0, 1.1 * max(widths + [4]) + 2))
    fig, axes = plt.subplots(n_rows, 1, figsize=(fig_w, 3.6 * n_rows), squeeze=False)
    used = set()

    def bars(ax, groups, value, fmt):
        """Grouped bars: one slot per implementation seen in the panel, a group per shape."""
        in_panel = [i for i in IMPLS if any(i in impls for _, impls in groups)]
        w = 0.84 / max(1, len(in_panel))
        n_bars = sum(len(impls) for _, impls in groups)
        for gi, (_, impls) in enumerate(groups):
            present = [i for i in in_panel if i in impls]
            for j, impl in enumerate(present):
                x = gi + (j - (len(present) - 1) / 2) * w
                v = value(impls[impl])
                ax.bar(x, v, w * 0.92, color=COLORS[impl],
                       label=LABELS[impl] if impl not in used else None)
                if n_bars <= 48:
                    ax.annotate(fmt(v), (x, v), xytext=(0, 1.5), textcoords="offset points",
                                ha="center", va="bottom", fontsize=6.5)
                used.add(impl)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([label for label, _ in groups], fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)

    for ax, (kind, dtype, cases) in zip(axes[:, 0], seq):
        groups = []
        for (case, _), impls in cases:
            r = next(iter(impls.values()))
            label = f"H{r['H']} B{r['B']} T{r['T']}"
            if r.get("layers", 1) > 1 or r.get("bidirectional"):
                label += f"\n{r['layers']}L" + (" bidir" if r.get("bidirectional") else "")
            groups.append((label, impls))
        bars(ax, groups, lambda r: r["gflops"], lambda v: f"{v:.3g}")
        peak = peaks.get(dtype)
        top = max(r["gflops"] for _, impls in cases for r in impls.values())
        if peak:
            ax.axhline(peak, color="k", ls="--", lw=1)
            ax.text(-0.55, peak, f"{'S' if dtype == 'float32' else 'D'}GEMM peak {peak:.0f} GFLOP/s",
                    va="bottom", ha="left", fontsize=8)
            top = max(top, peak)
        ax.set_ylim(0, top * 1.15)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{kind}, {dtype}", fontsize=10, loc="left")
    if steps:
        ax = axes[-1, 0]
        groups = []
        for _, dtype, cases in steps:
            for (case, _), impls in cases:
                r = next(iter(impls.values()))
                groups.append((f"step H{r['H']} B{r['B']}\n{dtype}", impls))
        bars(ax, groups, lambda r: r["median"] * 1e6, lambda v: f"{v:.3g}")
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        lo = min(r["median"] for _, impls in groups for r in impls.values()) * 1e6
        hi = max(r["median"] for _, impls in groups for r in impls.values()) * 1e6
        ax.set_ylim(lo / 1.5, hi * 1.6)
        ax.set_ylabel("µs per step (lower is better)")
        ax.set_title("streaming step", fontsize=10, loc="left")
    m = machine
    title = (f"lstm_c vs peers — {m.get('cpu_model', '')}, {m.get('cores')} cores, "
             f"{m.get('bench_threads')} threads, {(m.get('date') or '')[:10]}"
             + (" (quick subset)" if m.get("quick") else ""))
    fig.suptitle(title, fontsize=11, y=0.995)
    found = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            found.setdefault(lab, h)
    labels = [LABELS[i] for i in IMPLS if LABELS[i] in found]
    handles = [found[lab] for lab in labels]
    top = 1 - 0.75 / fig.get_figheight()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, top + 0.3 / fig.get_figheight()))
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=110)
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
    parser.add_argument("json", nargs="?", default=os.path.join(HERE, "results.json"),
                        help="pytest-benchmark JSON from the suite (default bench/results.json)")
    parser.add_argument("--md", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--png", default=os.path.join(HERE, "results.png"),
                        help="chart path; empty to skip")
    args = parser.parse_args(argv)
    written = write_report(args.json, args.md, args.png or None)
    if args.png and args.png not in written:
        print("matplotlib is not installed: no chart written", file=sys.stderr)
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
