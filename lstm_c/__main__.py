"""Command line: ``python -m lstm_c {info,demo,bench}``.

Exit codes, for scripts:
  0  the command succeeded
  1  the command failed (the error is printed on stderr)
  2  usage error: unknown command or option, or a missing command
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # what argparse exits with on a usage error

_EPILOG = """\
exit codes:
  0  success
  1  the command failed (the error is printed on stderr)
  2  usage error (unknown command or option, missing command)

Run 'python -m lstm_c COMMAND --help' for a command's options."""


def _cmd_info(args: argparse.Namespace) -> int:
    from lstm_c import _info

    info = _info.gather()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_info.format_text(info))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from lstm_c import _demo

    _demo.run(sys.stdout)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from lstm_c import _quickbench

    _quickbench.run(sys.stdout, sys.stderr, threads=args.threads, dtype=args.dtype,
                    budget=args.budget)
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser for ``python -m lstm_c``, one subparser per command."""
    from lstm_c import __version__

    parser = argparse.ArgumentParser(
        prog="python -m lstm_c",
        description="lstm_c: batched LSTM forward and backward passes on the CPU.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lstm_c {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, run: Callable[[argparse.Namespace], int], summary: str,
            description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=description, epilog=_EPILOG.split("\n\n")[0],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    info = add(
        "info", _cmd_info,
        "show this build: version, OpenMP threads, BLAS, CPU, dtypes",
        "Show the lstm_c version and where it is installed; whether it was built with\n"
        "OpenMP and how many threads OpenMP will use (OMP_NUM_THREADS); the BLAS that\n"
        "SciPy provides and its threads (via threadpoolctl); the CPU; and the dtypes\n"
        "the kernels compute in (checked by running a tiny forward pass in each).",
    )
    info.add_argument("--json", action="store_true",
                      help="print the same information as one JSON object")
    add(
        "demo", _cmd_demo,
        "run the stock-price example: a one-unit LSTM that remembers day 1",
        "Two companies' prices differ only on day 1, and day 5 repeats it. First trains\n"
        "a one-unit LSTM from random weights with lstm_c's backward pass and Adam and\n"
        "shows its day-5 predictions; then runs the seed's hand-set weights and prints\n"
        "both memories day by day.",
    )
    bench = add(
        "bench", _cmd_bench,
        "time lstm_c against the NumPy reference (and PyTorch, ONNX Runtime if installed)",
        "A quick benchmark on this machine: training and inference shapes timed for\n"
        "lstm_c, its NumPy reference and, when installed, PyTorch's nn.LSTM and ONNX\n"
        "Runtime's LSTM, with the same weights and threads; prints a table of medians,\n"
        "lstm_c's GFLOP/s and the speed ratios. A progress bar shows on a terminal.\n"
        "The full suite is bench/ in the source tree.",
    )
    bench.add_argument("--threads", type=_positive_int, default=2,
                       help="threads for every implementation (default 2)")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="the dtype to time (default float32)")
    bench.add_argument("--budget", type=_positive_float, default=1.0,
                       help="seconds of timed calls per shape and implementation (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits 2 itself on usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not complain either.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a failed command is reported, not a traceback
        print(f"python -m lstm_c {args.command}: error: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
