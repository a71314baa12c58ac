"""The ``driftax`` command: one module per subcommand (demo, sample, ot, bench, one per engine).

Every module of this package that defines ``add_parser(subparsers)`` is a subcommand: it
registers itself with ``set_defaults(func=run)``, and ``run(args) -> int`` is the exit status.
A module that also defines ``demo(out: Path) -> str`` contributes a section to ``driftax demo``.
An engine adds its command by adding its module here; nothing else needs to change.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from driftax import __version__

_FIRST = ("demo", "sample")  # listed first in --help; the engines follow in alphabetical order


def commands() -> list:
    """The subcommand modules, ``demo`` and ``sample`` first."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names = [n for n in _FIRST if n in names] + sorted(n for n in names if n not in _FIRST)
    mods = [importlib.import_module(f"{__name__}.{n}") for n in names]
    return [m for m in mods if hasattr(m, "add_parser")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftax", description="driftax: probabilistic inference and sampling on JAX.")
    parser.add_argument("--version", action="version", version=f"driftax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands():
        module.add_parser(sub)
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
