"""Command line: ``python -m lstm_c {info,demo,bench}``.

Exit codes, for scripts:
  0    the command succeeded
  1    the command failed (the error is printed on stderr)
  2    usage error: unknown command or option, a bad value, or a missing command
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # what argparse exits with on a usage error
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

PROG = "python -m lstm_c"

_EXIT_CODES = """\
exit codes:
  0    success
  1    the command failed (the error is printed on stderr)
  2    usage error (unknown command or option, bad value, missing command)
  130  interrupted (Ctrl-C)"""


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages in the user's words."""

    def error(self, message: str) -> NoReturn:
        # "argument --threads: ..." -> "--threads: ..."
        super().error(message.removeprefix("argument "))


class _CommandParser(_Parser):
    """A command's parser: it reports what it does not recognise itself, with its own usage.

    (argparse would hand the leftovers back to the top-level parser, whose usage
    does not show the command's options.)
    """

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _cmd_info(args: argparse.Namespace) -> int:
    from lstm_c._cli import info

    gathered = info.gather()
    print(json.dumps(gathered, indent=2) if args.json else info.format_text(gathered))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from lstm_c._cli import demo

    demo.run(sys.stdout)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import lstm_c
    from lstm_c._cli import quickbench

    threads = args.threads if args.threads is not None else lstm_c.get_num_threads()
    quickbench.run(sys.stdout, sys.stderr, threads=threads, dtype=args.dtype, budget=args.budget)
    return EXIT_OK


def _thread_count(text: str) -> int:
    from lstm_c._validation import MAX_THREADS

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of threads from 1 to {MAX_THREADS}, got {text!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser for ``python -m lstm_c``, one subparser per command."""
    from lstm_c import __version__

    parser = _Parser(
        prog=PROG,
        description="lstm_c: batched LSTM forward and backward passes on the CPU.",
        epilog=_EXIT_CODES + "\n\nRun 'python -m lstm_c COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lstm_c {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser
    )

    def add(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, description: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    info = add(
        "info",
        _cmd_info,
        "show this build: version, OpenMP threads, BLAS, CPU, dtypes",
        "Show the lstm_c version and where it is installed; whether it was built with\n"
        "OpenMP and how many threads OpenMP will use (OMP_NUM_THREADS); the BLAS that\n"
        "SciPy provides and its threads (via threadpoolctl); the CPU; and the dtypes\n"
        "the kernels compute in (checked by running a tiny forward pass in each).",
    )
    info.add_argument("--json", action="store_true", help="print the same information as one JSON object")
    add(
        "demo",
        _cmd_demo,
        "run the stock-price example: a one-unit LSTM that remembers day 1",
        "The stock-price example of StatQuest's video \"Long Short-Term Memory (LSTM),\n"
        "Clearly Explained\" (Josh Starmer): two companies' prices differ only on day 1,\n"
        "and day 5 repeats it. First trains a one-unit LSTM from random weights with\n"
        "lstm_c's backward pass and Adam and shows its day-5 predictions; then runs the\n"
        "video's hand-set weights and prints both memories day by day.",
    )
    bench = add(
        "bench",
        _cmd_bench,
        "time lstm_c against the NumPy reference (and PyTorch, ONNX Runtime if installed)",
        "A quick benchmark on this machine: training and inference shapes timed for\n"
        "lstm_c, its NumPy reference and, when installed, PyTorch's nn.LSTM and ONNX\n"
        "Runtime's LSTM, with the same weights and threads, after checking that each\n"
        "computes the reference's outputs. Prints a row per shape as soon as it is done:\n"
        "median times, lstm_c's GFLOP/s and the speed ratios. A progress bar shows on a\n"
        "terminal. The full suite is bench/ in the source tree.",
    )
    bench.add_argument(
        "--threads",
        type=_thread_count,
        default=None,
        metavar="N",
        help="threads for every implementation (default: lstm_c.get_num_threads(), "
        "the CPUs this process may use)",
    )
    bench.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="the dtype to time (default float32)",
    )
    bench.add_argument(
        "--budget",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds per shape and implementation: a warm-up call, then timed "
        "calls until this much time has passed, at least one (default 1)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits 2 itself on usage errors)."""
    try:
        args = build_parser().parse_args(argv)
        try:
            return int(args.run(args))
        except BrokenPipeError:
            # The reader went away (`... | head`): not an error of ours. Point stdout at
            # devnull so the interpreter's final flush does not complain either.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except Exception as exc:  # a failed command is reported, not a traceback
            print(f"{PROG} {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
