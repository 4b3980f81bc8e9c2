"""Command line: ``python -m lstm_c demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstm_c", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo", help="run the seed's stock example (a one-unit LSTM that remembers day 1)"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lstm_c import _demo

        _demo.run(sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
