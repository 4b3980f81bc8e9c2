"""One end-to-end training step of a small language model, torch.nn.LSTM against lstm_c.torch.LSTM.

    python bench/torch_e2e.py [--quick] [--T 100] [--B 32] [--H 256] [--rounds 15] [--threads N]

The model: an embedding (vocabulary 256, 64 features), a two-layer LSTM (H=256), a
linear head and cross-entropy, with Adam; one step is zero_grad, forward, loss,
backward and the optimizer's update. The same model runs with ``torch.nn.LSTM`` and
with ``lstm_c.torch.LSTM`` (the one line that differs), from the same weights and
batches, on these cases:

- variable length, float32: a PackedSequence of lengths uniform in [T/4, T]
- equal length, float32: a (T, B) batch as a plain Tensor
- projection, float32: equal length, proj_size = H/2
- variable length, float64, and equal length, float64

Both run with the same thread count (torch.set_num_threads and lstm_c's). Rounds
alternate between the two with a short pause between them, so that load from
elsewhere falls on both; the script prints the medians and the ratio (torch's time
over lstm_c's: above 1, lstm_c is faster), with the machine, the versions and the
load average. It prints, never asserts: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_c
import lstm_c.torch
from lstm_c._cli.info import cpu_model

VOCAB, EMBED = 256, 64


@dataclass(frozen=True)
class Case:
    name: str
    dtype: torch.dtype
    packed: bool
    proj: bool = False


CASES = [
    Case("variable length, float32", torch.float32, packed=True),
    Case("equal length, float32", torch.float32, packed=False),
    Case("projection P=H/2, float32", torch.float32, packed=False, proj=True),
    Case("variable length, float64", torch.float64, packed=True),
    Case("equal length, float64", torch.float64, packed=False),
]


class LanguageModel(torch.nn.Module):
    def __init__(self, lstm_class: type, hidden: int, proj_size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, EMBED, dtype=dtype)
        self.lstm = lstm_class(EMBED, hidden, num_layers=2, proj_size=proj_size, dtype=dtype)
        self.head = torch.nn.Linear(proj_size or hidden, VOCAB, dtype=dtype)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(tokens)  # (T, B, E)
        if lengths is None:
            y, _ = self.lstm(x)
            return self.head(y).flatten(0, 1)
        out, _ = self.lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return self.head(out.data)


def make_step(
    model: LanguageModel, tokens: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor | None
):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if lengths is not None:
        targets = pack_padded_sequence(targets, lengths, enforce_sorted=False).data
    else:
        targets = targets.flatten()

    def step() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens, lengths), targets)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def run_case(case: Case, T: int, B: int, H: int, rounds: int, pause: float) -> tuple[float, float, float]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (T + 1, B), generator=g)
    inputs, targets = tokens[:-1], tokens[1:]
    lengths = torch.randint(T // 4, T + 1, (B,), generator=g) if case.packed else None
    proj = H // 2 if case.proj else 0
    torch.manual_seed(0)
    theirs = LanguageModel(torch.nn.LSTM, H, proj, case.dtype)
    ours = LanguageModel(lstm_c.torch.LSTM, H, proj, case.dtype)
    ours.load_state_dict(theirs.state_dict())
    steps = {
        "torch": make_step(theirs, inputs, targets, lengths),
        "lstm_c": make_step(ours, inputs, targets, lengths),
    }
    first = {name: step() for name, step in steps.items()}  # also a warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            time.sleep(pause)
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    assert abs(first["torch"] - first["lstm_c"]) < 1e-3 * abs(first["torch"]), first
    t_torch, t_ours = statistics.median(times["torch"]), statistics.median(times["lstm_c"])
    return t_torch, t_ours, t_torch / t_ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, default=100, help="longest sequence (default 100)")
    parser.add_argument("--B", type=int, default=32, help="batch (default 32)")
    parser.add_argument("--H", type=int, default=256, help="hidden size (default 256)")
    parser.add_argument("--rounds", type=int, default=15, help="timed steps per implementation (default 15)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between two steps (default 0.05)")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for both (default: lstm_c's default)"
    )
    parser.add_argument("--quick", action="store_true", help="T=50, B=16, 7 rounds")
    args = parser.parse_args()
    if args.quick:
        args.T, args.B, args.rounds = 50, 16, 7
    threads = args.threads or lstm_c.get_num_threads()
    torch.set_num_threads(threads)
    lstm_c.set_num_threads(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"{cpu_model()}, {cores} usable CPUs, {threads} threads for each; {platform.system()} {platform.release()}"
    )
    print(
        f"{datetime.date.today()}, lstm_c {lstm_c.__version__}, torch {torch.__version__}, "
        f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"language model: embedding {VOCAB}x{EMBED}, 2-layer LSTM H={args.H}, linear head, cross-entropy, "
        f"Adam; T={args.T}, B={args.B}; median of {args.rounds} interleaved steps"
    )
    print(f"{'case':30} {'torch.nn.LSTM':>14} {'lstm_c.torch':>14} {'ratio':>8}")
    for case in CASES:
        t_torch, t_ours, ratio = run_case(case, args.T, args.B, args.H, args.rounds, args.pause)
        print(f"{case.name:30} {t_torch * 1e3:11.1f} ms {t_ours * 1e3:11.1f} ms {ratio:7.2f}x", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
