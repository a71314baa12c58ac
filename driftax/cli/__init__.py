"""The ``driftax`` command: one module per subcommand (demo, sample, ot, bench).

Each module exposes ``add_parser(subparsers)``, which registers its subcommand with
``set_defaults(func=run)``; ``run(args) -> int`` is the exit status.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from driftax import __version__

_COMMANDS = ("demo", "sample", "ot", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftax", description="driftax: probabilistic inference and sampling on JAX.")
    parser.add_argument("--version", action="version", version=f"driftax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"driftax.cli.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:  # input errors: one line, no traceback
        print(f"driftax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
