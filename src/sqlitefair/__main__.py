"""``python -m sqlitefair`` / ``sqlitefair``: command-line tools.

Subcommands register themselves on the parser; this dispatcher stays small.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

__all__ = ("main",)


def build_parser() -> argparse.ArgumentParser:
    from ._bench import cli as bench_cli
    from .integrations import litestream

    parser = argparse.ArgumentParser(prog="sqlitefair", description="Tools for sqlitefair, a fair SQLite connection pool.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench_cli.add_subparser(subparsers)
    litestream.add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the chosen subcommand; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from
        # complaining again while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
