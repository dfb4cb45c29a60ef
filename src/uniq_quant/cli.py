"""The ``uniq-quant`` command line: argparse subcommands over the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from uniq_quant import __version__

# Each entry is a module of uniq_quant.commands with a ``register(subparsers)`` function.
COMMANDS: tuple[str, ...] = ("train", "plan", "demo", "bops", "export", "eval", "plot")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="uniq-quant",
        description="UNIQ: train, measure and export 1-8 bit non-uniformly quantized networks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"uniq_quant.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_rank = os.environ.get("RANK", "0") != "0"  # under torchrun, rank 0 alone reports
    logging.basicConfig(
        level=logging.WARNING if quiet_rank else logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)
